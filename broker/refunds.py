"""Refunds of card payments by the statement's home provider (docs/billing.md, "Payments",
"Refunds"): never more than what is left of the payment, reserved before the gateway is called;
a success is taken off the statement's ``paid_minor`` and posted (debit ``refunds``, credit
``cash``)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.clock import resolve_now
from broker.errors import InvalidInput, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.ledger import Entry, cash, post, refunds
from broker.models import Payment, Refund, Statement
from broker.payment_gateway import PENDING, SUCCEEDED, UNKNOWN, GatewayResult
from broker.payments import IN_FLIGHT, REFUND_POSTING, Gateways, gateways_of

log = logging.getLogger(__name__)


def refund(
    store,
    actor: Actor,
    payment_id: int,
    amount_minor: int,
    *,
    reason: str = "",
    idempotency_key: str | None = None,
    gateways: Gateways | None = None,
    now: datetime | None = None,
) -> Refund:
    """Give back (part of) a succeeded payment, by its statement's home provider; never more
    than what is left of the payment. The amount is reserved on the payment before the
    gateway is called, so concurrent refunds cannot pass it together."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    made = False
    with store.write() as s:
        payment = s.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
        if payment is None:
            raise NotFound("payment", payment_id)
        if not (actor.is_admin or actor.speaks_for_provider(payment.home_provider_id)):
            raise NotYours(
                f"{actor} may not refund payment {payment_id}: only its home "
                f"provider {payment.home_provider_id}",
                where=f"payment {payment_id}",
            )
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
            raise InvalidInput(
                "a refund is a positive whole number of minor units", field="amount_minor"
            )
        if not isinstance(reason, str) or len(reason) > 500:
            raise InvalidInput("a reason is at most 500 characters", field="reason")

        def run() -> Refund:
            nonlocal made
            if payment.status != SUCCEEDED:
                raise WrongState(
                    f"payment {payment_id} is {payment.status}; only a succeeded "
                    f"payment is refunded",
                    where=f"payment {payment_id}",
                )
            left = payment.amount_minor - payment.refunded_minor
            if amount_minor > left:
                raise InvalidInput(
                    f"payment {payment_id} paid {payment.amount_minor} and "
                    f"{payment.refunded_minor} of it is refunded (or under "
                    f"way); at most {left} more can be",
                    field="amount_minor",
                )
            n = 1 + int(
                s.scalar(
                    select(func.count()).select_from(Refund).where(Refund.payment_id == payment_id)
                )
            )
            payment.refunded_minor += amount_minor
            r = Refund(
                payment_id=payment_id,
                statement_id=payment.statement_id,
                gateway_key=f"pktx-payment-{payment_id}-refund-{n}",
                status=PENDING,
                amount_minor=amount_minor,
                currency=payment.currency,
                reason=reason,
                created_at=now,
                updated_at=now,
            )
            s.add(r)
            s.flush()
            made = True
            return r

        r = once(
            s,
            actor,
            idempotency_key,
            "refund",
            {"payment": payment_id, "amount": amount_minor, "reason": reason},
            Refund,
            run,
        )
        refund_id, name, ref, key = r.id, payment.gateway, payment.gateway_ref, r.gateway_key
        currency = payment.currency
    if not made:
        return r
    try:
        result = gateways(name).refund(ref, amount_minor, currency, key)
    except Exception as exc:
        log.warning("refund %s: gateway %s failed: %s", refund_id, name, type(exc).__name__)
        result = GatewayResult(UNKNOWN)
    with store.write() as s:
        return settle_refund(s, refund_id, result, now)


def settle_refund(session: Session, refund_id: int, result: GatewayResult, now: datetime) -> Refund:
    """Record a refund's answer: a success takes it off the statement's ``paid_minor`` and
    posts it (debit ``refunds``, credit ``cash``); a failure frees the reserved amount."""
    r = session.execute(select(Refund).where(Refund.id == refund_id).with_for_update()).scalar_one()
    if r.status not in IN_FLIGHT or result.status == PENDING:
        return r
    r.updated_at = now
    r.status = result.status
    if result.status == UNKNOWN:
        return r
    payment = session.execute(
        select(Payment).where(Payment.id == r.payment_id).with_for_update()
    ).scalar_one()
    if result.status == SUCCEEDED:
        r.gateway_ref = result.ref
        statement = session.get_one(Statement, r.statement_id)
        statement.paid_minor -= r.amount_minor
        post(
            session,
            REFUND_POSTING,
            str(r.id),
            [
                Entry(refunds(payment.home_provider_id), r.currency, r.amount_minor),
                Entry(cash(payment.home_provider_id), r.currency, -r.amount_minor),
            ],
            memo=f"payment {payment.id} of statement {r.statement_id}",
            now=now,
        )
    else:
        r.decline_code = result.decline_code
        payment.refunded_minor -= r.amount_minor
    return r


def refund_view(r: Refund) -> dict:
    return {
        "id": r.id,
        "payment_id": r.payment_id,
        "statement_id": r.statement_id,
        "status": r.status,
        "amount_minor": r.amount_minor,
        "currency": r.currency,
        "reason": r.reason,
        "decline_code": r.decline_code,
        "created_at": r.created_at,
    }
