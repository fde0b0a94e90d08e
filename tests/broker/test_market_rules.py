"""The market's rules under hostile or unlucky use (issue 7): one award per request share,
capacity kept at the close, spare capacity over the overlapping awards only, parties-only
views, who may cancel, who a group sponsors, and quantity as a partition of the request."""

from __future__ import annotations

import pytest
from marketplace import HOUR, T0, past_award
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from broker.auctions import close_auction, list_auctions, open_auction, submit_bid
from broker.awards import make_award
from broker.directory import update_provider
from broker.errors import AlreadyBrokering, AuctionNotOpen, NotYours, WrongState
from broker.groups import group_of_request, group_view, pledge
from broker.models import Auction, Award, Bid, Rating, ServiceRequest
from broker.negotiation import start_negotiation
from broker.requests import cancel_request, submit_request
from broker.views import auction_view

OPEN, CLOSE = T0 - 2 * HOUR, T0 - HOUR


def request(w, *, rate=10_000_000, start=T0, hours=1, services="anonymize", **kw) -> int:
    with w.m.store.write() as s:
        return submit_request(
            s,
            w.m.actor("user", w.alice),
            services=services,
            starts_at=start,
            ends_at=start + hours * HOUR,
            max_rate_bps=rate,
            now=OPEN,
            **kw,
        ).id


def auction(w, rid, *, quantity=1, reserve=10_000, key=None) -> int:
    with w.m.store.write() as s:
        return open_auction(
            s,
            w.m.actor("user", w.alice),
            rid,
            closes_at=CLOSE,
            reserve_price_minor=reserve,
            quantity=quantity,
            now=OPEN,
            idempotency_key=key,
        ).id


def bid(w, aid, provider, price) -> int:
    with w.m.store.write() as s:
        return submit_bid(
            s,
            w.m.actor("provider", provider),
            aid,
            provider_id=provider,
            price_minor=price,
            now=OPEN + HOUR / 2,
        ).id


def close(w, aid, who=None):
    with w.m.store.write() as s:
        a = close_auction(s, who or w.m.actor("user", w.alice), aid, now=CLOSE)
        return a.status, a.reason


def awards_of(w, rid) -> list[tuple[int, int, int]]:
    with w.m.store.read() as s:
        return [
            (a.provider_id, a.share, a.shares)
            for a in s.scalars(select(Award).where(Award.request_id == rid).order_by(Award.share))
        ]


def test_a_request_is_auctioned_or_negotiated_once_at_a_time(world):
    rid = request(world)
    auction(world, rid)
    with pytest.raises(AlreadyBrokering):
        auction(world, rid)
    with world.m.store.write() as s, pytest.raises(AlreadyBrokering):
        start_negotiation(
            s,
            world.m.actor("user", world.alice),
            rid,
            world.north,
            mode="user",
            deadline=T0,
            now=OPEN,
        )
    # The database holds the rule too, whatever the code above it does.
    with world.m.store.write() as s, pytest.raises(IntegrityError):
        s.add(
            Auction(
                request_id=rid,
                auctioneer_id=world.home,
                quantity=1,
                reserve_price_minor=1,
                currency="EUR",
                opens_at=OPEN,
                closes_at=CLOSE,
            )
        )
        s.flush()


def test_a_request_cancelled_while_its_auction_runs_is_never_awarded(world):
    rid = request(world)
    aid = auction(world, rid)
    bid(world, aid, world.north, 100)
    with world.m.store.write() as s:
        cancel_request(s, world.m.actor("device", world.alice_phone), rid)
    with world.m.store.write() as s:
        assert s.get(Auction, aid).status == "cancelled"
        with pytest.raises(AuctionNotOpen):
            submit_bid(
                s,
                world.m.actor("provider", world.south),
                aid,
                provider_id=world.south,
                price_minor=90,
                now=OPEN + HOUR / 2,
            )
    assert awards_of(world, rid) == []
    with world.m.store.read() as s:
        assert s.get(ServiceRequest, rid).status == "cancelled"


def test_an_award_never_rewrites_a_cancelled_request_and_a_share_is_awarded_once(world):
    rid = request(world)
    with world.m.store.write() as s:
        r = s.get(ServiceRequest, rid)
        make_award(s, r, world.north, 100, source="auction", now=OPEN)
        r.status = "brokering"  # as if a second close raced the first one
        with pytest.raises(IntegrityError):
            make_award(s, r, world.south, 90, source="auction", now=OPEN)
    with world.m.store.write() as s:
        r = s.get(ServiceRequest, rid)
        r.status = "cancelled"
        with pytest.raises(WrongState):
            make_award(s, r, world.south, 90, source="auction", now=OPEN)


def test_the_close_passes_over_a_winner_whose_capacity_went_meanwhile(world):
    m = world.m
    small = m.provider(world.north_net, "small", capacity_bps=15_000_000)
    first, second = request(world), request(world, start=T0 + HOUR / 2)
    a1, a2 = auction(world, first), auction(world, second)
    for aid in (a1, a2):
        bid(world, aid, small, 100)  # eligible for each at bid time: 15 >= 10 Mbit/s
        bid(world, aid, world.south, 400)
    assert close(world, a1)[0] == "closed" and awards_of(world, first) == [(small, 0, 1)]
    assert close(world, a2)[0] == "closed"
    assert awards_of(world, second) == [(world.south, 0, 1)]
    with m.store.read() as s:
        passed = s.scalar(select(Bid).where(Bid.auction_id == a2, Bid.provider_id == small))
        assert passed.won is False and "5000000 bit/s spare" in passed.passed_over
        won = s.scalar(select(Bid).where(Bid.auction_id == a2, Bid.provider_id == world.south))
        # The payment is the next best that could carry it: none, so the reserve.
        assert (won.won, won.payment_minor, won.share) == (True, 10_000, 0)
        shown = auction_view(s, m.actor("user", world.alice), a2, now=CLOSE)
        assert [b["passed_over"] is not None for b in shown["bids"]] == [False, True]


def test_spare_capacity_is_over_the_overlapping_awards_and_zero_needs_nothing(world):
    m, home = world.m, world.home  # home carries 100 Mbit/s of identity, checksum
    alice = m.actor("user", world.alice)
    with m.store.write() as s:
        for start in (T0, T0 + HOUR):  # two 60 Mbit/s blocks, one after the other
            r = submit_request(
                s,
                alice,
                services="identity",
                starts_at=start,
                ends_at=start + HOUR,
                max_rate_bps=60_000_000,
                now=OPEN,
            )
            assert r.status == "served"
        # 40 Mbit/s over both hours fits beside either: the peak is 60, not 120.
        r = submit_request(
            s,
            alice,
            services="identity",
            starts_at=T0,
            ends_at=T0 + 2 * HOUR,
            max_rate_bps=40_000_000,
            now=OPEN,
        )
        assert r.status == "served", r.reason
    with m.store.write() as s:
        update_provider(s, m.actor("provider", home), home, capacity_bps=0)
        r = submit_request(s, alice, services="identity", volume_bytes=10**6, now=OPEN)
        assert r.status == "served", r.reason  # no rate asked: no capacity needed


def test_bidders_see_the_buyers_payment_reputation_not_the_recipients(world):
    m = world.m
    far_net = m.network("far-net")
    far = m.provider(far_net, "far", services=("identity",))  # cannot bid: no anonymize
    with m.store.write() as s:
        earlier = past_award(s, world.alice, world.south, OPEN - 10 * HOUR)
        s.add(
            Rating(
                award_id=earlier.id,
                direction="payment",
                user_id=world.alice,
                provider_id=world.south,
                score=100,
                rated_at=OPEN - 9 * HOUR,
            )
        )
    rid = request(
        world,
        members=[
            {"kind": "phone", "value": "+14155552671"},
            {"kind": "device", "value": world.bob_phone},
        ],
    )
    aid = auction(world, rid)
    bid(world, aid, world.south, 100)
    with m.store.read() as s:
        seen = auction_view(s, m.actor("provider", world.north), aid, now=OPEN)
        assert seen["buyer_reputation"]["count"] == 1 and seen["buyer_reputation"]["score"] > 0.5
        assert "members" not in seen["block"] and seen["block"]["share_rate_bps"] == 10_000_000
        assert seen["block"]["services"] == ["anonymize"]
        mine = auction_view(s, m.actor("user", world.alice), aid, now=OPEN)
        assert [x["kind"] for x in mine["block"]["members"]] == ["phone", "device"]
        for outsider in (m.actor("user", world.bob), m.actor("provider", far)):
            with pytest.raises(NotYours):
                auction_view(s, outsider, aid, now=OPEN)
            assert list_auctions(s, outsider, now=OPEN) == []
        assert [a.id for a in list_auctions(s, m.actor("provider", world.north), now=OPEN)] == [aid]
    close(world, aid)
    with m.store.read() as s:
        winner = auction_view(s, m.actor("provider", world.south), aid, now=CLOSE)
        assert len(winner["block"]["members"]) == 2  # it must deliver to them now
        with pytest.raises(NotYours):  # north never bid: not a party after the close
            auction_view(s, m.actor("provider", world.north), aid, now=CLOSE)


def test_only_the_user_cancels_its_request(world):
    rid = request(world)
    with world.m.store.write() as s:
        with pytest.raises(NotYours):
            cancel_request(s, world.m.actor("provider", world.home), rid)
        with pytest.raises(NotYours):
            cancel_request(s, world.m.actor("user", world.bob), rid)
    with world.m.store.write() as s:
        assert (
            cancel_request(s, world.m.actor("device", world.alice_phone), rid).status == "cancelled"
        )


def test_a_payer_pledging_through_its_device_is_not_sponsored(world):
    m = world.m
    with m.store.write() as s:
        r = submit_request(
            s,
            m.actor("user", world.alice),
            services="identity",
            volume_bytes=10**6,
            group=True,
            now=OPEN,
            members=[
                {"kind": "device", "value": world.bob_phone},
                {"kind": "user", "value": world.alice},
            ],
        )
        group_id = group_of_request(s, r.id).id
    with m.store.write() as s:
        pledge(s, m.actor("device", world.bob_phone), group_id, 500, now=OPEN)
    with m.store.read() as s:
        view = group_view(s, m.actor("user", world.alice), group_id)
        assert [(x["kind"], x["sponsored"]) for x in view["members"]] == [
            ("device", False),
            ("user", True),
        ]


def test_quantity_splits_the_request_into_shares_each_awarded_once(world):
    m = world.m
    third = m.provider(world.north_net, "third")
    rid = request(world, rate=30_000_000)
    aid = auction(world, rid, quantity=3)
    for provider, price in ((world.north, 100), (world.south, 200), (third, 300)):
        bid(world, aid, provider, price)
    assert close(world, aid)[0] == "closed"
    got = awards_of(world, rid)
    assert sorted(share for _p, share, _k in got) == [0, 1, 2] and {k for *_, k in got} == {3}
    assert len({p for p, *_ in got}) == 3
    with m.store.read() as s:
        for award in s.scalars(select(Award).where(Award.request_id == rid)):
            assert award.max_rate_bps == 10_000_000  # a third of the rate each
            assert award.job.spec["share"] == {
                "index": award.share,
                "of": 3,
                "by": "symmetric-flow-hash",
            }
    # Fewer carriers than shares: nothing is awarded (a stream split 2 ways needs both).
    rid2 = request(world, rate=20_000_000, start=T0 + 5 * HOUR)
    aid2 = auction(world, rid2, quantity=2)
    bid(world, aid2, world.north, 100)
    status, reason = close(world, aid2)
    assert status == "failed" and "fewer than 2" in reason and awards_of(world, rid2) == []
