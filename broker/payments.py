"""Paying statements by card (docs/billing.md, "Payments"): a payment in three steps (start,
charge, settle), what a statement owes, and the payment rating its outcome becomes. Cards are
`broker.payment_methods`, refunds `broker.refunds`, the jobs (collection, dunning, the
resolver) `broker.payment_jobs`.

A payment is started in one transaction (the statement row locked; one attempt in flight per
statement, held by a partial unique index), the gateway is called outside any transaction
with a key derived from the statement and the attempt, and the answer is settled in another
transaction with the statement's ``paid_minor``/``paid_at``, the ledger posting and the rating.
An answer lost to a time-out leaves the payment ``unknown``: the resolver asks the gateway by the
same key, it never charges again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.clock import resolve_now
from broker.currency import MINOR_DIGITS
from broker.errors import Conflict, InvalidInput, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.ledger import Entry, cash, post, receivable
from broker.models import (
    Award,
    Charge,
    Payment,
    PaymentMethod,
    Rating,
    Refund,
    Statement,
    StatementLine,
    User,
)
from broker.payment_gateway import (
    CANCELED,
    PENDING,
    SUCCEEDED,
    UNKNOWN,
    GatewayResult,
    PaymentGateway,
    gateway,
)

log = logging.getLogger(__name__)

# Dunning: a failed attempt n is retried this long after it failed; attempt 4 is the last.
RETRY_AFTER = (timedelta(days=1), timedelta(days=3), timedelta(days=7))
# A payment left pending this long (its process died between start and settle) is resolved
# by asking the gateway, like an unknown one.
STALE_PENDING = timedelta(minutes=5)
# The provider's payment rating of the user from a statement's outcome (0..100).
SCORE_ON_TIME, SCORE_LATE, SCORE_OVERDUE = 100, 40, 0
PAYMENT_POSTING, REFUND_POSTING = "payment", "refund"
IN_FLIGHT = (PENDING, UNKNOWN)

Gateways = Callable[[str], PaymentGateway]


def gateways_of(store) -> Gateways:
    """A look-up of gateways by name, made for ``store`` (each made once)."""
    made: dict[str, PaymentGateway] = {}

    def get(name: str) -> PaymentGateway:
        if name not in made:
            made[name] = gateway(name, store)
        return made[name]

    return get


# -- what a statement owes ----------------------------------------------------------------------

def _currency_of(statement: Statement) -> tuple[str, int]:
    totals = {c: m for c, m in (statement.totals or {}).items() if m}
    if len(totals) != 1:
        raise WrongState(f"statement {statement.id} totals {statement.totals}: a card pays a "
                         f"statement in one currency", where=f"statement {statement.id}")
    (currency, total), = totals.items()
    return currency, int(total)


def _paid_gross(session: Session, statement_id: int) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(Payment.amount_minor), 0)).where(
        Payment.statement_id == statement_id, Payment.status == SUCCEEDED)))


def payment_state(session: Session, statement: Statement, now: datetime | None = None) -> dict:
    """What the statement owes: ``state`` is ``paid`` (in full), ``nothing_due`` (a total
    of zero or less), ``overdue`` (unpaid after its due date) or ``due``."""
    now = resolve_now(now)
    totals = statement.totals or {}
    total = sum(int(m) for m in totals.values()) if len(totals) == 1 else None
    gross = _paid_gross(session, statement.id)
    refunded = int(session.scalar(select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
        Refund.statement_id == statement.id, Refund.status == SUCCEEDED)))
    if statement.paid_at is not None:
        state = "paid"
    elif total is not None and total <= 0:
        state = "nothing_due"
    elif statement.due_at is not None and now > statement.due_at:
        state = "overdue"
    else:
        state = "due"
    return {"statement_id": statement.id, "currency": next(iter(totals), None),
            "total_minor": total, "paid_minor": statement.paid_minor,
            "paid_gross_minor": gross, "refunded_minor": refunded,
            "due_minor": max(0, (total or 0) - gross), "due_at": statement.due_at,
            "paid_at": statement.paid_at, "state": state}


# -- paying: start, charge, settle ------------------------------------------------------------

def _start(session: Session, actor: Actor | None, statement_id: int, *, method_id: int | None,
           amount_minor: int | None, trigger: str, idempotency_key: str | None,
           now: datetime) -> tuple[Payment, bool]:
    """Make the next attempt's payment row (pending) with the statement locked; returns it and
    whether this call made it (a retry by idempotency key gets the first call's payment)."""
    statement = session.scalar(select(Statement).where(Statement.id == statement_id)
                               .with_for_update())
    if statement is None:
        raise NotFound("statement", statement_id)
    if actor is not None and not (actor.is_admin or actor.speaks_for_user(statement.user_id)):
        raise NotYours(f"{actor} may not pay statement {statement_id}: it is user "
                       f"{statement.user_id}'s", where=f"statement {statement_id}")
    if amount_minor is not None and (isinstance(amount_minor, bool)
                                     or not isinstance(amount_minor, int) or amount_minor <= 0):
        raise InvalidInput("an amount is a positive whole number of minor units",
                           field="amount_minor")
    made = False

    def run() -> Payment:
        nonlocal made
        if statement.status != "finalized":
            raise WrongState(f"statement {statement_id} is a draft; only a finalized statement "
                             f"is paid", where=f"statement {statement_id}")
        if statement.paid_at is not None:
            raise WrongState(f"statement {statement_id} was paid in full at "
                             f"{statement.paid_at.isoformat()}; nothing was charged",
                             where=f"statement {statement_id}", field="statement_id")
        currency, total = _currency_of(statement)
        in_flight = session.scalar(select(Payment.id).where(
            Payment.statement_id == statement_id, Payment.status.in_(IN_FLIGHT)))
        if in_flight is not None:
            raise Conflict(f"payment {in_flight} of statement {statement_id} is under way; "
                           f"nothing more was charged", where=f"statement {statement_id}",
                           field="statement_id")
        left = total - _paid_gross(session, statement_id)
        if left <= 0:
            raise WrongState(f"statement {statement_id} is paid; nothing was charged",
                             where=f"statement {statement_id}", field="statement_id")
        amount = left if amount_minor is None else amount_minor
        if amount > left:
            raise InvalidInput(f"statement {statement_id} has {left} minor units left to pay, "
                               f"not {amount}", field="amount_minor")
        method = _method_for(session, statement.user_id, method_id)
        attempt = 1 + int(session.scalar(select(func.coalesce(func.max(Payment.attempt), 0))
                                         .where(Payment.statement_id == statement_id)))
        payment = Payment(statement_id=statement_id, user_id=statement.user_id,
                          home_provider_id=statement.home_provider_id, method_id=method.id,
                          gateway=method.gateway,
                          gateway_key=f"pktx-statement-{statement_id}-attempt-{attempt}",
                          attempt=attempt, trigger=trigger, status=PENDING,
                          amount_minor=amount, currency=currency,
                          minor_digits=MINOR_DIGITS[currency], refunded_minor=0,
                          created_at=now, updated_at=now)
        session.add(payment)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # another attempt got in first (the in-flight index)
            raise Conflict(f"another payment of statement {statement_id} is under way; "
                           f"nothing more was charged", where=f"statement {statement_id}",
                           field="statement_id") from None
        made = True
        return payment

    if actor is None or idempotency_key is None:
        return run(), made
    payment = once(session, actor, idempotency_key, "pay_statement",
                   {"statement": statement_id, "method": method_id, "amount": amount_minor},
                   Payment, run)
    return payment, made


def _method_for(session: Session, user_id: int, method_id: int | None) -> PaymentMethod:
    if method_id is None:
        method = session.scalar(select(PaymentMethod).where(
            PaymentMethod.user_id == user_id, PaymentMethod.is_default,
            PaymentMethod.deleted_at.is_(None)))
        if method is None:
            raise WrongState(f"user {user_id} has no default card; add one or name one",
                             field="method_id")
        return method
    method = session.get(PaymentMethod, method_id)
    if method is None or method.user_id != user_id or method.deleted_at is not None:
        raise InvalidInput(f"user {user_id} has no card {method_id}", field="method_id")
    return method


def _charge(gateways: Gateways, session_of, payment_id: int) -> GatewayResult:
    """Call the gateway for a started payment, outside any transaction; an exception on the
    way (a network error) is an unknown outcome, asked about later."""
    with session_of() as s:
        p = s.get(Payment, payment_id)
        token = s.get(PaymentMethod, p.method_id).token
        name, amount, currency, key = p.gateway, p.amount_minor, p.currency, p.gateway_key
    try:
        return gateways(name).purchase(token, amount, currency, key)
    except Exception as exc:  # a gateway's own failure: the outcome is not known
        log.warning("payment %s: gateway %s failed: %s", payment_id, name, type(exc).__name__)
        return GatewayResult(UNKNOWN, message=f"the gateway call failed: {type(exc).__name__}")


def settle(session: Session, payment_id: int, result: GatewayResult, now: datetime) -> Payment:
    """Record a gateway's answer on an in-flight payment (an answer for one already settled
    changes nothing): a success pays the statement, posts to the ledger and rates the user,
    all in this transaction; a failure plans the dunning retry."""
    payment = session.scalar(select(Payment).where(Payment.id == payment_id).with_for_update())
    if payment is None:
        raise NotFound("payment", payment_id)
    late = payment.status == CANCELED and result.status == SUCCEEDED
    if (payment.status not in IN_FLIGHT and not late) or result.status == PENDING:
        return payment
    if late:  # the resolver gave up on it as never sent, and then the charge's answer came
        log.warning("payment %s: a success came after it was taken as canceled", payment_id)
        payment.next_retry_at = None
    payment.updated_at = now
    if result.status == UNKNOWN:
        payment.status = UNKNOWN
        return payment
    payment.status = result.status
    if result.status == SUCCEEDED:
        payment.gateway_ref = result.ref
        payment.decline_code = payment.decline_message = None
        statement = session.scalar(select(Statement).where(Statement.id == payment.statement_id)
                                   .with_for_update())
        statement.paid_minor += payment.amount_minor
        _, total = _currency_of(statement)
        if statement.paid_at is None and _paid_gross(session, statement.id) >= total:
            statement.paid_at = now
            rate_outcome(session, statement, SCORE_ON_TIME if statement.due_at is None
                  or now <= statement.due_at else SCORE_LATE, now)
        post(session, PAYMENT_POSTING, str(payment.id), [
            Entry(cash(payment.home_provider_id), payment.currency, payment.amount_minor),
            Entry(receivable(payment.user_id), payment.currency, -payment.amount_minor)],
            memo=f"statement {payment.statement_id} attempt {payment.attempt}", now=now)
        return payment
    payment.decline_code = result.decline_code or (None if result.status == CANCELED
                                                   else "declined")
    payment.decline_message = (result.message or "")[:300] or None
    if payment.attempt <= len(RETRY_AFTER):
        payment.next_retry_at = now + RETRY_AFTER[payment.attempt - 1]
    return payment


def pay(store, actor: Actor | None, statement_id: int, *, method_id: int | None = None,
        amount_minor: int | None = None, idempotency_key: str | None = None,
        trigger: str = "user", gateways: Gateways | None = None,
        now: datetime | None = None) -> Payment:
    """Pay (part of) a statement with a card (the user's default when ``method_id`` is None):
    start, charge, settle. ``actor`` None: the broker itself (collection, dunning). Returns
    the payment as settled (``unknown`` when the gateway's answer was lost)."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    with store.write() as s:
        payment, made = _start(s, actor, statement_id, method_id=method_id,
                               amount_minor=amount_minor, trigger=trigger,
                               idempotency_key=idempotency_key, now=now)
        payment_id = payment.id
    if not made:  # a retry by idempotency key: the first call's payment, as it stands
        return payment
    result = _charge(gateways, store.read, payment_id)
    with store.write() as s:
        return settle(s, payment_id, result, now)


def rate_outcome(session: Session, statement: Statement, score: int, now: datetime) -> bool:
    """The statement's outcome as the ``payment`` rating of its user on each award it
    charges (by that award's provider); returns whether a rating changed."""
    awards = list(session.execute(
        select(Award.id, Award.provider_id).distinct()
        .join(Charge, Charge.award_id == Award.id)
        .join(StatementLine, StatementLine.charge_id == Charge.id)
        .where(StatementLine.statement_id == statement.id)))
    changed = False
    for award_id, provider_id in awards:
        rating = session.scalar(select(Rating).where(
            Rating.award_id == award_id, Rating.direction == "payment",
            Rating.user_id == statement.user_id))
        if rating is not None and rating.score == score:
            continue
        if rating is None:
            rating = Rating(award_id=award_id, direction="payment", user_id=statement.user_id,
                            provider_id=provider_id, created_at=now)
            session.add(rating)
        rating.score, rating.rated_at = score, now
        rating.comment = f"statement {statement.number}: " + {
            SCORE_ON_TIME: "paid on time", SCORE_LATE: "paid late",
            SCORE_OVERDUE: "unpaid after its due date"}[score]
        changed = True
    session.flush()
    return changed


# -- reading ----------------------------------------------------------------------------------

def list_payments(session: Session, actor: Actor, user_id: int, *, after: int | None = None,
                  limit: int = 100) -> list[Payment]:
    """A user's payments, oldest first: for the user, its home provider and an admin."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (actor.is_admin or actor.speaks_for_user(user_id)
            or actor.speaks_for_provider(user.home_provider_id)):
        raise NotYours(f"{actor} may not see user {user_id}'s payments", where=f"user {user_id}")
    query = select(Payment).where(Payment.user_id == user_id)
    if after is not None:
        query = query.where(Payment.id > after)
    return list(session.scalars(query.order_by(Payment.id).limit(limit)))


def payment_view(p: Payment) -> dict:
    return {"id": p.id, "statement_id": p.statement_id, "user_id": p.user_id,
            "home_provider_id": p.home_provider_id, "method_id": p.method_id,
            "gateway": p.gateway, "attempt": p.attempt, "trigger": p.trigger,
            "status": p.status, "amount_minor": p.amount_minor, "currency": p.currency,
            "minor_digits": p.minor_digits, "refunded_minor": p.refunded_minor,
            "decline_code": p.decline_code, "decline_message": p.decline_message,
            "next_retry_at": p.next_retry_at, "created_at": p.created_at,
            "updated_at": p.updated_at}
