"""The payment jobs (docs/billing.md, "Payments"): automatic collection after a close, and
`run_due` (``pktx broker payments run-due``): the unknown-status resolver, payments left
waiting for the cardholder's authentication past their window voided, dunning retries on their
schedule, and the rating of statements unpaid after their due date."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update

from broker.clock import resolve_now
from broker.credit import decide, has_profile
from broker.errors import Conflict, InvalidInput, WrongState
from broker.models import Payment, PaymentMethod, Refund, Statement
from broker.payment_gateway import CANCELED, FAILED, PENDING, SUCCEEDED, UNKNOWN
from broker.payments import (
    AUTHENTICATION_REQUIRED,
    AUTHENTICATION_WINDOW,
    SCORE_OVERDUE,
    STALE_PENDING,
    Gateways,
    currencies_due,
    expire_authentication,
    gateways_of,
    pay,
    rate_outcome,
    settle,
)
from broker.refunds import settle_refund

log = logging.getLogger(__name__)


def collect(
    store,
    statement_ids: list[int],
    *,
    gateways: Gateways | None = None,
    now: datetime | None = None,
) -> dict:
    """Automatic collection after a close: charge each finalized, unpaid statement with an
    amount due to its user's default card (a user with none waits to pay). Run after the
    finalizing transactions, never inside them. Returns counts by outcome."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    out: dict[str, int] = {}
    for sid in statement_ids:
        with store.read() as s:
            st = s.get(Statement, sid)
            has_card = st is not None and s.scalar(
                select(PaymentMethod.id).where(
                    PaymentMethod.user_id == st.user_id, PaymentMethod.is_default
                )
            )
            due = (
                []
                if st is None or st.status != "finalized" or st.paid_at is not None
                else currencies_due(s, st)
            )
        if not due or not has_card:
            out["skipped"] = out.get("skipped", 0) + 1
            continue
        for currency in due:  # a statement in several currencies: one payment each
            try:
                p = pay(
                    store,
                    None,
                    sid,
                    currency=currency,
                    trigger="collection",
                    gateways=gateways,
                    now=now,
                )
                out[p.status] = out.get(p.status, 0) + 1
                if p.status != SUCCEEDED:
                    break
            except (WrongState, Conflict) as exc:
                log.info("collection of statement %s in %s: %s", sid, currency, exc)
                out["skipped"] = out.get("skipped", 0) + 1
    return out


def run_due(store, *, gateways: Gateways | None = None, now: datetime | None = None) -> dict:
    """The payments job (``pktx broker payments run-due``): resolve unknown (and stale
    pending) payments and refunds by asking the gateway, retry failed payments whose time has
    come (dunning, with the user's default card), and rate overdue unpaid statements."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    report = {"resolved": 0, "retried": 0, "rated_overdue": 0, "authentication_expired": 0}
    with store.read() as s:
        asks = list(
            s.execute(
                select(Payment.id, Payment.gateway, Payment.gateway_key).where(
                    (Payment.status == UNKNOWN)
                    | ((Payment.status == PENDING) & (Payment.updated_at < now - STALE_PENDING))
                )
            )
        )
        refund_asks = list(
            s.execute(
                select(Refund.id, Payment.gateway, Refund.gateway_key)
                .join(Payment, Payment.id == Refund.payment_id)
                .where(
                    (Refund.status == UNKNOWN)
                    | ((Refund.status == PENDING) & (Refund.updated_at < now - STALE_PENDING))
                )
            )
        )
    with store.read() as s:
        waiting = list(
            s.scalars(
                select(Payment.id).where(
                    Payment.status == PENDING,
                    Payment.decline_code == AUTHENTICATION_REQUIRED,
                    Payment.updated_at < now - AUTHENTICATION_WINDOW,
                )
            )
        )
    for pid in waiting:
        if expire_authentication(store, gateways, pid, now).status != PENDING:
            report["authentication_expired"] += 1
    still_waiting = set(waiting)
    for pid, name, key in asks:
        if pid in still_waiting:
            continue
        result = gateways(name).status(key)
        if result.status != PENDING:
            with store.write() as s:
                settle(s, pid, result, now)
            report["resolved"] += 1
    for rid, name, key in refund_asks:
        result = gateways(name).status(key)
        if result.status != PENDING:
            with store.write() as s:
                settle_refund(s, rid, result, now)
            report["resolved"] += 1
    with store.read() as s:
        due = list(
            s.execute(
                select(Payment.id, Payment.statement_id, Payment.currency).where(
                    Payment.status.in_((FAILED, CANCELED)), Payment.next_retry_at <= now
                )
            )
        )
    for pid, sid, currency in due:
        with store.write() as s:
            s.execute(update(Payment).where(Payment.id == pid).values(next_retry_at=None))
        try:
            pay(store, None, sid, currency=currency, trigger="dunning", gateways=gateways, now=now)
            report["retried"] += 1
        except (WrongState, Conflict, InvalidInput) as exc:
            log.info("dunning of statement %s: %s", sid, exc)
    with store.write() as s:
        overdue = list(
            s.scalars(
                select(Statement).where(
                    Statement.status == "finalized",
                    Statement.paid_at.is_(None),
                    Statement.due_at < now,
                )
            )
        )
        worse = set()
        for st in overdue:
            if any(m > 0 for m in (st.totals or {}).values()) and rate_outcome(
                s, st, SCORE_OVERDUE, now
            ):
                report["rated_overdue"] += 1
                worse.add(st.user_id)
        # Their credit is decided again now: a smaller limit, and a bandwidth grant withdrawn
        # from what they have not had delivered yet (broker.bandwidth).
        managed = [u for u in sorted(worse) if has_profile(s, u)]
        if managed:
            decide(s, managed, now)
        report["credit_decided"] = len(managed)
    return report
