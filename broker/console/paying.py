"""Paying a statement by card from its page, the cardholder's 3-D Secure step, the home
provider's refunds, and the cards on file (the account page): the same domain functions as the
API's payment routes (`broker.payments`, `broker.refunds`, `broker.payment_methods`), each form
idempotent by a key drawn with the page, so a form sent twice charges (refunds, adds a card)
once."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker import payment_methods as methods
from broker import payments as pm
from broker import refunds, statements
from broker.actors import Actor
from broker.api.deps import id_path, store_of
from broker.console.forms import Form
from broker.console.site import ConsoleRoute, Posted, Signed, require_side
from broker.currency import MINOR_DIGITS
from broker.errors import BrokerError, NotFound, NotYours
from broker.models import Payment, Refund, Statement
from broker.payment_gateway import gateway
from broker.test_gateway import TEST_CARDS

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
StatementId = Annotated[int, id_path("a statement's id")]
PaymentId = Annotated[int, id_path("a payment's id")]
MethodId = Annotated[int, id_path("a card's id")]
# The domain's field names (`InvalidInput.field`) to the pay form's and the card form's fields.
PAY_FIELDS = {"method_id": "method_id", "amount_minor": "amount", "currency": "currency"}
CARD_FIELDS = {"token": "token", "gateway": "token"}
REFUND_FIELDS = {"amount_minor": "amount", "reason": "reason"}
GATEWAY = "test"  # the gateway a card added in the console is kept by (the API's default)


def form_key() -> str:
    """A fresh idempotency key for a form drawn now: sending that form again (a double click,
    a reload of the answer) repeats the key and gets the first call's result."""
    return "console-" + secrets.token_urlsafe(18)


def payment_panel(session: Session, actor: Actor, statement: Statement) -> dict:
    """What a statement's page shows about paying it: its payment state (as the API's
    ``payment-state``), its payments, newest first, and for the user the cards to pay with."""
    state = pm.payment_state(session, statement)
    paid = [
        pm.payment_view(p)
        for p in pm.list_payments(session, actor, statement.user_id, limit=1000)
        if p.statement_id == statement.id
    ]
    paid.reverse()
    # The statement is the caller's to see (its page asked `get_statement`): so are its refunds.
    given_back = [
        refunds.refund_view(r)
        for r in session.scalars(
            select(Refund).where(Refund.statement_id == statement.id).order_by(Refund.id.desc())
        )
    ]
    may_refund = may_refund_for(actor, statement.home_provider_id)
    may_pay = actor.speaks_for_user(statement.user_id)
    cards = (
        [methods.method_view(m) for m in methods.list_methods(session, actor, statement.user_id)]
        if may_pay
        else []
    )
    return {
        "state": state,
        "payments": paid,
        "latest": paid[0] if paid else None,
        "may_pay": may_pay
        and statement.status == statements.FINALIZED
        and state["state"] in ("due", "overdue"),
        "may_confirm": actor.is_admin or actor.speaks_for_user(statement.user_id),
        "due_currencies": pm.currencies_due(session, statement),
        "cards": cards,
        "refunds": given_back,
        # Each succeeded payment with something left to give back, for its home provider.
        "refundable": [
            {**p, "left_minor": p["amount_minor"] - p["refunded_minor"]}
            for p in paid
            if may_refund and p["status"] == "succeeded" and p["amount_minor"] > p["refunded_minor"]
        ],
    }


def may_refund_for(actor: Actor, home_provider_id: int) -> bool:
    """Whether the refund form is drawn: for whom `refunds.refund` takes it (the payment's home
    provider, an admin); the domain function decides again when the form is sent."""
    return actor.is_admin or actor.speaks_for_provider(home_provider_id)


def _statement_again(
    request: Request, signed, statement_id: int, form: Form, status: int, *, refund_of: int = 0
):
    from broker.console.statements import statement_page_with

    if refund_of:
        return statement_page_with(
            request, signed, statement_id, refund_form=(refund_of, form), status=status
        )
    return statement_page_with(request, signed, statement_id, pay_form=form, status=status)


@router.post("/statements/{statement_id}/pay")
def pay(request: Request, signed: Signed, statement_id: StatementId, form: Posted) -> Response:
    """Pay the statement (what is left of it, or the amount typed) with the card chosen."""
    store = store_of(request)
    with store.read() as s:
        st = statements.get_statement(s, signed.actor, statement_id)  # 404/403 as the API
        # From the totals, not from what is due: a form sent again after it paid must name
        # the same currency, or its idempotency key would not match the first call's.
        billed = sorted(c for c, m in (st.totals or {}).items() if m)
    currency = form.text("currency") or (billed[0] if len(billed) == 1 else "")
    if currency and currency not in MINOR_DIGITS:
        form.refuse("currency", f"not a currency of this statement: {currency!r}")
    method_id = form.integer("method_id")
    amount = None
    if form.text("amount"):
        if currency in MINOR_DIGITS:
            amount = form.money("amount", currency)
            if amount == 0:
                form.refuse("amount", "more than zero (or leave it empty to pay what is due)")
        else:
            form.refuse("currency", "choose the currency the amount is in")
    if not form.errors:
        try:
            payment = pm.pay(
                store,
                signed.actor,
                statement_id,
                method_id=method_id,
                amount_minor=amount,
                currency=currency or None,
                idempotency_key=form.text("idempotency_key") or None,
            )
        except (NotYours, NotFound):
            raise
        except BrokerError as exc:
            form.refuse(PAY_FIELDS.get(exc.field or "", "_form"), exc.message)
            return _statement_again(request, signed, statement_id, form, exc.http_status)
        return RedirectResponse(f"/statements/{statement_id}#payment-{payment.id}", status_code=303)
    return _statement_again(request, signed, statement_id, form, 422)


@router.post("/payments/{payment_id}/confirm")
def confirm(request: Request, signed: Signed, payment_id: PaymentId, form: Posted) -> Response:
    """The cardholder back from its issuer (3-D Secure): the payment settled as the gateway
    says; the test gateway's issuer takes the answer (``pass`` or ``fail``) from the form."""
    store = store_of(request)
    challenge = form.text("challenge") or None
    with store.read() as s:
        p = s.get(Payment, payment_id)
        if p is None:
            raise NotFound("payment", payment_id)
        statement_id = p.statement_id
    payment = pm.confirm(store, signed.actor, payment_id, challenge=challenge)
    return RedirectResponse(f"/statements/{statement_id}#payment-{payment.id}", status_code=303)


@router.post("/payments/{payment_id}/refunds")
def refund(request: Request, signed: Signed, payment_id: PaymentId, form: Posted) -> Response:
    """Give back (part of) a succeeded payment, as ``POST /v1/payments/{id}/refunds``: the
    amount typed, or what was left of the payment when the page was drawn (a hidden field, so
    the same form sent again names the same amount and its idempotency key refunds once)."""
    store = store_of(request)
    with store.read() as s:
        p = s.get(Payment, payment_id)
        if p is None:
            raise NotFound("payment", payment_id)
        statement_id, currency, home = p.statement_id, p.currency, p.home_provider_id
    if not may_refund_for(signed.actor, home):
        # Refused as `refunds.refund` refuses it, before the form is read any further.
        raise NotYours(
            f"{signed.actor} may not refund payment {payment_id}: only its home provider {home}",
            where=f"payment {payment_id}",
        )
    if form.text("amount"):
        amount = form.money("amount", currency)
    else:
        amount = form.integer("left_minor", low=0)
        if amount is None and not form.errors:
            form.refuse("amount", "required")
    reason = form.values.get("reason", "").strip()
    if form.errors:
        return _statement_again(request, signed, statement_id, form, 422, refund_of=payment_id)
    assert amount is not None
    try:
        refunds.refund(
            store,
            signed.actor,
            payment_id,
            amount,
            reason=reason,
            idempotency_key=form.text("idempotency_key") or None,
        )
    except (NotYours, NotFound):
        raise
    except BrokerError as exc:
        form.refuse(REFUND_FIELDS.get(exc.field or "", "_form"), exc.message)
        return _statement_again(
            request, signed, statement_id, form, exc.http_status, refund_of=payment_id
        )
    return RedirectResponse(f"/statements/{statement_id}#refunds", status_code=303)


# -- cards on file (the account page) -----------------------------------------------------------


def cards_panel(session: Session, actor: Actor, user_id: int) -> dict:
    return {
        "cards": [methods.method_view(m) for m in methods.list_methods(session, actor, user_id)],
        "test_tokens": list(TEST_CARDS),
    }


@router.post("/account/cards")
def add_card(request: Request, signed: Signed, form: Posted) -> Response:
    """Keep a card by the gateway's token (the test gateway's documented test tokens)."""
    from broker.console.account import account_page_with

    require_side(signed, "user")
    actor = signed.actor
    assert actor.user_id is not None  # a user's side
    token = form.text("token")
    if not token:
        form.refuse("token", "required")
    if not form.errors:
        store = store_of(request)
        try:
            gw = gateway(GATEWAY, store)
            with store.write() as s:
                methods.add_method(
                    s,
                    actor,
                    actor.user_id,
                    gw,
                    token=token,
                    make_default=form.values.get("make_default") == "on",
                    idempotency_key=form.text("idempotency_key") or None,
                )
        except (NotYours, NotFound):
            raise
        except BrokerError as exc:
            form.refuse(CARD_FIELDS.get(exc.field or "", "_form"), exc.message)
            return account_page_with(request, signed, card_form=form, status=exc.http_status)
        return RedirectResponse("/account#cards", status_code=303)
    return account_page_with(request, signed, card_form=form, status=422)


@router.post("/account/cards/{method_id}/remove")
def remove_card(request: Request, signed: Signed, method_id: MethodId, _form: Posted) -> Response:
    """Forget a card (one forgotten already: nothing changes, as the API)."""
    require_side(signed, "user")
    actor = signed.actor
    assert actor.user_id is not None
    with store_of(request).write() as s:
        methods.delete_method(s, actor, actor.user_id, method_id)
    return RedirectResponse("/account#cards", status_code=303)
