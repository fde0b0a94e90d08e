"""A request is brokered one way at a time, and decided once.

Every step that starts brokering a request (an auction, a negotiation) or ends it (an award, a
cancel, a close) first takes the request's row lock (`lock_request`), then checks its state:
on PostgreSQL two such steps on one request run one after the other, on SQLite every writer
does anyway. Under the lock, `require_brokering` refuses a request that is no longer brokering
and `require_unbrokered` one that already has an open auction or negotiation; partial unique
indexes on open auctions and open negotiations, and the unique (request_id, share) of awards,
hold the same rules in the database itself.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.errors import AlreadyBrokering, NotFound, WrongState
from broker.models import Auction, Negotiation, ServiceRequest


def lock_request(session: Session, request_id: int) -> ServiceRequest:
    """The request, read afresh under its row lock (``FOR UPDATE``; SQLite: the write lock)."""
    request = session.scalar(
        select(ServiceRequest)
        .where(ServiceRequest.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if request is None:
        raise NotFound("request", request_id)
    return request


def require_brokering(request: ServiceRequest, doing: str) -> None:
    if request.status != "brokering":
        raise WrongState(
            f"request {request.id} is {request.status}; only a brokering request can be {doing}",
            where=f"request {request.id}",
        )


def require_unbrokered(session: Session, request: ServiceRequest) -> None:
    """Refuse (409) when an auction or a negotiation of the request is still open."""
    auction = session.scalar(
        select(Auction.id).where(Auction.request_id == request.id, Auction.status == "open")
    )
    if auction is not None:
        raise AlreadyBrokering(
            f"auction {auction} of request {request.id} is open; close or wait for it first",
            where=f"request {request.id}",
        )
    negotiation = session.scalar(
        select(Negotiation.id).where(
            Negotiation.request_id == request.id, Negotiation.status == "open"
        )
    )
    if negotiation is not None:
        raise AlreadyBrokering(
            f"negotiation {negotiation} of request {request.id} is open; end it first",
            where=f"request {request.id}",
        )


def stop_brokering(session: Session, request: ServiceRequest, reason: str, now) -> None:
    """End every open auction and negotiation of ``request`` (it was cancelled): no bid or
    move is taken on them from now on, and none of them awards anything."""
    for auction in session.scalars(
        select(Auction).where(Auction.request_id == request.id, Auction.status == "open")
    ):
        auction.status, auction.reason, auction.closed_at = "cancelled", reason[:300], now
    for negotiation in session.scalars(
        select(Negotiation).where(
            Negotiation.request_id == request.id, Negotiation.status == "open"
        )
    ):
        negotiation.status, negotiation.reason = "failed", reason[:300]
        negotiation.ended_at = now
    session.flush()
