"""Read-only views as plain dicts (JSON-ready) for the API and the command line.

Reputations appear beside every provider in auction, provider and user views, with their counts,
so that a buyer sees who has delivered well before (and a provider who has paid well); beside a
provider's, its measured delivery record (`broker.delivery_record`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.auctions import get_auction, may_view, sees_recipients, visible_bids_query
from broker.capacity import share_rate
from broker.clock import resolve_now
from broker.delivery_record import delivery_records
from broker.errors import NotFound, NotYours
from broker.models import Auction, Award, Bid, Negotiation, Provider, ServiceRequest, User
from broker.pricing import required_rate_bps
from broker.reputation import (
    DEFAULT_POLICY,
    ReputationPolicy,
    provider_reputations,
    user_reputations,
)
from broker.scoring import score, score_decimal


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def request_view(request: ServiceRequest) -> dict:
    return {
        "id": request.id,
        "user_id": request.user_id,
        "device_id": request.device_id,
        "home_provider_id": request.home_provider_id,
        "services": list(request.service_chain),
        "volume_bytes": request.volume_bytes,
        "starts_at": _iso(request.starts_at),
        "ends_at": _iso(request.ends_at),
        "min_rate_bps": request.min_rate_bps,
        "max_rate_bps": request.max_rate_bps,
        "data_cap_bytes": request.data_cap_bytes,
        "max_price_minor": request.max_price_minor,
        "currency": request.currency,
        "bandwidth_grant_pct": request.bandwidth_grant_pct or 0,
        "base_max_rate_bps": request.base_max_rate_bps,
        "source": request.source,
        "sink": request.sink,
        "sealed_params": request.sealed_params.split(",") if request.sealed_params else [],
        "status": request.status,
        "reason": request.reason,
        "members": [m.describe() for m in request.members],
        "created_at": _iso(request.created_at),
    }


def award_view(award: Award) -> dict:
    return {
        "id": award.id,
        "request_id": award.request_id,
        "provider_id": award.provider_id,
        "home_provider_id": award.home_provider_id,
        "source": award.source,
        "negotiation_id": award.negotiation_id,
        "auction_id": award.auction_id,
        "share": award.share,
        "shares": award.shares,
        "price_minor": award.price_minor,
        "currency": award.currency,
        "services": award.services.split(","),
        "volume_bytes": award.volume_bytes,
        "starts_at": _iso(award.starts_at),
        "ends_at": _iso(award.ends_at),
        "min_rate_bps": award.min_rate_bps,
        "max_rate_bps": award.max_rate_bps,
        "data_cap_bytes": award.data_cap_bytes,
        "status": award.status,
        "payers": [{"user_id": p.user_id, "share_minor": p.share_minor} for p in award.payers],
        "job": None if award.job is None else {"id": award.job.id, "status": award.job.status},
        "created_at": _iso(award.created_at),
    }


def job_view(job) -> dict:
    return {
        "id": job.id,
        "award_id": job.award_id,
        "provider_id": job.provider_id,
        "status": job.status,
        "spec": job.spec,
        "updated_at": _iso(job.updated_at),
        "token": job.token,
        "daemon": job.daemon,
        "lease_expires_at": _iso(job.lease_expires_at),
    }


def negotiation_view(negotiation: Negotiation, now: datetime | None = None) -> dict:
    now = resolve_now(now)
    status = negotiation.status
    if status == "open" and now >= negotiation.deadline:
        status = "expired"
    return {
        "id": negotiation.id,
        "request_id": negotiation.request_id,
        "provider_id": negotiation.provider_id,
        "buyer_mode": negotiation.buyer_mode,
        "seller_mode": negotiation.seller_mode,
        "currency": negotiation.currency,
        "deadline": _iso(negotiation.deadline),
        "max_rounds": negotiation.max_rounds,
        "status": status,
        "reason": negotiation.reason,
        "agreed_price_minor": negotiation.agreed_price_minor,
        "moves": [
            {
                "round": o.round,
                "side": o.side,
                "action": o.action,
                "by": o.actor,
                "price_minor": o.price_minor,
                "at": _iso(o.created_at),
            }
            for o in negotiation.offers
        ],
    }


_BID_COLUMNS = (
    Bid.id,
    Bid.provider_id,
    Bid.price_minor,
    Bid.revision,
    Bid.updated_at,
    Bid.rank,
    Bid.won,
    Bid.payment_minor,
    Bid.reputation_ppm,
    Bid.rating_count,
    Bid.passed_over,
    Bid.share,
)


def auction_view(
    session: Session,
    actor: Actor,
    auction_id: int,
    *,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> dict:
    """The auction's terms and, for each bid the actor may see, the bidder's reputation.

    Who sees it at all: the request's side, the bidders, and while it is open the providers
    that could bid (`broker.auctions.may_view`). Every viewer sees the buyer's payment
    reputation. Before the close bids are sealed: a provider sees its own, the buyer sees who
    bid and their reputations but no prices. After the close every party sees all bids with
    score, rank and payment, and the reputation each was scored with. The recipients are shown
    to the request's side, and to the winners once it closed.
    """
    now = resolve_now(now)
    auction: Auction = get_auction(session, auction_id)
    if not may_view(session, actor, auction, now):
        raise NotYours(
            f"{actor} is not a party of auction {auction_id} and cannot bid on it",
            where=f"auction {auction_id}",
        )
    request = auction.request
    # Bare columns, not Bid objects: a closed auction may show thousands of bids.
    query = visible_bids_query(session, actor, auction, *_BID_COLUMNS)
    bids = (
        []
        if query is None
        else session.execute(
            query.join(Provider, Provider.id == Bid.provider_id).add_columns(Provider.name)
        ).all()
    )
    open_ = auction.status == "open"
    of_auction = Bid.auction_id == auction.id
    bidders = (
        session.execute(
            select(Bid.provider_id, Provider.name)
            .join(Provider, Provider.id == Bid.provider_id)
            .where(of_auction)
            .order_by(Bid.id)
        ).all()
        if open_
        and (
            actor.speaks_for_user(request.user_id)
            or actor.is_admin
            or actor.speaks_for_provider(auction.auctioneer_id)
        )
        else []
    )
    # Every bidder's reputation in one go (in the database, not as a long IN list) when the
    # view shows them all; a provider looking at its own bid in an open auction needs its own.
    everyone = not open_ or bool(bidders)
    shown_ids = (
        select(Bid.provider_id).where(of_auction) if everyone else {b.provider_id for b in bids}
    )
    reps = (
        provider_reputations(session, shown_ids, now=now, policy=policy) if bids or bidders else {}
    )
    # The measured delivery record beside the ratings (broker.delivery_record).
    records = delivery_records(session, shown_ids) if bids or bidders else {}
    weight = auction.reputation_weight_ppm
    shown = []
    for (
        bid_id,
        provider_id,
        price,
        revision,
        submitted,
        rank,
        won,
        payment,
        scored_with,
        rating_count,
        passed_over,
        share,
        name,
    ) in bids:
        row = {
            "bid_id": bid_id,
            "provider_id": provider_id,
            "provider": name,
            "price_minor": price,
            "revision": revision,
            "submitted_at": _iso(submitted),
            "reputation": reps[provider_id].as_dict(),
            "delivery": records[provider_id].as_dict(),
        }
        if not open_ and scored_with is not None:
            row.update(
                rank=rank,
                won=won,
                payment_minor=payment,
                passed_over=passed_over,
                share=share,
                reputation_at_close={"score": scored_with / 1e6, "count": rating_count},
                score=str(score_decimal(score(price, weight, scored_with))),
            )
        shown.append(row)
    block: dict[str, Any] = {
        "services": list(request.service_chain),
        "starts_at": _iso(request.starts_at),
        "ends_at": _iso(request.ends_at),
        "min_rate_bps": request.min_rate_bps,
        "max_rate_bps": request.max_rate_bps,
        "share_rate_bps": share_rate(required_rate_bps(request), auction.quantity),
        "data_cap_bytes": request.data_cap_bytes,
        "home_network_id": session.get_one(Provider, request.home_provider_id).network_id,
    }
    if sees_recipients(session, actor, auction):
        block["members"] = [m.describe() for m in request.members]
    buyer = user_reputations(session, [request.user_id], now=now, policy=policy)[request.user_id]
    return {
        "id": auction.id,
        "request_id": request.id,
        "auctioneer_id": auction.auctioneer_id,
        "status": auction.status,
        "reason": auction.reason,
        "quantity": auction.quantity,
        "reserve_price_minor": auction.reserve_price_minor,
        "currency": auction.currency,
        "reputation_weight": auction.reputation_weight_ppm / 1e6,
        "opens_at": _iso(auction.opens_at),
        "closes_at": _iso(auction.closes_at),
        "closed_at": _iso(auction.closed_at),
        "block": block,
        "buyer_reputation": buyer.as_dict(),
        "bid_count": session.scalar(select(func.count()).select_from(Bid).where(of_auction)),
        "bidders": [
            {
                "provider_id": i,
                "provider": name,
                "reputation": reps[i].as_dict(),
                "delivery": records[i].as_dict(),
            }
            for i, name in bidders
        ],
        "bids": shown,
    }


def provider_view(
    session: Session,
    provider_id: int,
    *,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> dict:
    """A provider's public card: network, services, capacity, reputation from ratings and the
    measured delivery record (anyone may read)."""
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFound("provider", provider_id)
    rep = provider_reputations(session, [provider_id], now=now, policy=policy)[provider_id]
    return {
        "id": provider.id,
        "name": provider.name,
        "network_id": provider.network_id,
        "services": list(provider.service_names),
        "capacity_bps": provider.capacity_bps,
        "currency": provider.policy.currency,
        "negotiates": provider.policy.mode,
        "reputation": rep.as_dict(),
        "delivery": delivery_records(session, [provider_id])[provider_id].as_dict(),
    }


def user_view(
    session: Session,
    actor: Actor,
    user_id: int,
    *,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> dict:
    """A user with its payment reputation: for itself, its home provider and admins."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(user_id)
        or actor.speaks_for_provider(user.home_provider_id)
    ):
        raise NotYours(f"{actor} may not see user {user_id}", where=f"user {user_id}")
    rep = user_reputations(session, [user_id], now=now, policy=policy)[user_id]
    return {
        "id": user.id,
        "name": user.name,
        "home_provider_id": user.home_provider_id,
        "devices": [{"id": d.id, "name": d.name} for d in user.devices],
        "phone_numbers": [
            {"id": p.id, "e164": p.e164, "device_id": p.device_id} for p in user.phone_numbers
        ],
        "reputation": rep.as_dict(),
    }
