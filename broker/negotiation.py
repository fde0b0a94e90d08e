"""Negotiation with other networks' providers: alternating offers with a deadline.

The buyer side is the request's user, moving by hand (``user``), or an agent moving on the
user's behalf (``agent``) within the user's limits: a maximum price, a minimum reputation of the
provider, the deadline. The seller side is the provider, answering by its price policy
(``policy``) or by hand (``manual``). Moves alternate: an offer (the opening one or a counter),
an acceptance of the other side's standing offer, or a rejection that ends the negotiation. Every
move is recorded as an `Offer` with its round.

Automated sides follow the time-dependent tactic of Faratin, Sierra & Jennings (1998): at
progress ``tau`` in [0, 1], the buyer offers ``opening + (limit - opening) * tau**(1/beta)`` and
the seller asks ``list - (list - reservation) * tau**(1/beta)`` (`broker.pricing`), never going
back on an earlier concession. Progress is the larger of the share of the time to the deadline
used up and the share of the round limit used up, so two automated sides converge in at most
``max_rounds`` offers even when they move within the same second. An automated side accepts the
standing offer when it is at least as good as the counter it would make next (Faratin's AC_next);
at ``tau = 1`` it stands at its limit, so any deal within its limit is taken. When the offers run
out without a deal the negotiation expires. The agent opens at half its limit unless told
otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.awards import make_award
from broker.brokering import lock_request, require_brokering, require_unbrokered
from broker.clock import as_utc, resolve_now
from broker.currency import check_amount
from broker.errors import (
    DeadlineExpired,
    GroupUnderfunded,
    InvalidInput,
    NegotiationClosed,
    NotEligible,
    NotFound,
    NotYours,
    NotYourTurn,
)
from broker.groups import fail, group_of_request
from broker.idempotency import once
from broker.models import Negotiation, Offer, Provider, ServiceRequest
from broker.pricing import buyer_offer, list_price, reservation_price, seller_ask
from broker.reputation import DEFAULT_POLICY, ReputationPolicy, provider_reputations
from broker.requests import why_not

SIDES = ("buyer", "seller")


def get_negotiation(session: Session, actor: Actor, negotiation_id: int) -> Negotiation:
    """A negotiation, for the request's user and the provider negotiated with."""
    negotiation = session.get(Negotiation, negotiation_id)
    if negotiation is None:
        raise NotFound("negotiation", negotiation_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(negotiation.request.user_id)
        or actor.speaks_for_provider(negotiation.provider_id)
        or actor.speaks_for_provider(negotiation.request.home_provider_id)
    ):
        raise NotYours(
            f"{actor} is not a party of negotiation {negotiation_id}",
            where=f"negotiation {negotiation_id}",
        )
    return negotiation


def start_negotiation(
    session: Session,
    actor: Actor,
    request_id: int,
    provider_id: int,
    *,
    mode: str,
    deadline: datetime,
    max_rounds: int = 20,
    max_price_minor: int | None = None,
    min_reputation_ppm: int = 0,
    opening_price_minor: int | None = None,
    buyer_beta_ppm: int = 1_000_000,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
    idempotency_key: str | None = None,
) -> Negotiation:
    """Open a negotiation of a brokering request with ``provider_id`` (of another network)."""
    now = resolve_now(now)
    request = session.get(ServiceRequest, request_id)
    if request is None:
        raise NotFound("request", request_id)
    if not actor.speaks_for_user(request.user_id):
        raise NotYours(
            f"only the request's user negotiates it; {actor} is not user {request.user_id}",
            where=f"request {request_id}",
        )
    if mode not in ("user", "agent"):
        raise InvalidInput(f"mode is 'user' or 'agent', not {mode!r}", field="mode")
    deadline = as_utc(deadline, field="deadline")
    if (
        isinstance(max_rounds, bool)
        or not isinstance(max_rounds, int)
        or not 1 <= max_rounds <= 1000
    ):
        raise InvalidInput("max_rounds is 1..1000", field="max_rounds")
    for name, value in (
        ("min_reputation_ppm", min_reputation_ppm),
        ("buyer_beta_ppm", buyer_beta_ppm),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000_000:
            raise InvalidInput("in millionths, 0..100000000", field=name)
    if buyer_beta_ppm == 0:
        raise InvalidInput("the concession exponent must be positive", field="buyer_beta_ppm")
    limit = _limit(request, max_price_minor)
    if mode == "agent" and limit is None:
        raise InvalidInput("an agent needs a maximum price", field="max_price_minor")
    if opening_price_minor is not None:
        check_amount(opening_price_minor, field="opening_price_minor")
        if limit is not None and opening_price_minor > limit:
            raise InvalidInput(
                f"the opening offer exceeds the limit {limit}", field="opening_price_minor"
            )
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFound("provider", provider_id)
    if provider.network_id == session.get_one(Provider, request.home_provider_id).network_id:
        raise NotEligible(
            f"provider {provider_id} is of the home network; negotiation is with "
            f"other networks' providers",
            where=f"provider {provider_id}",
        )
    params = {
        "request": request_id,
        "provider": provider_id,
        "mode": mode,
        "deadline": deadline,
        "rounds": max_rounds,
        "max": max_price_minor,
        "rep": min_reputation_ppm,
        "open": opening_price_minor,
        "beta": buyer_beta_ppm,
    }

    def run() -> Negotiation:
        # What can change between a first call and its retry (the clock too) is checked here,
        # after the idempotency key was looked up: a retry gets the first result, not an error.
        if deadline <= now:
            raise InvalidInput("the deadline must be in the future", field="deadline")
        lock_request(session, request_id)
        require_brokering(request, "negotiated")
        require_unbrokered(session, request)
        reason = why_not(session, provider, request, now)
        if reason is not None:
            raise NotEligible(reason, where=f"provider {provider_id}")
        reputation = provider_reputations(session, [provider_id], now=now, policy=policy)[
            provider_id
        ]
        if reputation.ppm < min_reputation_ppm:
            raise NotEligible(
                f"provider {provider_id} has reputation {reputation.score:.3f} "
                f"({reputation.count} ratings), below the minimum "
                f"{min_reputation_ppm / 1e6:.3f}",
                where=f"provider {provider_id}",
            )
        opening = opening_price_minor
        if mode == "agent" and opening is None:
            assert limit is not None  # an agent has one (checked above)
            opening = limit // 2
        negotiation = Negotiation(
            request_id=request_id,
            provider_id=provider_id,
            buyer_mode=mode,
            seller_mode=provider.policy.mode,
            currency=request.currency,
            max_price_minor=limit,
            opening_price_minor=opening,
            min_reputation_ppm=min_reputation_ppm,
            buyer_beta_ppm=buyer_beta_ppm,
            deadline=deadline,
            max_rounds=max_rounds,
            created_at=now,
        )
        session.add(negotiation)
        session.flush()
        if mode == "user" and opening is not None:
            _move(session, negotiation, "buyer", "offer", "user", opening, now)
        _advance(session, negotiation, now)
        return negotiation

    return once(session, actor, idempotency_key, "negotiation.start", params, Negotiation, run)


def _limit(request: ServiceRequest, max_price: int | None) -> int | None:
    if max_price is not None:
        check_amount(max_price, field="max_price_minor")
    limits = [x for x in (max_price, request.max_price_minor) if x is not None]
    return min(limits) if limits else None


def _moves(session: Session, negotiation: Negotiation) -> list[Offer]:
    return list(
        session.scalars(
            select(Offer).where(Offer.negotiation_id == negotiation.id).order_by(Offer.round)
        )
    )


def _move(
    session: Session,
    negotiation: Negotiation,
    side: str,
    action: str,
    actor: str,
    price: int | None,
    now: datetime,
) -> Offer:
    last = session.scalar(
        select(Offer.round)
        .where(Offer.negotiation_id == negotiation.id)
        .order_by(Offer.round.desc())
        .limit(1)
    )
    offer = Offer(
        negotiation_id=negotiation.id,
        round=(last or 0) + 1,
        side=side,
        action=action,
        actor=actor,
        price_minor=price,
        created_at=now,
    )
    session.add(offer)
    session.flush()
    return offer


def _end(negotiation: Negotiation, status: str, reason: str, now: datetime) -> None:
    negotiation.status, negotiation.reason, negotiation.ended_at = status, reason[:300], now


def _progress(negotiation: Negotiation, offers_made: int, now: datetime) -> float:
    """Share of time or rounds used up when making offer number ``offers_made + 1``."""
    total = (negotiation.deadline - negotiation.created_at).total_seconds()
    by_time = (now - negotiation.created_at).total_seconds() / total if total > 0 else 1.0
    rounds = negotiation.max_rounds
    by_rounds = offers_made / (rounds - 1) if rounds > 1 else 1.0
    return min(1.0, max(0.0, by_time, by_rounds))


def _whose_turn(moves: list[Offer]) -> str | None:
    """The side to move next, or None when either may open."""
    offers = [m for m in moves if m.action == "offer"]
    return None if not offers else SIDES[1 - SIDES.index(offers[-1].side)]


def _automated(negotiation: Negotiation, side: str) -> bool:
    return (
        (negotiation.buyer_mode == "agent")
        if side == "buyer"
        else (negotiation.seller_mode == "policy")
    )


def _agent_price(
    session: Session, negotiation: Negotiation, side: str, tau: float, own: list[int]
) -> int:
    """What the automated ``side`` would offer at progress ``tau`` (monotone concessions)."""
    if side == "buyer":
        # An agent buyer opens and stops at prices it was given (start_negotiation).
        assert negotiation.opening_price_minor is not None
        assert negotiation.max_price_minor is not None
        price = buyer_offer(
            negotiation.opening_price_minor,
            negotiation.max_price_minor,
            tau,
            negotiation.buyer_beta_ppm,
        )
        return max([price, *own])
    policy = session.get_one(Provider, negotiation.provider_id).policy
    listed = list_price(policy, negotiation.request)
    price = seller_ask(listed, reservation_price(policy, listed), tau, policy.concession_beta_ppm)
    return min([price, *own])


def _advance(session: Session, negotiation: Negotiation, now: datetime) -> None:
    """Let automated sides move until a person must, or the negotiation ends."""
    while negotiation.status == "open":
        moves = _moves(session, negotiation)
        turn = _whose_turn(moves)
        if turn is None:
            turn = "buyer" if negotiation.buyer_mode == "agent" else "seller"
        if not _automated(negotiation, turn):
            return
        offers = [m for m in moves if m.action == "offer"]
        who = "agent" if turn == "buyer" else "policy"
        own = [m.price_minor for m in offers if m.side == turn and m.price_minor is not None]
        mine = _agent_price(
            session, negotiation, turn, _progress(negotiation, len(offers), now), own
        )
        standing = offers[-1].price_minor if offers else None
        if standing is not None and (standing <= mine if turn == "buyer" else standing >= mine):
            _agree(session, negotiation, turn, who, standing, now)
        elif len(offers) >= negotiation.max_rounds:
            _move(session, negotiation, turn, "expire", "system", None, now)
            _end(
                negotiation, "expired", f"no agreement within {negotiation.max_rounds} offers", now
            )
        else:
            _move(session, negotiation, turn, "offer", who, mine, now)


def _agree(
    session: Session, negotiation: Negotiation, side: str, who: str, price: int, now: datetime
) -> None:
    _move(session, negotiation, side, "accept", who, price, now)
    request = lock_request(session, negotiation.request_id)
    if request.status != "brokering":
        _end(negotiation, "failed", f"request {request.id} is {request.status} already", now)
        return
    # A negotiation holds no capacity: the provider may have booked its room elsewhere since
    # the start. Checked again under its row lock (after the request's, as a close does).
    provider = session.execute(
        select(Provider)
        .where(Provider.id == negotiation.provider_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    reason = why_not(session, provider, request, now)
    if reason is not None:
        _end(negotiation, "failed", f"the provider can no longer take it: {reason}", now)
        session.flush()
        return
    try:
        # make_award checks the group's pledges before it changes anything.
        make_award(
            session,
            request,
            negotiation.provider_id,
            price,
            source="negotiation",
            negotiation_id=negotiation.id,
            now=now,
        )
    except GroupUnderfunded as exc:
        _end(negotiation, "failed", str(exc), now)
        group = group_of_request(session, request.id)
        assert group is not None  # only a group's request is underfunded
        fail(group, f"negotiation {negotiation.id}: {exc}", now)
        request.status, request.reason = "failed", f"group could not pay: {exc}"[:300]
        session.flush()
        return
    negotiation.agreed_price_minor = price
    _end(negotiation, "agreed", f"{side} accepted {price} {negotiation.currency}", now)
    session.flush()


def _side_of(negotiation: Negotiation, actor: Actor) -> str:
    """The side ``actor`` moves for by hand; an automated side takes no hand moves."""
    if actor.speaks_for_user(negotiation.request.user_id) and negotiation.buyer_mode == "user":
        return "buyer"
    if actor.speaks_for_provider(negotiation.provider_id) and negotiation.seller_mode == "manual":
        return "seller"
    raise NotYours(
        f"{actor} does not move by hand in negotiation {negotiation.id} (the buyer "
        f"is {negotiation.buyer_mode}-driven, the seller {negotiation.seller_mode}"
        f"-driven)",
        where=f"negotiation {negotiation.id}",
    )


def _check_open(negotiation: Negotiation, now: datetime) -> None:
    where = f"negotiation {negotiation.id}"
    if negotiation.status != "open":
        raise NegotiationClosed(f"it ended {negotiation.status}: {negotiation.reason}", where=where)
    if now >= negotiation.deadline:
        raise DeadlineExpired(
            f"the deadline {negotiation.deadline.isoformat()} has passed", where=where
        )


def act(
    session: Session,
    actor: Actor,
    negotiation_id: int,
    action: str,
    *,
    price_minor: int | None = None,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> Negotiation:
    """A move by hand: ``offer`` (opening or counter, at ``price_minor``), ``accept`` (the
    other side's standing offer) or ``reject``. Automated sides answer in the same transaction.
    """
    now = resolve_now(now)
    negotiation = get_negotiation(session, actor, negotiation_id)
    where = f"negotiation {negotiation_id}"
    side = _side_of(negotiation, actor)
    if action not in ("offer", "accept", "reject"):
        raise InvalidInput(f"action is offer, accept or reject, not {action!r}", field="action")
    params = {"negotiation": negotiation_id, "action": action, "price": price_minor}

    def run() -> Negotiation:
        _check_open(negotiation, now)
        moves = _moves(session, negotiation)
        offers = [m for m in moves if m.action == "offer"]
        turn = _whose_turn(moves)
        if turn is not None and turn != side:
            raise NotYourTurn(f"the {side} made the last offer; wait for the {turn}", where=where)
        who = "user" if side == "buyer" else "provider"
        if action == "reject":
            _move(session, negotiation, side, "reject", who, None, now)
            _end(negotiation, "rejected", f"{side} rejected", now)
        elif action == "accept":
            if not offers:
                raise NotYourTurn("there is no offer to accept yet", where=where)
            price = offers[-1].price_minor
            assert price is not None  # an offer has a price
            limit = negotiation.max_price_minor
            if (
                side == "buyer"
                and limit is not None
                and price > limit
                and group_of_request(session, negotiation.request_id) is None
            ):
                raise InvalidInput(
                    f"the standing offer {price} is above your limit {limit}",
                    where=where,
                    field="action",
                )
            _agree(session, negotiation, side, who, price, now)
        else:
            offered = check_amount(price_minor, field="price_minor")
            if len(offers) >= negotiation.max_rounds:
                raise DeadlineExpired(
                    f"all {negotiation.max_rounds} offers are used up; "
                    f"accept or reject the standing offer",
                    where=where,
                )
            limit = negotiation.max_price_minor
            if side == "buyer" and limit is not None and offered > limit:
                raise InvalidInput(
                    f"{offered} is above the limit {limit}", where=where, field="price_minor"
                )
            _move(session, negotiation, side, "offer", who, offered, now)
        _advance(session, negotiation, now)
        session.flush()
        return negotiation

    return once(session, actor, idempotency_key, "negotiation.act", params, Negotiation, run)


def expire_overdue(session: Session, *, now: datetime | None = None) -> int:
    """Mark open negotiations past their deadline ``expired``; returns how many."""
    now = resolve_now(now)
    # An UPDATE's result is a CursorResult (rowcount); execute() is typed for any statement.
    result = cast(
        CursorResult,
        session.execute(
            update(Negotiation)
            .where(Negotiation.status == "open", Negotiation.deadline <= now)
            .values(status="expired", ended_at=now, reason="the deadline passed")
        ),
    )
    return result.rowcount or 0
