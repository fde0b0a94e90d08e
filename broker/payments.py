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
    FAILED,
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
# A payment the card's issuer wants the cardholder to authenticate (3-D Secure) waits this
# long for it; then it is voided and failed, and dunning goes on.
AUTHENTICATION_REQUIRED = "authentication_required"
AUTHENTICATION_WINDOW = timedelta(days=1)

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


def _totals(statement: Statement) -> dict[str, int]:
    """The statement's totals, currency by currency (zero totals left out)."""
    return {c: int(m) for c, m in (statement.totals or {}).items() if m}


def _currency_of(statement: Statement, currency: str | None = None) -> tuple[str, int]:
    """The currency a payment of the statement is in and the statement's total in it: the
    one named, else the statement's only one. A card pays one currency at a time; a
    statement in several is paid currency by currency."""
    totals = _totals(statement)
    where = f"statement {statement.id}"
    if currency is not None:
        if currency not in totals:
            raise InvalidInput(
                f"statement {statement.id} has nothing in {currency} to pay; "
                f"its totals are {_listed(totals)}",
                field="currency",
            )
        return currency, totals[currency]
    if len(totals) != 1:
        raise InvalidInput(
            f"statement {statement.id} totals {_listed(totals) or 'nothing'}: "
            f"name the currency to pay",
            field="currency",
            where=where,
        )
    ((currency, total),) = totals.items()
    return currency, total


def _listed(totals: dict[str, int]) -> str:
    return ", ".join(f"{m} {c}" for c, m in sorted(totals.items()))


def _paid_gross(session: Session, statement_id: int, currency: str | None = None) -> int:
    """What succeeded payments of the statement took (in ``currency``, else in all)."""
    query = select(func.coalesce(func.sum(Payment.amount_minor), 0)).where(
        Payment.statement_id == statement_id, Payment.status == SUCCEEDED
    )
    if currency is not None:
        query = query.where(Payment.currency == currency)
    return int(session.execute(query).scalar_one())


def _paid_by_currency(session: Session, statement_id: int) -> dict[str, tuple[int, int]]:
    """currency: (paid gross, refunded) of the statement's succeeded payments and refunds."""
    out: dict[str, list[int]] = {}
    for currency, gross in session.execute(
        select(Payment.currency, func.sum(Payment.amount_minor))
        .where(Payment.statement_id == statement_id, Payment.status == SUCCEEDED)
        .group_by(Payment.currency)
    ):
        out.setdefault(currency, [0, 0])[0] = int(gross)
    for currency, back in session.execute(
        select(Refund.currency, func.sum(Refund.amount_minor))
        .where(Refund.statement_id == statement_id, Refund.status == SUCCEEDED)
        .group_by(Refund.currency)
    ):
        out.setdefault(currency, [0, 0])[1] = int(back)
    return {c: (g, r) for c, (g, r) in out.items()}


def currencies_due(session: Session, statement: Statement) -> list[str]:
    """The statement's currencies with something left to pay, in order."""
    return [
        c
        for c, m in sorted(_totals(statement).items())
        if m > _paid_gross(session, statement.id, c)
    ]


def fully_paid(session: Session, statement: Statement) -> bool:
    """Every currency of the statement with something due is paid in full."""
    due = {c: m for c, m in _totals(statement).items() if m > 0}
    return bool(due) and all(_paid_gross(session, statement.id, c) >= m for c, m in due.items())


def payment_state(session: Session, statement: Statement, now: datetime | None = None) -> dict:
    """What the statement owes: ``state`` is ``paid`` (in full), ``nothing_due`` (no total
    above zero), ``overdue`` (unpaid after its due date) or ``due``; ``currencies`` has
    total, paid, refunded and due per currency. The top-level ``currency``, ``total_minor``
    and ``due_minor`` are a one-currency statement's (null when it has several)."""
    now = resolve_now(now)
    totals = {c: int(m) for c, m in (statement.totals or {}).items()}
    paid = _paid_by_currency(session, statement.id)
    lines = []
    for currency in sorted(set(totals) | set(paid)):
        total = totals.get(currency, 0)
        gross, back = paid.get(currency, (0, 0))
        lines.append(
            {
                "currency": currency,
                "total_minor": total,
                "paid_gross_minor": gross,
                "refunded_minor": back,
                "due_minor": max(0, total - gross),
            }
        )
    if statement.paid_at is not None:
        state = "paid"
    elif not any(m > 0 for m in totals.values()):
        state = "nothing_due"
    elif statement.due_at is not None and now > statement.due_at:
        state = "overdue"
    else:
        state = "due"
    one = lines[0] if len(lines) == 1 else None
    return {
        "statement_id": statement.id,
        "currency": one["currency"] if one else None,
        "total_minor": one["total_minor"] if one else (0 if not lines else None),
        "paid_minor": statement.paid_minor,
        "paid_gross_minor": sum(x["paid_gross_minor"] for x in lines),
        "refunded_minor": sum(x["refunded_minor"] for x in lines),
        "due_minor": one["due_minor"] if one else (0 if not lines else None),
        "currencies": lines,
        "due_at": statement.due_at,
        "paid_at": statement.paid_at,
        "state": state,
    }


# -- paying: start, charge, settle ------------------------------------------------------------


def _start(
    session: Session,
    actor: Actor | None,
    statement_id: int,
    *,
    method_id: int | None,
    amount_minor: int | None,
    currency: str | None,
    trigger: str,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[Payment, bool]:
    """Make the next attempt's payment row (pending) with the statement locked; returns it and
    whether this call made it (a retry by idempotency key gets the first call's payment)."""
    statement = session.scalar(
        select(Statement).where(Statement.id == statement_id).with_for_update()
    )
    if statement is None:
        raise NotFound("statement", statement_id)
    if actor is not None and not (actor.is_admin or actor.speaks_for_user(statement.user_id)):
        raise NotYours(
            f"{actor} may not pay statement {statement_id}: it is user {statement.user_id}'s",
            where=f"statement {statement_id}",
        )
    if amount_minor is not None and (
        isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0
    ):
        raise InvalidInput(
            "an amount is a positive whole number of minor units", field="amount_minor"
        )
    made = False

    def run() -> Payment:
        nonlocal made
        if statement.status != "finalized":
            raise WrongState(
                f"statement {statement_id} is a draft; only a finalized statement is paid",
                where=f"statement {statement_id}",
            )
        if statement.paid_at is not None:
            raise WrongState(
                f"statement {statement_id} was paid in full at "
                f"{statement.paid_at.isoformat()}; nothing was charged",
                where=f"statement {statement_id}",
                field="statement_id",
            )
        paying, total = _currency_of(statement, currency)
        in_flight = session.scalar(
            select(Payment.id).where(
                Payment.statement_id == statement_id, Payment.status.in_(IN_FLIGHT)
            )
        )
        if in_flight is not None:
            raise Conflict(
                f"payment {in_flight} of statement {statement_id} is under way; "
                f"nothing more was charged",
                where=f"statement {statement_id}",
                field="statement_id",
            )
        left = total - _paid_gross(session, statement_id, paying)
        if left <= 0:
            raise WrongState(
                f"statement {statement_id} is paid in {paying}; nothing was charged",
                where=f"statement {statement_id}",
                field="statement_id",
            )
        amount = left if amount_minor is None else amount_minor
        if amount > left:
            raise InvalidInput(
                f"statement {statement_id} has {left} minor units of {paying} "
                f"left to pay, not {amount}",
                field="amount_minor",
            )
        method = _method_for(session, statement.user_id, method_id)
        attempt = 1 + int(
            session.execute(
                select(func.coalesce(func.max(Payment.attempt), 0)).where(
                    Payment.statement_id == statement_id
                )
            ).scalar_one()
        )
        payment = Payment(
            statement_id=statement_id,
            user_id=statement.user_id,
            home_provider_id=statement.home_provider_id,
            method_id=method.id,
            gateway=method.gateway,
            gateway_key=f"pktx-statement-{statement_id}-attempt-{attempt}",
            attempt=attempt,
            trigger=trigger,
            status=PENDING,
            amount_minor=amount,
            currency=paying,
            minor_digits=MINOR_DIGITS[paying],
            refunded_minor=0,
            created_at=now,
            updated_at=now,
        )
        session.add(payment)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:  # another attempt got in first (the in-flight index)
            raise Conflict(
                f"another payment of statement {statement_id} is under way; "
                f"nothing more was charged",
                where=f"statement {statement_id}",
                field="statement_id",
            ) from None
        made = True
        return payment

    if actor is None or idempotency_key is None:
        return run(), made
    params: dict[str, object] = {
        "statement": statement_id,
        "method": method_id,
        "amount": amount_minor,
    }
    if currency is not None:
        params["currency"] = currency
    payment = once(session, actor, idempotency_key, "pay_statement", params, Payment, run)
    return payment, made


def _method_for(session: Session, user_id: int, method_id: int | None) -> PaymentMethod:
    if method_id is None:
        method = session.scalar(
            select(PaymentMethod).where(
                PaymentMethod.user_id == user_id,
                PaymentMethod.is_default,
                PaymentMethod.deleted_at.is_(None),
            )
        )
        if method is None:
            raise WrongState(
                f"user {user_id} has no default card; add one or name one", field="method_id"
            )
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
    if payment.status not in IN_FLIGHT and not late:
        return payment
    if result.status == PENDING:  # still open at the gateway; perhaps waiting for the cardholder
        if (
            result.next_action
            and payment.status == PENDING
            and payment.decline_code != result.decline_code
        ):
            payment.decline_code = result.decline_code
            payment.decline_message = (result.message or "")[:300] or None
            payment.gateway_ref, payment.updated_at = result.ref, now
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
        statement = session.execute(
            select(Statement).where(Statement.id == payment.statement_id).with_for_update()
        ).scalar_one()
        statement.paid_minor += payment.amount_minor
        if statement.paid_at is None and fully_paid(session, statement):
            statement.paid_at = now
            rate_outcome(
                session,
                statement,
                SCORE_ON_TIME
                if statement.due_at is None or now <= statement.due_at
                else SCORE_LATE,
                now,
            )
        post(
            session,
            PAYMENT_POSTING,
            str(payment.id),
            [
                Entry(cash(payment.home_provider_id), payment.currency, payment.amount_minor),
                Entry(receivable(payment.user_id), payment.currency, -payment.amount_minor),
            ],
            memo=f"statement {payment.statement_id} attempt {payment.attempt}",
            now=now,
        )
        return payment
    payment.decline_code = result.decline_code or (
        None if result.status == CANCELED else "declined"
    )
    payment.decline_message = (result.message or "")[:300] or None
    if payment.attempt <= len(RETRY_AFTER):
        payment.next_retry_at = now + RETRY_AFTER[payment.attempt - 1]
    return payment


def pay(
    store,
    actor: Actor | None,
    statement_id: int,
    *,
    method_id: int | None = None,
    amount_minor: int | None = None,
    currency: str | None = None,
    idempotency_key: str | None = None,
    trigger: str = "user",
    gateways: Gateways | None = None,
    now: datetime | None = None,
) -> Payment:
    """Pay (part of) a statement with a card (the user's default when ``method_id`` is None):
    start, charge, settle. ``currency``: which of the statement's currencies (needed when it
    has several). ``actor`` None: the broker itself (collection, dunning). Returns the payment
    as settled (``unknown`` when the gateway's answer was lost; ``pending`` with the
    ``authenticate`` action when the card's issuer asks the cardholder: `confirm`)."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    with store.write() as s:
        payment, made = _start(
            s,
            actor,
            statement_id,
            method_id=method_id,
            amount_minor=amount_minor,
            currency=currency,
            trigger=trigger,
            idempotency_key=idempotency_key,
            now=now,
        )
        payment_id = payment.id
    if not made:  # a retry by idempotency key: the first call's payment, as it stands
        return payment
    result = _charge(gateways, store.read, payment_id)
    with store.write() as s:
        return settle(s, payment_id, result, now)


def awaits_authentication(p: Payment) -> bool:
    """The card's issuer asked the cardholder to authenticate the payment (3-D Secure)."""
    return p.status == PENDING and p.decline_code == AUTHENTICATION_REQUIRED


def confirm(
    store,
    actor: Actor,
    payment_id: int,
    *,
    challenge: str | None = None,
    gateways: Gateways | None = None,
    now: datetime | None = None,
) -> Payment:
    """The user is back from its card issuer's authentication (3-D Secure): ask the gateway
    how the payment stands, by the payment's key, and settle it. The built-in test gateway
    plays the issuer: ``challenge`` ``pass`` or ``fail`` is the cardholder's answer (other
    gateways take the answer on their own page and ignore it). A payment not waiting for
    authentication is answered as it stands (a retry is safe); nothing is charged twice."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    if challenge not in (None, "pass", "fail"):
        raise InvalidInput(
            "challenge is pass or fail (the test gateway's cardholder)", field="challenge"
        )
    with store.write() as s:  # (a write session: the payment is answered as it stands)
        payment = s.get(Payment, payment_id)
        if payment is None:
            raise NotFound("payment", payment_id)
        if not (actor.is_admin or actor.speaks_for_user(payment.user_id)):
            raise NotYours(
                f"{actor} may not confirm payment {payment_id}: it is user {payment.user_id}'s",
                where=f"payment {payment_id}",
            )
        if not awaits_authentication(payment):
            return payment
        name, key = payment.gateway, payment.gateway_key
    try:
        result = gateways(name).confirm(key, challenge)
    except Exception as exc:  # the gateway's own failure: ask again later
        log.warning("payment %s: confirming at %s failed: %s", payment_id, name, type(exc).__name__)
        result = GatewayResult(PENDING)
    with store.write() as s:
        return settle(s, payment_id, result, now)


def expire_authentication(store, gateways: Gateways, payment_id: int, now: datetime) -> Payment:
    """A payment left waiting for the cardholder past `AUTHENTICATION_WINDOW`: void it at the
    gateway (a late answer can no longer take money) and fail it, so dunning goes on."""
    with store.read() as s:
        p = s.get(Payment, payment_id)
        name, ref, key = p.gateway, p.gateway_ref, p.gateway_key
    try:
        voided = gateways(name).void(ref, key + "-void") if ref else GatewayResult(FAILED)
    except Exception as exc:
        log.warning("payment %s: voiding at %s failed: %s", payment_id, name, type(exc).__name__)
        voided = GatewayResult(UNKNOWN)
    if voided.status != SUCCEEDED:  # the answer may have come after all: ask, don't guess
        answer = gateways(name).status(key)
        if answer.status != PENDING:
            with store.write() as s:
                return settle(s, payment_id, answer, now)
        with store.write() as s:
            return s.get(Payment, payment_id)
    with store.write() as s:
        return settle(
            s,
            payment_id,
            GatewayResult(
                FAILED,
                decline_code="authentication_expired",
                message="the cardholder did not authenticate the payment in time",
            ),
            now,
        )


def rate_outcome(session: Session, statement: Statement, score: int, now: datetime) -> bool:
    """The statement's outcome as the ``payment`` rating of its user on each award it
    charges (by that award's provider); returns whether a rating changed."""
    awards = list(
        session.execute(
            select(Award.id, Award.provider_id)
            .distinct()
            .join(Charge, Charge.award_id == Award.id)
            .join(StatementLine, StatementLine.charge_id == Charge.id)
            .where(StatementLine.statement_id == statement.id)
        )
    )
    changed = False
    for award_id, provider_id in awards:
        rating = session.scalar(
            select(Rating).where(
                Rating.award_id == award_id,
                Rating.direction == "payment",
                Rating.user_id == statement.user_id,
            )
        )
        if rating is not None and rating.score == score:
            continue
        if rating is None:
            rating = Rating(
                award_id=award_id,
                direction="payment",
                user_id=statement.user_id,
                provider_id=provider_id,
                created_at=now,
            )
            session.add(rating)
        rating.score, rating.rated_at = score, now
        rating.comment = (
            f"statement {statement.number}: "
            + {
                SCORE_ON_TIME: "paid on time",
                SCORE_LATE: "paid late",
                SCORE_OVERDUE: "unpaid after its due date",
            }[score]
        )
        changed = True
    session.flush()
    return changed


# -- reading ----------------------------------------------------------------------------------


def list_payments(
    session: Session, actor: Actor, user_id: int, *, after: int | None = None, limit: int = 100
) -> list[Payment]:
    """A user's payments, oldest first: for the user, its home provider and an admin."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(user_id)
        or actor.speaks_for_provider(user.home_provider_id)
    ):
        raise NotYours(f"{actor} may not see user {user_id}'s payments", where=f"user {user_id}")
    query = select(Payment).where(Payment.user_id == user_id)
    if after is not None:
        query = query.where(Payment.id > after)
    return list(session.scalars(query.order_by(Payment.id).limit(limit)))


def payment_view(p: Payment) -> dict:
    return {
        "id": p.id,
        "statement_id": p.statement_id,
        "user_id": p.user_id,
        "home_provider_id": p.home_provider_id,
        "method_id": p.method_id,
        "gateway": p.gateway,
        "attempt": p.attempt,
        "trigger": p.trigger,
        "status": p.status,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "minor_digits": p.minor_digits,
        "refunded_minor": p.refunded_minor,
        "decline_code": p.decline_code,
        "decline_message": p.decline_message,
        "next_action": "authenticate" if awaits_authentication(p) else None,
        "next_retry_at": p.next_retry_at,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }
