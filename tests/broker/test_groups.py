"""Group negotiation: pledges, sponsorship, the equal-share-capped split, clean failure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marketplace import HOUR, T0
from sqlalchemy import func, select

from broker.auctions import close_auction, open_auction, submit_bid
from broker.errors import GroupUnderfunded, NotYours, WrongState
from broker.groups import group_view, pledge, split_equal_capped, withdraw
from broker.models import Award, AwardPayer, Group, ServiceRequest
from broker.negotiation import act, start_negotiation
from broker.requests import close_pledges, submit_request


def test_equal_shares_when_everyone_can_pay_them():
    assert split_equal_capped(90, [(1, 50), (2, 50), (3, 50)]) == [(1, 30), (2, 30), (3, 30)]


def test_a_capped_payers_shortfall_is_shared_by_the_others():
    assert split_equal_capped(90, [(1, 10), (2, 100), (3, 100)]) == [(1, 10), (2, 40), (3, 40)]


def test_leftover_minor_units_go_to_the_earliest_pledges():
    assert split_equal_capped(10, [(7, 9), (8, 9), (9, 9)]) == [(7, 4), (8, 3), (9, 3)]


def test_pledges_short_of_the_price_fail():
    with pytest.raises(GroupUnderfunded, match="pledges cover 60 of the price 90; 30 more"):
        split_equal_capped(90, [(1, 30), (2, 30)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=8), st.integers(0, 8000))
def test_the_split_adds_up_and_respects_caps(caps, price):
    pairs = list(enumerate(caps))
    if sum(caps) < price:
        with pytest.raises(GroupUnderfunded):
            split_equal_capped(price, pairs)
        return
    shares = [s for _, s in split_equal_capped(price, pairs)]
    assert sum(shares) == price
    assert all(0 <= s <= c for s, c in zip(shares, caps))
    # Max-min fair: a payer below another's share is paying all it pledged.
    top = max(shares)
    assert all(s >= top - 1 or s == c for s, c in zip(shares, caps))


@pytest.fixture
def group(world):
    """Alice organises a block for herself, bob's phone and an outside number; carol joins."""
    m = world.m
    world.carol = m.user("carol", world.home)
    alice = m.actor("user", world.alice)
    with m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="identity",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=10_000_000,
            group=True,
            now=T0 - HOUR,
            members=[
                {"kind": "user", "value": world.alice},
                {"kind": "device", "value": world.bob_phone},
                {"kind": "user", "value": world.carol},
                {"kind": "phone", "value": "+14155552671"},
            ],
        )
        world.request = r.id
        assert r.status == "pledging"
        world.group = s.scalar(select(Group.id).where(Group.request_id == r.id))
    return world


def pledge_as(w, user, amount):
    with w.m.store.write() as s:
        pledge(s, w.m.actor("user", user), w.group, amount, now=T0 - HOUR)


def close(w, now=T0 - HOUR):
    with w.m.store.write() as s:
        r = close_pledges(s, w.m.actor("user", w.alice), w.group, now=now)
        return r.status


def payers(w):
    with w.m.store.read() as s:
        return sorted(s.execute(select(AwardPayer.user_id, AwardPayer.share_minor)).all())


def test_payers_sponsor_the_others_and_split_the_home_price(group):
    w = group
    pledge_as(w, w.alice, 80)
    pledge_as(w, w.carol, 30)
    pledge_as(w, w.carol, 40)  # a second pledge replaces the first
    assert close(w) == "served"  # 10 Mbit/s for an hour at home: 100
    assert payers(w) == [(w.alice, 60), (w.carol, 40)]
    with w.m.store.read() as s:
        assert s.get(Group, w.group).status == "funded"
        view = group_view(s, w.m.actor("device", w.bob_phone), w.group)
        assert view["pledged_total_minor"] == 120
        assert [m["sponsored"] for m in view["members"]] == [False, True, False, True]
        award = s.scalar(select(Award))
        assert len(award.job.spec["recipients"]) == 4  # every member is served


def test_a_non_member_cannot_pledge_or_look(group):
    w = group
    outsider = w.m.user("mallory", w.home)
    with pytest.raises(NotYours):
        pledge_as(w, outsider, 100)
    with w.m.store.read() as s, pytest.raises(NotYours):
        group_view(s, w.m.actor("user", outsider), w.group)


def test_nobody_pledging_fails_cleanly(group):
    assert close(group) == "failed"
    with group.m.store.read() as s:
        assert s.get(Group, group.group).status == "failed"
        assert s.scalar(select(func.count()).select_from(AwardPayer)) == 0


def test_pledges_below_the_home_price_go_to_other_networks_with_that_budget(group):
    w = group
    pledge_as(w, w.alice, 30)
    pledge_as(w, w.carol, 20)
    assert close(w) == "brokering"
    with w.m.store.read() as s:
        assert s.get(ServiceRequest, w.request).max_price_minor == 50
    with pytest.raises(WrongState):
        pledge_as(w, w.alice, 500)
    with w.m.store.write() as s, pytest.raises(WrongState):
        withdraw(s, w.m.actor("user", w.alice), w.group)


def test_an_agreement_above_the_pledges_fails_and_nobody_is_charged(group):
    w = group
    pledge_as(w, w.alice, 30)
    pledge_as(w, w.carol, 20)
    close(w)
    alice = w.m.actor("user", w.alice)
    with w.m.store.write() as s:
        n = start_negotiation(s, alice, w.request, w.north, mode="user", deadline=T0, now=T0 - HOUR)
        assert n.offers[-1].price_minor == 100  # north's list price
        n = act(s, alice, n.id, "accept", now=T0 - HOUR)
        assert n.status == "failed" and "pledges cover 50 of the price 100" in n.reason
    with w.m.store.read() as s:
        assert s.get(Group, w.group).status == "failed"
        assert s.get(ServiceRequest, w.request).status == "failed"
        assert s.scalar(select(func.count()).select_from(Award)) == 0
        assert s.scalar(select(func.count()).select_from(AwardPayer)) == 0


def test_an_auction_within_the_pledges_is_split(group):
    w = group
    pledge_as(w, w.alice, 30)
    pledge_as(w, w.carol, 30)
    close(w)
    alice = w.m.actor("user", w.alice)
    with w.m.store.write() as s:
        a = open_auction(
            s, alice, w.request, closes_at=T0 - HOUR / 2, reserve_price_minor=60, now=T0 - HOUR
        )
        submit_bid(
            s,
            w.m.actor("provider", w.north),
            a.id,
            provider_id=w.north,
            price_minor=41,
            now=T0 - HOUR,
        )
        close_auction(s, alice, a.id, now=T0 - HOUR / 2)
    assert payers(w) == [(w.alice, 30), (w.carol, 30)]  # alone: paid the reserve, 60
    with w.m.store.read() as s:
        assert s.get(Group, w.group).status == "funded"


def test_a_pledge_can_be_withdrawn_while_pledging(group):
    w = group
    pledge_as(w, w.carol, 100)
    with w.m.store.write() as s:
        withdraw(s, w.m.actor("user", w.carol), w.group)
    assert close(w) == "failed"
