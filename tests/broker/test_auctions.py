"""Auctions against the store: bidding rules, sealing, closing, awards, reputations shown."""

from __future__ import annotations

import gc
import random
from datetime import timedelta

import pytest
from marketplace import HOUR, T0, past_award
from sqlalchemy import func, select

from broker.auctions import close_auction, get_bid, open_auction, submit_bid, visible_bids
from broker.errors import (
    AuctionNotOpen,
    AuctionStillOpen,
    InvalidInput,
    LateBid,
    NotEligible,
    NotYours,
    WrongState,
)
from broker.models import Award, Bid, DeliveryJob, Rating, ServiceRequest
from broker.reputation import beta_reputation
from broker.requests import submit_request
from broker.scoring import SealedBid, clear
from broker.views import auction_view

OPEN, CLOSE = T0 - 2 * HOUR, T0 - HOUR


@pytest.fixture
def auction(world):
    """Alice auctions a one-hour 10 Mbit/s block of anonymize,checksum (home lacks it)."""
    m = world.m
    world.north2 = m.provider(world.north_net, "north-2")
    alice = m.actor("device", world.alice_phone)
    with m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="anonymize,checksum",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=10_000_000,
            members=[
                {"kind": "phone", "value": "+14155552671"},
                {"kind": "device", "value": world.bob_phone},
            ],
            now=OPEN,
        )
        world.request = r.id
        a = open_auction(s, alice, r.id, closes_at=CLOSE, reserve_price_minor=500, now=OPEN)
        world.auction = a.id
    return world


def bid(world, provider, price, *, now=OPEN + HOUR / 2, actor=None, key=None):
    actor = actor or world.m.actor("provider", provider)
    with world.m.store.write() as s:
        b = submit_bid(
            s,
            actor,
            world.auction,
            provider_id=provider,
            price_minor=price,
            now=now,
            idempotency_key=key,
        )
        return b.id


def close(world, now=CLOSE, who=None):
    who = who or world.m.actor("user", world.alice)
    with world.m.store.write() as s:
        return close_auction(s, who, world.auction, now=now).status


def view(world, actor, now=CLOSE):
    with world.m.store.read() as s:
        return auction_view(s, actor, world.auction, now=now)


def test_the_best_score_wins_and_is_paid_the_runner_ups_price(auction):
    w = auction
    bid(w, w.north, 200)
    bid(w, w.south, 300)
    bid(w, w.north2, 350)
    assert close(w) == "closed"
    with w.m.store.read() as s:
        award = s.scalar(select(Award))
        assert (award.provider_id, award.source, award.auction_id, award.price_minor) == (
            w.north,
            "auction",
            w.auction,
            300,
        )
        assert s.get(ServiceRequest, w.request).status == "awarded"
        job = s.scalar(select(DeliveryJob))
        assert job.provider_id == w.north and job.spec["award_id"] == award.id
        assert [m["kind"] for m in job.spec["recipients"]] == ["phone", "device"]
    shown = view(w, w.m.actor("user", w.alice))
    assert [(b["provider"], b["rank"], b["won"], b["payment_minor"]) for b in shown["bids"]] == [
        ("north", 1, True, 300),
        ("south", 2, False, None),
        ("north-2", 3, False, None),
    ]
    assert shown["bids"][0]["reputation"] == {"score": 0.5, "count": 0}


def test_reputation_from_earlier_awards_is_shown_and_changes_the_winner(auction):
    w = auction
    m = w.m
    # South delivered well twice before; north badly once.
    with m.store.write() as s:
        earlier = s.get(ServiceRequest, w.request)
        for provider, score in ((w.south, 100), (w.south, 100), (w.north, 0)):
            a = past_award(s, w.alice, provider, OPEN)
            s.add(
                Rating(
                    award_id=a.id,
                    direction="service",
                    user_id=w.alice,
                    provider_id=provider,
                    score=score,
                    rated_at=CLOSE,
                )
            )
        earlier.status = "brokering"
        s.execute(Award.__table__.update().values(status="delivered"))
    bid(w, w.north, 200)  # reputation 1/3: score 200 * (1 + 2/3) = 333.3
    bid(w, w.south, 260)  # reputation 3/4: score 260 * 1.25 = 325
    with m.store.read() as s:
        open_view = auction_view(s, m.actor("user", w.alice), w.auction, now=OPEN)
    # Before the close the buyer sees who bid, with ratings, but no prices.
    assert open_view["bids"] == []
    assert {b["provider"]: b["reputation"] for b in open_view["bidders"]} == {
        "north": {"score": 0.333333, "count": 1},
        "south": {"score": 0.75, "count": 2},
    }
    close(w)
    shown = view(w, m.actor("provider", w.north))
    assert [(b["provider"], b["won"], b["payment_minor"]) for b in shown["bids"]] == [
        ("south", True, 266),
        ("north", False, None),
    ]  # floor(333.33.. / 1.25)
    assert shown["bids"][0]["reputation_at_close"] == {"score": 0.75, "count": 2}


def test_a_bid_after_the_close_is_refused_with_a_clear_error(auction):
    with pytest.raises(LateBid, match="bids closed at 2030-01-01T11:00:00") as err:
        bid(auction, auction.north, 100, now=CLOSE)
    assert err.value.http_status == 409 and err.value.where == f"auction {auction.auction}"
    with pytest.raises(AuctionNotOpen, match="bids open at"):
        bid(auction, auction.north, 100, now=OPEN - HOUR)


def test_a_provider_cannot_bid_as_another(auction):
    with pytest.raises(NotYours, match="may not bid for provider"):
        bid(auction, auction.south, 100, actor=auction.m.actor("provider", auction.north))
    with pytest.raises(NotYours):
        bid(auction, auction.south, 100, actor=auction.m.actor("user", auction.alice))


def test_who_may_bid(auction):
    w = auction
    with pytest.raises(NotEligible, match="home network"):
        bid(w, w.home, 100)
    weak = w.m.provider(w.south_net, "weak", services=("anonymize",))
    with pytest.raises(NotEligible, match="does not offer checksum"):
        bid(w, weak, 100)
    small = w.m.provider(w.south_net, "small", capacity_bps=1_000_000)
    with pytest.raises(NotEligible, match="spare"):
        bid(w, small, 100)
    dollars = w.m.provider(w.south_net, "dollars", currency="USD")
    with pytest.raises(NotEligible, match="quotes in USD"):
        bid(w, dollars, 100)
    with pytest.raises(InvalidInput, match="above the reserve") as err:
        bid(w, w.north, 501)
    assert err.value.field == "price_minor"
    with pytest.raises(InvalidInput):
        bid(w, w.north, -1)


def test_bids_are_sealed_until_the_close(auction):
    w = auction
    north_bid = bid(w, w.north, 200)
    south_bid = bid(w, w.south, 300)
    north = w.m.actor("provider", w.north)
    with w.m.store.read() as s:
        assert get_bid(s, north, north_bid).price_minor == 200
        with pytest.raises(NotYours, match="sealed until auction"):
            get_bid(s, north, south_bid)
        seen = auction_view(s, north, w.auction, now=OPEN)
        assert [b["price_minor"] for b in seen["bids"]] == [200]
        assert seen["bidders"] == [] and seen["bid_count"] == 2
        alice_view = auction_view(s, w.m.actor("user", w.alice), w.auction, now=OPEN)
        assert alice_view["bids"] == []
    close(w)
    with w.m.store.read() as s:
        assert get_bid(s, north, south_bid).price_minor == 300
        stranger = w.m.actor("provider", w.m.provider(w.south_net, "stranger"))
        with pytest.raises(NotYours):
            get_bid(s, stranger, south_bid)
        with pytest.raises(NotYours):
            visible_bids(s, w.m.actor("user", w.bob), s.get(Bid, south_bid).auction)


def test_a_resubmitted_bid_replaces_the_first(auction):
    w = auction
    first = bid(w, w.north, 400)
    again = bid(w, w.north, 250)
    assert first == again
    with w.m.store.read() as s:
        b = s.get(Bid, first)
        assert (b.price_minor, b.revision) == (250, 2)


def test_a_retried_bid_is_counted_once(auction):
    w = auction
    assert bid(w, w.north, 400, key="k") == bid(w, w.north, 400, key="k")
    with w.m.store.read() as s:
        assert s.get(Bid, bid(w, w.north, 400, key="k")).revision == 1


def test_the_auction_cannot_close_early_or_twice(auction):
    w = auction
    bid(w, w.north, 100)
    with pytest.raises(AuctionStillOpen):
        close(w, now=CLOSE - HOUR / 60)
    with pytest.raises(NotYours):
        close(w, who=w.m.actor("user", w.bob))
    close(w)
    with pytest.raises(AuctionNotOpen):
        close(w)
    with pytest.raises(AuctionNotOpen):
        bid(w, w.south, 100)


def test_an_auction_without_bids_fails_and_the_request_stays_open(auction):
    assert close(auction, who=auction.m.actor("provider", auction.home)) == "failed"
    with auction.m.store.read() as s:
        assert s.get(ServiceRequest, auction.request).status == "brokering"
        assert s.scalar(select(func.count()).select_from(Award)) == 0


def test_k_blocks_go_to_the_k_best_at_a_uniform_price(world):
    m = world.m
    extra = [m.provider(world.south_net, f"s{i}") for i in range(3)]
    alice = m.actor("user", world.alice)
    with m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=T0,
            ends_at=T0 + HOUR,
            min_rate_bps=1_000_000,
            now=OPEN,
        )
        world.auction = open_auction(
            s, alice, r.id, closes_at=CLOSE, reserve_price_minor=100, quantity=3, now=OPEN
        ).id
    for provider, price in zip([world.north, world.south, *extra], [50, 10, 40, 20, 30]):
        bid(world, provider, price)
    close(world)
    with m.store.read() as s:
        awards = s.scalars(select(Award).order_by(Award.provider_id)).all()
        assert sorted((a.provider_id, a.price_minor) for a in awards) == sorted(
            [(world.south, 40), (extra[1], 40), (extra[2], 40)]
        )


def test_opening_an_auction_is_checked(world):
    m = world.m
    alice, bob = m.actor("user", world.alice), m.actor("user", world.bob)
    with m.store.write() as s:
        served = submit_request(
            s, alice, services="identity", starts_at=T0, ends_at=T0 + HOUR, max_rate_bps=1, now=OPEN
        )
        volume = submit_request(s, alice, services="anonymize", volume_bytes=10, now=OPEN)
        block = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=1,
            max_price_minor=100,
            now=OPEN,
        )
        ids = served.id, volume.id, block.id
    cases = [
        (alice, ids[0], {}, WrongState),
        (alice, ids[1], {}, InvalidInput),
        (bob, ids[2], {}, NotYours),
        (alice, ids[2], {"reserve_price_minor": 101}, InvalidInput),
        (alice, ids[2], {"closes_at": OPEN}, InvalidInput),
        (alice, ids[2], {"quantity": 0}, InvalidInput),
    ]
    for actor, rid, kw, error in cases:
        args = {"closes_at": CLOSE, "reserve_price_minor": 50, **kw}
        with m.store.write() as s, pytest.raises(error):
            open_auction(s, actor, rid, now=OPEN, **args)


def test_a_big_close_equals_the_rule_applied_bid_by_bid(world):
    """The bulk close (bare columns, reputation arrays, one executemany) against the plain
    rule: `beta_reputation` per bidder and `clear` over `SealedBid` objects."""
    m, rng = world.m, random.Random(8)
    providers = [m.provider(world.south_net, f"b{i}") for i in range(40)]
    alice = m.actor("user", world.alice)
    with m.store.write() as s:
        for provider in providers[5:]:
            for _ in range(rng.randint(1, 4)):
                at = OPEN - timedelta(days=rng.randint(0, 300), seconds=rng.randint(0, 86399))
                award = past_award(s, world.alice, provider, at)
                s.add(
                    Rating(
                        award_id=award.id,
                        direction="service",
                        user_id=world.alice,
                        provider_id=provider,
                        score=rng.choice((0, 40, 75, 90, 100)),
                        rated_at=at,
                    )
                )
        s.execute(Award.__table__.update().values(status="delivered"))
        r = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=1_000_000,
            now=OPEN,
        )
        world.auction = open_auction(
            s,
            alice,
            r.id,
            closes_at=CLOSE,
            reserve_price_minor=1000,
            quantity=3,
            reputation_weight_ppm=700_000,
            now=OPEN,
        ).id
    for provider in providers:
        bid(world, provider, rng.choice((300, 450, 600, 600, 800, 1000)))
    assert close(world) == "closed"
    with m.store.read() as s:
        stored = s.scalars(select(Bid).where(Bid.auction_id == world.auction)).all()
        sealed = []
        for b in stored:
            ratings = [
                (x.score, x.rated_at)
                for x in s.scalars(
                    select(Rating).where(Rating.provider_id == b.provider_id).order_by(Rating.id)
                )
            ]
            sealed.append(
                SealedBid(b.id, b.provider_id, b.price_minor, beta_reputation(ratings, CLOSE).ppm)
            )
            assert (b.reputation_ppm, b.rating_count) == (sealed[-1].reputation_ppm, len(ratings))
        expected = {
            o.bid.bid_id: (o.rank, o.won, o.payment)
            for o in clear(sealed, quantity=3, reserve=1000, weight_ppm=700_000)
        }
        assert {b.id: (b.rank, b.won, b.payment_minor) for b in stored} == expected
        awards = s.execute(
            select(Award.provider_id, Award.price_minor).where(Award.auction_id == world.auction)
        ).all()
        by_bid = {b.id: b.provider_id for b in stored}
        assert sorted(map(tuple, awards)) == sorted(
            (by_bid[i], pay) for i, (_, won, pay) in expected.items() if won
        )


def test_a_bid_resubmitted_in_a_session_that_holds_it_is_current(auction):
    w = auction
    north = w.m.actor("provider", w.north)
    with w.m.store.write() as s:
        first = submit_bid(s, north, w.auction, provider_id=w.north, price_minor=400, now=OPEN)
        assert (first.price_minor, first.revision, first.auction.id) == (400, 1, w.auction)
        again = submit_bid(s, north, w.auction, provider_id=w.north, price_minor=300, now=OPEN)
        assert again is first and (again.price_minor, again.revision) == (300, 2)


@pytest.mark.parametrize("collector_on", [True, False])
def test_closing_leaves_the_garbage_collector_as_it_found_it(auction, collector_on, monkeypatch):
    w = auction
    bid(w, w.north, 100)
    was = gc.isenabled()

    def broken(*_args, **_kw):
        assert not gc.isenabled()  # paused while the bids are scored and written
        raise OSError("out of luck")

    try:
        (gc.enable if collector_on else gc.disable)()
        with pytest.raises(AuctionStillOpen):
            close(w, now=CLOSE - HOUR / 60)
        assert gc.isenabled() is collector_on
        with monkeypatch.context() as patch:
            patch.setattr("broker.auctions.clear_columns", broken)
            with pytest.raises(OSError):
                close(w)
        assert gc.isenabled() is collector_on
        with pytest.raises(RuntimeError), w.m.store.write() as s:
            close_auction(s, w.m.actor("user", w.alice), w.auction, now=CLOSE)
            assert gc.isenabled() is collector_on
            raise RuntimeError("roll it back")
        assert gc.isenabled() is collector_on
        assert close(w) == "closed"
        assert gc.isenabled() is collector_on
    finally:
        (gc.enable if was else gc.disable)()


def test_a_bid_retried_after_the_close_gets_the_bid_it_made(auction):
    """A bid's answer lost just before the close: its retry, at or after the close (and after
    the auction closed), finds the bid instead of a 409 that would say it was refused."""
    w = auction
    first = bid(w, w.north, 200, now=CLOSE - HOUR / 60, key="b")
    assert bid(w, w.north, 200, now=CLOSE, key="b") == first
    close(w)
    assert bid(w, w.north, 200, now=CLOSE + HOUR, key="b") == first
    with w.m.store.read() as s:
        assert s.get(Bid, first).revision == 1 and s.get(Bid, first).won


def test_opening_retried_after_the_close_time_gets_the_auction(world):
    alice = world.m.actor("user", world.alice)
    with world.m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=1_000_000,
            now=OPEN,
        )

    def open_(now):
        with world.m.store.write() as s:
            return open_auction(
                s,
                alice,
                r.id,
                closes_at=CLOSE,
                reserve_price_minor=100,
                now=now,
                idempotency_key="a",
            ).id

    first = open_(OPEN)
    assert open_(CLOSE) == open_(CLOSE + HOUR / 2) == first
