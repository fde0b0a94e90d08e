"""Negotiations in the console: a request's negotiations and the form to open one, the offer
history, and the buttons to counter, accept or reject (`broker.negotiation`, as the API)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import false, select

from broker import negotiation, requests
from broker.api.deps import id_path, policy_of, store_of
from broker.clock import utcnow
from broker.console.forms import Form
from broker.console.market import RequestId, request_page_with
from broker.console.site import ConsoleRoute, Posted, Signed, provider_names, render
from broker.errors import Conflict, InvalidInput
from broker.models import Negotiation, Provider, ServiceRequest
from broker.views import negotiation_view

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
NegotiationId = Annotated[int, id_path("a negotiation's id")]
LISTED = 50


@router.get("/negotiations")
def negotiation_list(request: Request, signed: Signed) -> Response:
    actor = signed.actor
    query = (
        select(Negotiation.id)
        .join(ServiceRequest, ServiceRequest.id == Negotiation.request_id)
        .order_by(Negotiation.id.desc())
        .limit(LISTED)
    )
    if actor.user_id is not None:
        query = query.where(ServiceRequest.user_id == actor.user_id)
    elif actor.provider_ids:
        ids = sorted(actor.provider_ids)
        query = query.where(
            Negotiation.provider_id.in_(ids) | ServiceRequest.home_provider_id.in_(ids)
        )
    elif not actor.is_admin:
        query = query.where(false())
    with store_of(request).read() as s:
        rows = [
            negotiation_view(negotiation.get_negotiation(s, actor, i)) for i in s.scalars(query)
        ]
        names = provider_names(s, [n["provider_id"] for n in rows])
    return render(request, "negotiations.html", signed, rows=rows, names=names)


def _page(request: Request, signed, negotiation_id: int, **extra) -> Response:
    actor = signed.actor
    with store_of(request).read() as s:
        n = negotiation.get_negotiation(s, actor, negotiation_id)
        shown = negotiation_view(n)
        by_hand = (actor.speaks_for_user(n.request.user_id) and n.buyer_mode == "user") or (
            actor.speaks_for_provider(n.provider_id) and n.seller_mode == "manual"
        )
        side = "buyer" if actor.speaks_for_user(n.request.user_id) else "seller"
        provider = s.get_one(Provider, n.provider_id).name
    offers = [m for m in shown["moves"] if m["action"] == "offer"]
    turn = None if not offers else ("seller" if offers[-1]["side"] == "buyer" else "buyer")
    return render(
        request,
        "negotiation.html",
        signed,
        status=extra.pop("status", 200),
        n=shown,
        provider=provider,
        may_move=by_hand and shown["status"] == "open" and turn in (None, side),
        standing=offers[-1] if offers and turn == side else None,
        form=extra.pop("form", None) or Form({}),
        message=extra.pop("message", ""),
    )


@router.get("/negotiations/{negotiation_id}")
def negotiation_page(request: Request, signed: Signed, negotiation_id: NegotiationId) -> Response:
    return _page(request, signed, negotiation_id)


@router.post("/negotiations/{negotiation_id}/moves")
def move(request: Request, signed: Signed, form: Posted, negotiation_id: NegotiationId) -> Response:
    action = form.text("action")
    with store_of(request).read() as s:
        currency = negotiation.get_negotiation(s, signed.actor, negotiation_id).currency
    price = form.money("price", currency, required=True) if action == "offer" else None
    if not form.errors:
        try:
            with store_of(request).write() as s:
                negotiation.act(s, signed.actor, negotiation_id, action, price_minor=price)
        except InvalidInput as exc:
            form.refuse("price" if exc.field == "price_minor" else "_form", exc.message)
        except Conflict as exc:
            return _page(request, signed, negotiation_id, status=409, message=exc.message)
    if form.errors:
        return _page(request, signed, negotiation_id, form=form, status=422)
    return RedirectResponse(f"/negotiations/{negotiation_id}", status_code=303)


# The domain's field names of `negotiation.start_negotiation` to the form's.
_NEGOTIATION_FIELDS = {
    "provider_id": "provider_id",
    "deadline": "deadline_in",
    "max_price_minor": "limit",
    "opening_price_minor": "opening_price",
    "mode": "mode",
}


@router.post("/requests/{request_id}/negotiation")
def negotiation_open(
    request: Request, signed: Signed, form: Posted, request_id: RequestId
) -> Response:
    with store_of(request).read() as s:
        currency = requests.get_request(s, signed.actor, request_id).currency
    provider_id = form.integer("provider_id", required=True)
    minutes = form.integer("deadline_in", required=True)
    mode = form.text("mode") or "user"
    limit = form.money("limit", currency)
    opening = form.money("opening_price", currency)
    if not form.errors:
        assert provider_id is not None and minutes is not None
        try:
            with store_of(request).write() as s:
                made = negotiation.start_negotiation(
                    s,
                    signed.actor,
                    request_id,
                    provider_id,
                    mode=mode,
                    deadline=utcnow() + timedelta(minutes=minutes),
                    max_price_minor=limit,
                    opening_price_minor=opening,
                    policy=policy_of(request),
                )
                made_id = made.id
        except InvalidInput as exc:
            form.refuse(_NEGOTIATION_FIELDS.get(exc.field or "", "_form"), exc.message)
        except Conflict as exc:
            form.refuse("_form", exc.message)
    if form.errors:
        return request_page_with(request, signed, request_id, negotiation_form=form, status=422)
    return RedirectResponse(f"/negotiations/{made_id}", status_code=303)
