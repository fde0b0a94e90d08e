"""Payment routes: a user's cards (add, list, delete), paying a statement, a user's payments,
a statement's payment state, refunds by the home provider."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response

from broker import payment_methods as methods
from broker import payments as pm
from broker import refunds, statements
from broker.api.deps import CurrentActor, IdemKey, Paging, id_path, store_of
from broker.api.payment_models import (
    ConfirmIn,
    PayIn,
    PaymentMethodIn,
    PaymentMethodList,
    PaymentMethodOut,
    PaymentOut,
    PaymentStateOut,
    RefundIn,
    RefundOut,
)
from broker.api.responses import Page
from broker.payment_gateway import gateway

router = APIRouter(tags=["payments"])
UserId = Annotated[int, id_path("a user's id")]
StatementId = Annotated[int, id_path("a statement's id")]


@router.post("/users/{user_id}/payment-methods", status_code=201, response_model=PaymentMethodOut)
def add_payment_method(
    user_id: UserId,
    body: PaymentMethodIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Keep a card for the user (the user itself): by the gateway's token, or by number and
    expiry, checked (Luhn, length, brand, expiry) and tokenized; the number is not kept."""
    store = store_of(request)
    gw = gateway(body.gateway, store)
    with store.write() as s:
        method = methods.add_method(
            s,
            actor,
            user_id,
            gw,
            token=body.token,
            card_number=body.card_number,
            exp_month=body.exp_month,
            exp_year=body.exp_year,
            make_default=body.make_default,
            idempotency_key=key,
        )
        return methods.method_view(method)


@router.get("/users/{user_id}/payment-methods", response_model=PaymentMethodList)
def list_payment_methods(user_id: UserId, request: Request, actor: CurrentActor) -> dict:
    """The user's cards (the user only): brand, last four digits, expiry, which is default."""
    with store_of(request).read() as s:
        return {"items": [methods.method_view(m) for m in methods.list_methods(s, actor, user_id)]}


@router.delete(
    "/users/{user_id}/payment-methods/{method_id}", status_code=204, response_class=Response
)
def delete_payment_method(
    user_id: UserId,
    method_id: Annotated[int, id_path("a payment method's id")],
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> Response:
    """Forget a card; one forgotten already is not an error (a retry is safe)."""
    with store_of(request).write() as s:
        methods.delete_method(s, actor, user_id, method_id)
    return Response(status_code=204)


@router.get("/users/{user_id}/payments", response_model=Page[PaymentOut])
def list_payments(user_id: UserId, request: Request, actor: CurrentActor, page: Paging) -> dict:
    """The user's payments, oldest first (the user, its home provider, an admin)."""
    with store_of(request).read() as s:
        rows = pm.list_payments(s, actor, user_id, after=page.after, limit=page.limit + 1)
        return page.answer(rows, pm.payment_view)


@router.post("/statements/{statement_id}/payments", status_code=201, response_model=PaymentOut)
def pay_statement(
    statement_id: StatementId,
    body: PayIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Pay (part of) a finalized statement with one of the user's cards (the user only). The
    answer is the payment as the gateway left it: ``succeeded``, ``failed`` (with the decline
    code; dunning retries it), or ``unknown`` (a time-out, resolved by asking the gateway).
    A paid statement, or one with a payment under way, is refused and nothing is charged."""
    payment = pm.pay(
        store_of(request),
        actor,
        statement_id,
        method_id=body.method_id,
        amount_minor=body.amount_minor,
        currency=body.currency,
        idempotency_key=key,
    )
    return pm.payment_view(payment)


@router.post("/payments/{payment_id}/confirm", response_model=PaymentOut)
def confirm_payment(
    payment_id: Annotated[int, id_path("a payment's id")],
    body: ConfirmIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """The user is back from its card issuer's authentication (3-D Secure, a payment answered
    ``pending`` with ``next_action`` ``authenticate``): the gateway is asked how the payment
    stands and it is settled. A payment not waiting for that is answered as it stands; a
    retry never charges twice."""
    payment = pm.confirm(store_of(request), actor, payment_id, challenge=body.challenge)
    return pm.payment_view(payment)


@router.get("/statements/{statement_id}/payment-state", response_model=PaymentStateOut)
def payment_state(statement_id: StatementId, request: Request, actor: CurrentActor) -> dict:
    """What the statement owes now: paid, due, or overdue after its due date."""
    with store_of(request).read() as s:
        return pm.payment_state(s, statements.get_statement(s, actor, statement_id))


@router.post("/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut)
def refund_payment(
    payment_id: Annotated[int, id_path("a payment's id")],
    body: RefundIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Give back (part of) a succeeded payment (its statement's home provider), never more
    than what is left of it."""
    r = refunds.refund(
        store_of(request),
        actor,
        payment_id,
        body.amount_minor,
        reason=body.reason,
        idempotency_key=key,
    )
    return refunds.refund_view(r)
