"""Negotiation routes: alternating offers between a request's buyer and one provider."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from broker import negotiation
from broker.api.deps import CurrentActor, IdemKey, id_path, policy_of, store_of
from broker.api.responses import NegotiationOut
from broker.api.schemas import MoveIn, NegotiationIn
from broker.errors import DeadlineExpired
from broker.views import negotiation_view

router = APIRouter(tags=["market"])
NegotiationId = Annotated[int, id_path("a negotiation's id")]


@router.post("/negotiations", status_code=201, response_model=NegotiationOut)
def post_negotiation(
    body: NegotiationIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        n = negotiation.start_negotiation(
            s,
            actor,
            body.request_id,
            body.provider_id,
            mode=body.mode,
            deadline=body.deadline,
            max_rounds=body.max_rounds,
            max_price_minor=body.max_price_minor,
            min_reputation_ppm=body.min_reputation_ppm,
            opening_price_minor=body.opening_price_minor,
            buyer_beta_ppm=body.buyer_beta_ppm,
            policy=policy_of(request),
            idempotency_key=key,
        )
        return negotiation_view(n)


@router.get("/negotiations/{negotiation_id}", response_model=NegotiationOut)
def get_negotiation(negotiation_id: NegotiationId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return negotiation_view(negotiation.get_negotiation(s, actor, negotiation_id))


@router.post("/negotiations/{negotiation_id}/moves", response_model=NegotiationOut)
def post_move(
    negotiation_id: NegotiationId,
    body: MoveIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Offer (or counter), accept the standing offer, or reject; automated sides answer."""
    store = store_of(request)
    try:
        with store.write() as s:
            n = negotiation.act(
                s,
                actor,
                negotiation_id,
                body.action,
                price_minor=body.price_minor,
                idempotency_key=key,
            )
            return negotiation_view(n)
    except DeadlineExpired:
        with store.write() as s:
            negotiation.expire_overdue(s)
        raise
