"""Ratings both ways and the decaying Beta reputation."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marketplace import HOUR, T0, past_award
from sqlalchemy import func, select

from broker.errors import InvalidInput, NotFound, NotYours
from broker.models import Award, Provider, Rating
from broker.reputation import (
    Reputation,
    ReputationPolicy,
    beta_reputation,
    beta_reputations,
    provider_reputations,
    rate,
    reputation_table,
    user_reputations,
)
from broker.requests import submit_request
from broker.views import provider_view, user_view

DAY = timedelta(days=1)


def test_a_newcomer_stands_at_one_half():
    assert beta_reputation([], T0).ppm == 500_000


def test_good_and_bad_ratings_pull_the_reputation():
    assert beta_reputation([(100, T0)] * 3, T0).ppm == 800_000  # 4 / 5
    assert beta_reputation([(0, T0)] * 3, T0).ppm == 200_000
    assert beta_reputation([(50, T0)] * 10, T0).ppm == 500_000
    assert beta_reputation([(100, T0), (0, T0)], T0).count == 2


def test_a_rating_weighs_half_as_much_after_each_half_life():
    policy = ReputationPolicy(half_life=30 * DAY)
    fresh = beta_reputation([(100, T0)], T0, policy)
    aged = beta_reputation([(100, T0)], T0 + 30 * DAY, policy)
    older = beta_reputation([(100, T0)], T0 + 60 * DAY, policy)
    assert (fresh.ppm, aged.ppm, older.ppm) == (666_667, 600_000, 555_556)  # 2/3, 1.5/2.5, ...
    assert older.count == 1
    # Recent bad news outweighs old good news.
    mixed = beta_reputation([(100, T0), (100, T0), (0, T0 + 90 * DAY)], T0 + 90 * DAY, policy)
    assert mixed.ppm < 500_000
    with pytest.raises(InvalidInput):
        ReputationPolicy(half_life=timedelta(0))


@pytest.fixture
def awarded(world):
    """Home served alice's request with bob as a co-payer-less member."""
    alice = world.m.actor("device", world.alice_phone)
    with world.m.store.write() as s:
        r = submit_request(s, alice, services="identity", volume_bytes=10**9, now=T0)
        world.award = s.scalar(select(Award.id).where(Award.request_id == r.id))
    return world


def rate_as(w, actor, score, **kw):
    with w.m.store.write() as s:
        return rate(s, actor, w.award, score, now=kw.pop("now", T0 + HOUR), **kw).id


def test_ratings_go_both_ways_and_a_second_replaces_the_first(awarded):
    w = awarded
    device, home = w.m.actor("device", w.alice_phone), w.m.actor("provider", w.home)
    first = rate_as(w, device, 20)
    assert rate_as(w, w.m.actor("user", w.alice), 90, comment="fine after all") == first
    rate_as(w, home, 100)
    with w.m.store.read() as s:
        rows = s.execute(
            select(Rating.direction, Rating.user_id, Rating.provider_id, Rating.score).order_by(
                Rating.direction
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            ("payment", w.alice, w.home, 100),
            ("service", w.alice, w.home, 90),
        ]
        assert provider_reputations(s, [w.home], now=T0 + HOUR)[w.home].count == 1
        assert provider_reputations(s, [w.home], now=T0 + HOUR)[w.home].ppm == 633_333
        assert user_reputations(s, [w.alice], now=T0 + HOUR)[w.alice].ppm == 666_667
        shown = provider_view(s, w.home, now=T0 + HOUR)
        assert shown["reputation"] == {"score": 0.633333, "count": 1}
        assert user_view(s, home, w.alice, now=T0 + HOUR)["reputation"]["count"] == 1


def test_only_the_parties_rate(awarded):
    w = awarded
    with pytest.raises(NotYours, match="not a party of award"):
        rate_as(w, w.m.actor("user", w.bob), 0)
    with pytest.raises(NotYours):
        rate_as(w, w.m.actor("provider", w.north), 0)
    with pytest.raises(NotYours):
        rate_as(w, w.m.actor("provider", w.home), 0, user_id=w.bob)
    with pytest.raises(NotFound), w.m.store.write() as s:
        rate(s, w.m.actor("user", w.alice), 999, 50)
    with w.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Rating)) == 0


@pytest.mark.parametrize("score", [-1, 101, 50.5, True, "good"])
def test_a_score_is_a_whole_number_from_0_to_100(awarded, score):
    with pytest.raises(InvalidInput) as err:
        rate_as(awarded, awarded.m.actor("user", awarded.alice), score)
    assert err.value.field == "score"


def test_users_see_only_their_own_card(awarded):
    w = awarded
    with w.m.store.read() as s, pytest.raises(NotYours):
        user_view(s, w.m.actor("user", w.bob), w.alice)


@settings(max_examples=200, deadline=None)
@given(
    ratings=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 100), st.integers(-(10**12), 10**15)),
        max_size=40,
    ),
    half_life_s=st.integers(1, 10**9),
)
def test_the_bulk_arithmetic_equals_the_rule_one_owner_at_a_time(ratings, half_life_s):
    policy = ReputationPolicy(half_life=timedelta(seconds=half_life_s))
    owners = np.array([o for o, _, _ in ratings], dtype=np.int64)
    scores = np.array([s for _, s, _ in ratings], dtype=np.int64)
    ages = np.array([a for _, _, a in ratings], dtype=np.int64)
    ppm, counts = beta_reputations(owners, scores, ages, 5, policy)
    for owner in range(5):
        mine = [(s, T0 - timedelta(microseconds=a)) for o, s, a in ratings if o == owner]
        expected = beta_reputation(mine, T0, policy)
        assert (int(ppm[owner]), int(counts[owner])) == (expected.ppm, expected.count)


def test_reputations_of_many_from_the_store_equal_the_rule_one_at_a_time(world):
    """Every path to a reputation (a list of ids, a SELECT of them, the table) agrees with
    `beta_reputation` over the provider's own ratings, read one by one as objects."""
    m, rng = world.m, random.Random(3)
    providers = [
        world.north,
        world.south,
        world.home,
        *(m.provider(world.south_net, f"p{i}") for i in range(12)),
    ]
    with m.store.write() as s:
        for provider in providers[:-2]:  # the last two stay newcomers
            for _ in range(rng.randint(1, 6)):
                at = T0 - timedelta(
                    seconds=rng.randint(-3600, 400 * 86400), microseconds=rng.randint(0, 999_999)
                )
                award = past_award(s, world.alice, provider, at)
                s.add(
                    Rating(
                        award_id=award.id,
                        direction="service",
                        user_id=world.alice,
                        provider_id=provider,
                        score=rng.randint(0, 100),
                        rated_at=at,
                    )
                )
    now, policy = T0 + 3 * DAY, ReputationPolicy(half_life=20 * DAY)
    with m.store.read() as s:
        by_list = provider_reputations(s, providers, now=now, policy=policy)
        by_select = provider_reputations(
            s, select(Provider.id).where(Provider.id.in_(providers)), now=now, policy=policy
        )
        ids, ppm, counts = reputation_table(s, "service", providers, now=now, policy=policy)
        for provider in providers:
            ratings = [
                (r.score, r.rated_at)
                for r in s.scalars(
                    select(Rating).where(Rating.provider_id == provider).order_by(Rating.id)
                )
            ]
            expected = beta_reputation(ratings, now, policy)
            assert by_list[provider] == by_select[provider] == expected
            at = int(np.searchsorted(ids, provider))
            assert (int(ppm[at]), int(counts[at])) == (expected.ppm, expected.count)
        assert by_list[providers[-1]] == Reputation(500_000, 0)
        assert provider_reputations(s, [], now=now) == {}
