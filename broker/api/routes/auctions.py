"""Auction routes: open, read, bid, close."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from broker import auctions, clock
from broker.actors import authenticate
from broker.api.deps import (
    ApiToken,
    CurrentActor,
    IdemKey,
    Paging,
    group_commit_of,
    id_path,
    policy_of,
    store_of,
)
from broker.api.responses import AuctionOut, AuctionSummary, BidOut, BidResult, Page
from broker.api.schemas import AuctionIn, BidIn
from broker.views import auction_view

router = APIRouter(tags=["market"])
# Bids are the busiest route by far; FastAPI tries routes in order, so they get a router of their
# own that the app includes before every other.
bids = APIRouter(tags=["market"])
AuctionId = Annotated[int, id_path("an auction's id")]
BidId = Annotated[int, id_path("a bid's id")]


@router.post("/auctions", status_code=201, response_model=AuctionOut)
def post_auction(
    body: AuctionIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        a = auctions.open_auction(
            s,
            actor,
            body.request_id,
            closes_at=body.closes_at,
            reserve_price_minor=body.reserve_price_minor,
            quantity=body.quantity,
            reputation_weight_ppm=body.reputation_weight_ppm,
            opens_at=body.opens_at,
            idempotency_key=key,
        )
        return auction_view(s, actor, a.id, policy=policy_of(request))


def _summary(a) -> dict:
    return {
        "id": a.id,
        "request_id": a.request_id,
        "status": a.status,
        "closes_at": a.closes_at,
        "quantity": a.quantity,
        "reserve_price_minor": a.reserve_price_minor,
        "currency": a.currency,
    }


@router.get("/auctions", response_model=Page[AuctionSummary])
def list_auctions(
    request: Request,
    actor: CurrentActor,
    page: Paging,
    status: Annotated[str, Query(pattern="^(open|closed|failed|cancelled)$")] = "open",
) -> dict:
    """Auctions by status (open by default), newest first, that the caller may see: a
    provider finds the open ones it could bid on here."""
    with store_of(request).read() as s:
        rows = auctions.list_auctions(
            s, actor, status=status, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, _summary)


@router.get("/auctions/{auction_id}", response_model=AuctionOut)
def get_auction(auction_id: AuctionId, request: Request, actor: CurrentActor) -> dict:
    """The auction with every visible bid and each bidder's reputation (score, count)."""
    with store_of(request).read() as s:
        return auction_view(s, actor, auction_id, policy=policy_of(request))


@bids.post("/auctions/{auction_id}/bids", status_code=201, response_model=BidOut)
async def post_bid(
    auction_id: AuctionId, body: BidIn, request: Request, token: ApiToken, key: IdemKey = None
) -> JSONResponse:
    """A sealed ask for one share; a resubmission before the close replaces it."""
    # The market's busiest write goes to the app's group commit (one writer thread, one
    # transaction for all the bids waiting, a savepoint each; see broker.groupcommit) instead
    # of a pool thread and a transaction of its own. Authentication runs in the same savepoint
    # (a read transaction of its own would cost a fifth of the bid), and the answer goes out
    # as built (its model, BidOut, is declared for the OpenAPI document and checked by the
    # tests). The bid is timed when it arrives, not when its batch runs: one received before
    # the close is not refused as late for queueing.
    arrived = clock.utcnow()

    def bid(s) -> dict:
        actor = authenticate(s, token)
        b = auctions.submit_bid(
            s,
            actor,
            auction_id,
            provider_id=body.provider_id,
            price_minor=body.price_minor,
            now=arrived,
            idempotency_key=key,
        )
        return {
            "id": b.id,
            "auction_id": b.auction_id,
            "provider_id": b.provider_id,
            "price_minor": b.price_minor,
            "revision": b.revision,
            "submitted_at": b.updated_at.isoformat(),
        }

    return JSONResponse(await group_commit_of(request).run(bid), status_code=201)


@router.get("/bids/{bid_id}", response_model=BidResult)
def get_bid(bid_id: BidId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        b = auctions.get_bid(s, actor, bid_id)
        return {
            "id": b.id,
            "auction_id": b.auction_id,
            "provider_id": b.provider_id,
            "price_minor": b.price_minor,
            "revision": b.revision,
            "rank": b.rank,
            "won": b.won,
            "payment_minor": b.payment_minor,
            "passed_over": b.passed_over,
        }


@router.post("/auctions/{auction_id}/close", response_model=AuctionOut)
def close_auction(
    auction_id: AuctionId, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """Score the bids and award the winners (a party of the auction, once it is due)."""
    with store_of(request).write() as s:
        auctions.close_auction(s, actor, auction_id, policy=policy_of(request), idempotency_key=key)
    with store_of(request).read() as s:
        return auction_view(s, actor, auction_id, policy=policy_of(request))
