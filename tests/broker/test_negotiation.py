"""Alternating offers: agents and policies, moves by hand, deadlines, records."""

from __future__ import annotations

import pytest
from marketplace import HOUR, T0, past_award
from sqlalchemy import func, select

from broker.errors import (
    AlreadyBrokering,
    DeadlineExpired,
    InvalidInput,
    NegotiationClosed,
    NotEligible,
    NotYours,
    NotYourTurn,
    WrongState,
)
from broker.models import Award, Negotiation, Offer, Rating, ServiceRequest
from broker.negotiation import act, expire_overdue, get_negotiation, start_negotiation
from broker.requests import submit_request
from broker.views import negotiation_view

# list price of 10 GB at 100 per GB: 1000; reservation at 80 %: 800.
VOLUME = 10 * 10**9


@pytest.fixture
def brokered(world):
    alice = world.m.actor("device", world.alice_phone)
    with world.m.store.write() as s:
        world.request = submit_request(
            s, alice, services="anonymize", volume_bytes=VOLUME, now=T0
        ).id
    return world


def start(w, provider, *, now=T0, **kw):
    kw.setdefault("deadline", T0 + HOUR)
    with w.m.store.write() as s:
        n = start_negotiation(s, w.m.actor("user", w.alice), w.request, provider, now=now, **kw)
        return n.id


def move(w, actor, nid, action, price=None, now=T0 + HOUR / 4):
    with w.m.store.write() as s:
        return act(s, actor, nid, action, price_minor=price, now=now).status


def moves(w, nid):
    with w.m.store.read() as s:
        return [
            (o.side, o.action, o.actor, o.price_minor)
            for o in s.scalars(
                select(Offer).where(Offer.negotiation_id == nid).order_by(Offer.round)
            )
        ]


def negotiation(w, nid):
    with w.m.store.read() as s:
        n = s.get(Negotiation, nid)
        return n.status, n.agreed_price_minor, n.reason


def test_an_agent_and_a_policy_meet_between_reservation_and_limit(brokered):
    w = brokered
    nid = start(w, w.north, mode="agent", max_price_minor=900, max_rounds=10)
    status, price, _ = negotiation(w, nid)
    assert status == "agreed" and 800 <= price <= 900
    record = moves(w, nid)
    assert record[0] == ("buyer", "offer", "agent", 450)  # opens at half its limit
    # The policy's first ask comes one round in: a ninth of the way from 1000 to 800.
    assert record[1] == ("seller", "offer", "policy", 978)
    assert record[-1][1:] == ("accept", record[-1][2], price)
    buyer = [p for side, action, _, p in record if side == "buyer" and action == "offer"]
    seller = [p for side, action, _, p in record if side == "seller" and action == "offer"]
    assert buyer == sorted(buyer) and seller == sorted(seller, reverse=True)
    assert all(p <= 900 for p in buyer) and all(p >= 800 for p in seller)
    with w.m.store.read() as s:
        award = s.scalar(select(Award))
        assert (award.provider_id, award.source, award.negotiation_id, award.price_minor) == (
            w.north,
            "negotiation",
            nid,
            price,
        )
        assert s.get(ServiceRequest, w.request).status == "awarded"


def test_no_zone_of_agreement_expires_after_the_round_limit(brokered):
    w = brokered
    nid = start(w, w.north, mode="agent", max_price_minor=700, max_rounds=6)
    status, price, reason = negotiation(w, nid)
    assert status == "expired" and price is None and "6 offers" in reason
    assert len([m for m in moves(w, nid) if m[1] == "offer"]) == 6
    with w.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Award)) == 0
        assert s.get(ServiceRequest, w.request).status == "brokering"


def test_boulware_concedes_later_than_conceder(brokered):
    w = brokered
    hard = start(
        w, w.north, mode="agent", max_price_minor=700, max_rounds=8, buyer_beta_ppm=200_000
    )
    soft = start(
        w, w.south, mode="agent", max_price_minor=700, max_rounds=8, buyer_beta_ppm=5_000_000
    )
    second = [
        [p for side, a, _, p in moves(w, n) if side == "buyer" and a == "offer"][1]
        for n in (hard, soft)
    ]
    assert second[0] < second[1]


def test_the_agent_keeps_to_the_users_minimum_reputation(brokered):
    w = brokered
    with w.m.store.write() as s:
        earlier = s.get(ServiceRequest, w.request)
        a = past_award(s, w.alice, w.north, T0)
        s.add(
            Rating(
                award_id=a.id,
                direction="service",
                user_id=w.alice,
                provider_id=w.north,
                score=0,
                rated_at=T0,
            )
        )
        earlier.status = "brokering"
        s.execute(Award.__table__.update().values(status="delivered"))
    with pytest.raises(NotEligible, match=r"reputation 0.333 \(1 ratings\), below the minimum"):
        start(w, w.north, mode="agent", max_price_minor=900, min_reputation_ppm=400_000)
    assert (
        negotiation(
            w, start(w, w.south, mode="agent", max_price_minor=900, min_reputation_ppm=400_000)
        )[0]
        == "agreed"
    )


def test_a_user_negotiates_by_hand_with_a_policy(brokered):
    w = brokered
    alice = w.m.actor("user", w.alice)
    nid = start(w, w.north, mode="user")
    assert moves(w, nid) == [("seller", "offer", "policy", 1000)]
    assert move(w, alice, nid, "offer", 700) == "open"
    assert moves(w, nid)[-1][:3] == ("seller", "offer", "policy")
    ask = moves(w, nid)[-1][3]
    assert 800 <= ask < 1000
    assert move(w, alice, nid, "offer", ask) == "agreed"  # the policy accepts its own ask
    assert negotiation(w, nid)[1] == ask


def test_a_user_accepts_or_rejects(brokered):
    w = brokered
    alice = w.m.actor("device", w.alice_phone)
    nid = start(w, w.north, mode="user")
    assert move(w, alice, nid, "accept") == "agreed"
    assert negotiation(w, nid)[1] == 1000
    assert moves(w, nid)[-1] == ("buyer", "accept", "user", 1000)
    with pytest.raises(NegotiationClosed):
        move(w, alice, nid, "reject")


def test_a_manual_provider_answers_by_hand(brokered):
    w = brokered
    manual = w.m.provider(w.south_net, "manual", mode="manual")
    alice, seller = w.m.actor("user", w.alice), w.m.actor("provider", manual)
    nid = start(w, manual, mode="user", opening_price_minor=500)
    assert moves(w, nid) == [("buyer", "offer", "user", 500)]
    with pytest.raises(NotYourTurn, match="the buyer made the last offer"):
        move(w, alice, nid, "offer", 550)
    with pytest.raises(NotYours):
        move(w, w.m.actor("provider", w.north), nid, "accept")
    move(w, seller, nid, "offer", 900)
    move(w, alice, nid, "offer", 600)
    assert move(w, seller, nid, "reject") == "rejected"
    assert [m[:2] for m in moves(w, nid)] == [
        ("buyer", "offer"),
        ("seller", "offer"),
        ("buyer", "offer"),
        ("seller", "reject"),
    ]


def test_an_agent_against_a_manual_provider(brokered):
    w = brokered
    manual = w.m.provider(w.south_net, "manual", mode="manual")
    nid = start(w, manual, mode="agent", max_price_minor=800, max_rounds=4)
    assert moves(w, nid) == [("buyer", "offer", "agent", 400)]
    move(w, w.m.actor("provider", manual), nid, "offer", 700)
    # Progress 2/3: the agent would offer 400 + 400 * 2/3 = 666 < 700, so it counters.
    assert moves(w, nid)[-1] == ("buyer", "offer", "agent", 666)
    assert move(w, w.m.actor("provider", manual), nid, "offer", 700) == "agreed"
    assert negotiation(w, nid)[1] == 700  # the last round: the agent stands at its limit


def test_the_deadline_ends_the_negotiation(brokered):
    w = brokered
    alice = w.m.actor("user", w.alice)
    nid = start(w, w.north, mode="user")
    with pytest.raises(DeadlineExpired, match="deadline 2030-01-01T13:00:00"):
        move(w, alice, nid, "offer", 900, now=T0 + HOUR)
    with w.m.store.read() as s:
        assert negotiation_view(s.get(Negotiation, nid), now=T0 + HOUR)["status"] == "expired"
    with w.m.store.write() as s:
        assert expire_overdue(s, now=T0 + HOUR) == 1
    assert negotiation(w, nid)[0] == "expired"


def test_starting_is_checked(brokered):
    w = brokered
    with pytest.raises(InvalidInput) as err:
        start(w, w.north, mode="agent")
    assert err.value.field == "max_price_minor"
    for kw, field in (
        ({"mode": "haggle"}, "mode"),
        ({"mode": "user", "deadline": T0}, "deadline"),
        ({"mode": "user", "max_rounds": 0}, "max_rounds"),
        (
            {"mode": "agent", "max_price_minor": 10, "opening_price_minor": 11},
            "opening_price_minor",
        ),
    ):
        with pytest.raises(InvalidInput) as err:
            start(w, w.north, **kw)
        assert err.value.field == field
    with pytest.raises(NotEligible, match="home network"):
        start(w, w.home, mode="user")
    with w.m.store.write() as s, pytest.raises(NotYours):
        start_negotiation(
            s, w.m.actor("user", w.bob), w.request, w.north, mode="user", deadline=T0 + HOUR, now=T0
        )


def test_a_settled_request_is_not_negotiated_again(brokered):
    w = brokered
    first = start(w, w.north, mode="user")
    # One negotiation at a time: a second one beside an open one is refused (it could agree
    # too, and the request would be awarded twice).
    with pytest.raises(AlreadyBrokering):
        start(w, w.south, mode="user")
    move(w, w.m.actor("user", w.alice), first, "accept")
    with pytest.raises(WrongState):
        start(w, w.south, mode="user")
    with w.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Award)) == 1


def test_only_the_parties_see_a_negotiation(brokered):
    w = brokered
    nid = start(w, w.north, mode="user")
    with w.m.store.read() as s:
        for kind, ident in (("user", w.alice), ("provider", w.north), ("provider", w.home)):
            assert get_negotiation(s, w.m.actor(kind, ident), nid).id == nid
        for kind, ident in (("user", w.bob), ("provider", w.south)):
            with pytest.raises(NotYours):
                get_negotiation(s, w.m.actor(kind, ident), nid)


def test_a_start_retried_after_the_deadline_gets_the_negotiation(brokered):
    w = brokered
    first = start(w, w.north, mode="user", idempotency_key="n")
    assert start(w, w.north, mode="user", idempotency_key="n", now=T0 + HOUR) == first


def test_an_agreement_the_provider_can_no_longer_carry_fails(world):
    """Negotiations do not hold capacity: when the provider's room went to another award
    meanwhile, the agreement fails and the request stays brokering (an auction's winner is
    passed over at the close the same way)."""
    m = world.m
    small = m.provider(world.south_net, "small", capacity_bps=10_000_000)
    alice = m.actor("user", world.alice)
    with m.store.write() as s:
        first, second = (
            submit_request(
                s,
                alice,
                services="anonymize",
                starts_at=T0 + n * HOUR,
                ends_at=T0 + (n + 2) * HOUR,
                max_rate_bps=6_000_000,
                now=T0 - HOUR,
            ).id
            for n in (0, 1)
        )
    with m.store.write() as s:
        one, two = (
            start_negotiation(s, alice, r, small, mode="user", deadline=T0, now=T0 - HOUR).id
            for r in (first, second)
        )
    assert move(world, alice, one, "accept", now=T0 - HOUR) == "agreed"
    assert move(world, alice, two, "accept", now=T0 - HOUR) == "failed"
    _, price, reason = negotiation(world, two)
    assert price is None and "6000000" in reason and "spare" in reason
    with m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Award)) == 1
        assert s.get(ServiceRequest, second).status == "brokering"
