"""Market routes: requests, groups, negotiations, auctions and bids."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from broker import auctions, clock, groups, negotiation, requests
from broker.actors import authenticate
from broker.api.app import (
    ApiToken,
    CurrentActor,
    IdemKey,
    group_commit_of,
    policy_of,
    store_of,
)
from broker.api.schemas import AuctionIn, BidIn, MoveIn, NegotiationIn, PledgeIn, RequestIn
from broker.errors import DeadlineExpired
from broker.views import auction_view, negotiation_view, provider_view, request_view

router = APIRouter(tags=["market"])
# Bids are the busiest route by far; FastAPI tries routes in order, so they get a router of their
# own that the app includes before every other.
bids = APIRouter(tags=["market"])


def _request(s, r) -> dict:
    group = groups.group_of_request(s, r.id)
    return dict(request_view(r), group_id=group.id if group else None)


@router.post("/requests", status_code=201)
def post_request(body: RequestIn, request: Request, actor: CurrentActor,
                 key: IdemKey = None) -> dict:
    """Ask the home provider for a service; it serves it or opens it to brokering."""
    with store_of(request).write() as s:
        r = requests.submit_request(
            s, actor, services=body.services, device_id=body.device_id,
            volume_bytes=body.volume_bytes, starts_at=body.starts_at, ends_at=body.ends_at,
            min_rate_bps=body.min_rate_bps, max_rate_bps=body.max_rate_bps,
            data_cap_bytes=body.data_cap_bytes, max_price_minor=body.max_price_minor,
            currency=body.currency, members=[m.model_dump() for m in body.members],
            group=body.group, idempotency_key=key)
        return _request(s, r)


@router.get("/requests")
def get_requests(request: Request, actor: CurrentActor) -> list[dict]:
    with store_of(request).read() as s:
        return [_request(s, r) for r in requests.list_requests(s, actor)]


@router.get("/requests/{request_id}")
def get_request(request_id: int, request: Request,
                actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return _request(s, requests.get_request(s, actor, request_id))


@router.get("/requests/{request_id}/candidates")
def get_candidates(request_id: int, request: Request,
                   actor: CurrentActor) -> list[dict]:
    """Providers of other networks that could take the request, with their reputations."""
    with store_of(request).read() as s:
        r = requests.get_request(s, actor, request_id)
        return [provider_view(s, p.id, policy=policy_of(request))
                for p in requests.eligible_providers(s, r)]


@router.post("/requests/{request_id}/cancel")
def cancel(request_id: int, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).write() as s:
        return _request(s, requests.cancel_request(s, actor, request_id))


@router.get("/groups/{group_id}")
def get_group(group_id: int, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return groups.group_view(s, actor, group_id)


@router.post("/groups/{group_id}/pledges", status_code=201)
def post_pledge(group_id: int, body: PledgeIn, request: Request,
                actor: CurrentActor, key: IdemKey = None) -> dict:
    with store_of(request).write() as s:
        groups.pledge(s, actor, group_id, body.max_minor, idempotency_key=key)
        return groups.group_view(s, actor, group_id)


@router.delete("/groups/{group_id}/pledges/mine")
def delete_pledge(group_id: int, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).write() as s:
        groups.withdraw(s, actor, group_id)
        return groups.group_view(s, actor, group_id)


@router.post("/groups/{group_id}/close")
def close_group(group_id: int, request: Request, actor: CurrentActor) -> dict:
    """The organizer closes pledging; the request is decided with the pledges as budget."""
    with store_of(request).write() as s:
        return _request(s, requests.close_pledges(s, actor, group_id))


@router.post("/negotiations", status_code=201)
def post_negotiation(body: NegotiationIn, request: Request,
                     actor: CurrentActor, key: IdemKey = None) -> dict:
    with store_of(request).write() as s:
        n = negotiation.start_negotiation(
            s, actor, body.request_id, body.provider_id, mode=body.mode, deadline=body.deadline,
            max_rounds=body.max_rounds, max_price_minor=body.max_price_minor,
            min_reputation_ppm=body.min_reputation_ppm,
            opening_price_minor=body.opening_price_minor, buyer_beta_ppm=body.buyer_beta_ppm,
            policy=policy_of(request), idempotency_key=key)
        return negotiation_view(n)


@router.get("/negotiations/{negotiation_id}")
def get_negotiation(negotiation_id: int, request: Request,
                    actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return negotiation_view(negotiation.get_negotiation(s, actor, negotiation_id))


@router.post("/negotiations/{negotiation_id}/moves")
def post_move(negotiation_id: int, body: MoveIn, request: Request,
              actor: CurrentActor, key: IdemKey = None) -> dict:
    """Offer (or counter), accept the standing offer, or reject; automated sides answer."""
    store = store_of(request)
    try:
        with store.write() as s:
            n = negotiation.act(s, actor, negotiation_id, body.action,
                                price_minor=body.price_minor, idempotency_key=key)
            return negotiation_view(n)
    except DeadlineExpired:
        with store.write() as s:
            negotiation.expire_overdue(s)
        raise


@router.post("/auctions", status_code=201)
def post_auction(body: AuctionIn, request: Request, actor: CurrentActor,
                 key: IdemKey = None) -> dict:
    with store_of(request).write() as s:
        a = auctions.open_auction(
            s, actor, body.request_id, closes_at=body.closes_at,
            reserve_price_minor=body.reserve_price_minor, quantity=body.quantity,
            reputation_weight_ppm=body.reputation_weight_ppm, opens_at=body.opens_at,
            idempotency_key=key)
        return auction_view(s, actor, a.id, policy=policy_of(request))


@router.get("/auctions")
def list_auctions(request: Request, _actor: CurrentActor, status: str = "open") -> list[dict]:
    """Auctions by status (open by default): what providers look at to find work."""
    with store_of(request).read() as s:
        return [{"id": a.id, "request_id": a.request_id, "status": a.status,
                 "closes_at": a.closes_at.isoformat(), "quantity": a.quantity,
                 "reserve_price_minor": a.reserve_price_minor, "currency": a.currency}
                for a in auctions.list_auctions(s, status=status)]


@router.get("/auctions/{auction_id}")
def get_auction(auction_id: int, request: Request, actor: CurrentActor) -> dict:
    """The auction with every visible bid and each bidder's reputation (score, count)."""
    with store_of(request).read() as s:
        return auction_view(s, actor, auction_id, policy=policy_of(request))


@bids.post("/auctions/{auction_id}/bids", status_code=201)
async def post_bid(auction_id: int, body: BidIn, request: Request, token: ApiToken,
                   key: IdemKey = None) -> dict:
    """A sealed ask for one block; a resubmission before the close replaces it."""
    # The market's busiest write goes to the app's group commit (one writer thread, one
    # transaction for all the bids waiting, a savepoint each; see broker.groupcommit) instead
    # of a pool thread and a transaction of its own. Authentication runs in the same savepoint
    # (a read transaction of its own would cost a fifth of the bid), and the answer goes out
    # as built, without response-model validation. The bid is timed when it arrives, not when
    # its batch runs: one received before the close is not refused as late for queueing.
    arrived = clock.utcnow()

    def bid(s) -> dict:
        actor = authenticate(s, token)
        b = auctions.submit_bid(s, actor, auction_id, provider_id=body.provider_id,
                                price_minor=body.price_minor, now=arrived,
                                idempotency_key=key)
        return {"id": b.id, "auction_id": b.auction_id, "provider_id": b.provider_id,
                "price_minor": b.price_minor, "revision": b.revision,
                "submitted_at": b.updated_at.isoformat()}

    return JSONResponse(await group_commit_of(request).run(bid), status_code=201)


@router.get("/bids/{bid_id}")
def get_bid(bid_id: int, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        b = auctions.get_bid(s, actor, bid_id)
        return {"id": b.id, "auction_id": b.auction_id, "provider_id": b.provider_id,
                "price_minor": b.price_minor, "revision": b.revision, "rank": b.rank,
                "won": b.won, "payment_minor": b.payment_minor}


@router.post("/auctions/{auction_id}/close")
def close_auction(auction_id: int, request: Request,
                  actor: CurrentActor) -> dict:
    with store_of(request).write() as s:
        auctions.close_auction(s, actor, auction_id, policy=policy_of(request))
    with store_of(request).read() as s:
        return auction_view(s, actor, auction_id, policy=policy_of(request))
