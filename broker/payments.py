"""Paying statements by card (docs/billing.md, "Payments"): cards on file, a payment in three
steps (start, charge, settle), automatic collection, dunning, the unknown-status resolver,
refunds, and the payment rating a statement's outcome becomes.

A payment is started in one transaction (the statement row locked; one attempt in flight per
statement, held by a partial unique index), the gateway is called outside any transaction
with a key derived from the statement and the attempt, and the answer is settled in another
transaction with the statement's ``paid_minor``/``paid_at``, the ledger posting and the rating.
An answer lost to a time-out leaves the payment ``unknown``: `run_due` asks the gateway by the
same key, it never charges again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.cards import check_card
from broker.clock import resolve_now
from broker.currency import MINOR_DIGITS
from broker.errors import Conflict, InvalidInput, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.ledger import Entry, cash, post, receivable, refunds
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

DEFAULT_GATEWAY = "test"
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


# -- cards on file ----------------------------------------------------------------------------

def _require_user(actor: Actor, user_id: int, what: str) -> None:
    if not (actor.is_admin or actor.speaks_for_user(user_id)):
        raise NotYours(f"{actor} may not {what} of user {user_id}", where=f"user {user_id}")


def add_method(session: Session, actor: Actor, user_id: int, gw: PaymentGateway, *,
               token: str | None = None, card_number: str | None = None,
               exp_month: int | None = None, exp_year: int | None = None,
               make_default: bool = False, idempotency_key: str | None = None,
               now: datetime | None = None) -> PaymentMethod:
    """Keep a card for the user: by the gateway's token, or by number and expiry (checked
    here, then tokenized by the gateway; the number is not kept). The user's first card, or
    one with ``make_default``, becomes its default."""
    now = resolve_now(now)
    if session.get(User, user_id) is None:
        raise NotFound("user", user_id)
    _require_user(actor, user_id, "add cards")
    if (token is None) == (card_number is None):
        raise InvalidInput("give either a gateway token or a card number", field="token")
    if token is not None:
        card = gw.card(token)
        params = {"user": user_id, "token": token, "default": make_default}
    else:
        if not hasattr(gw, "tokenize"):
            raise InvalidInput(f"gateway {gw.name} takes tokens only", field="card_number")
        checked = check_card(card_number, exp_month, exp_year, now)
        card = gw.tokenize(checked)
        params = {"user": user_id, "token": card.token, "exp": [exp_month, exp_year],
                  "default": make_default}

    def run() -> PaymentMethod:
        has_default = session.scalar(select(PaymentMethod.id).where(
            PaymentMethod.user_id == user_id, PaymentMethod.is_default))
        default = make_default or has_default is None
        if default and has_default is not None:
            session.execute(update(PaymentMethod).where(PaymentMethod.id == has_default)
                            .values(is_default=False))
        method = PaymentMethod(user_id=user_id, gateway=gw.name, token=card.token,
                               brand=card.brand, last4=card.last4, exp_month=card.exp_month,
                               exp_year=card.exp_year, is_default=default, created_at=now)
        session.add(method)
        session.flush()
        return method

    return once(session, actor, idempotency_key, "add_payment_method", params, PaymentMethod,
                run)


def list_methods(session: Session, actor: Actor, user_id: int) -> list[PaymentMethod]:
    _require_user(actor, user_id, "see the cards")
    return list(session.scalars(select(PaymentMethod).where(
        PaymentMethod.user_id == user_id, PaymentMethod.deleted_at.is_(None))
        .order_by(PaymentMethod.id)))


def delete_method(session: Session, actor: Actor, user_id: int, method_id: int, *,
                  now: datetime | None = None) -> None:
    """Forget a card (deleting it again changes nothing); when it was the default, the
    user's newest other card becomes the default."""
    now = resolve_now(now)
    _require_user(actor, user_id, "delete cards")
    method = session.get(PaymentMethod, method_id)
    if method is None or method.user_id != user_id:
        raise NotFound("payment method", method_id)
    if method.deleted_at is not None:
        return
    method.deleted_at, was_default, method.is_default = now, method.is_default, False
    session.flush()
    if was_default:
        other = session.scalar(select(PaymentMethod).where(
            PaymentMethod.user_id == user_id, PaymentMethod.deleted_at.is_(None))
            .order_by(PaymentMethod.id.desc()).limit(1))
        if other is not None:
            other.is_default = True


def method_view(m: PaymentMethod) -> dict:
    return {"id": m.id, "user_id": m.user_id, "gateway": m.gateway, "brand": m.brand,
            "last4": m.last4, "exp_month": m.exp_month, "exp_year": m.exp_year,
            "is_default": m.is_default, "created_at": m.created_at}


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
            _rate(session, statement, SCORE_ON_TIME if statement.due_at is None
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


# -- the jobs: collection, dunning, the resolver ----------------------------------------------

def collect(store, statement_ids: list[int], *, gateways: Gateways | None = None,
            now: datetime | None = None) -> dict:
    """Automatic collection after a close: charge each finalized, unpaid statement with an
    amount due to its user's default card (a user with none waits to pay). Run after the
    finalizing transactions, never inside them. Returns counts by outcome."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    out: dict[str, int] = {}
    for sid in statement_ids:
        with store.read() as s:
            st = s.get(Statement, sid)
            has_card = st is not None and s.scalar(select(PaymentMethod.id).where(
                PaymentMethod.user_id == st.user_id, PaymentMethod.is_default))
            totals = {c: m for c, m in ((st.totals or {}) if st else {}).items() if m}
            due = (st is not None and st.status == "finalized" and st.paid_at is None
                   and len(totals) == 1 and next(iter(totals.values())) > 0)
        if not due or not has_card:
            out["skipped"] = out.get("skipped", 0) + 1
            continue
        try:
            p = pay(store, None, sid, trigger="collection", gateways=gateways, now=now)
            out[p.status] = out.get(p.status, 0) + 1
        except (WrongState, Conflict) as exc:
            log.info("collection of statement %s: %s", sid, exc)
            out["skipped"] = out.get("skipped", 0) + 1
    return out


def run_due(store, *, gateways: Gateways | None = None, now: datetime | None = None) -> dict:
    """The payments job (``pktx broker payments run-due``): resolve unknown (and stale
    pending) payments and refunds by asking the gateway, retry failed payments whose time has
    come (dunning, with the user's default card), and rate overdue unpaid statements."""
    now = resolve_now(now)
    gateways = gateways or gateways_of(store)
    report = {"resolved": 0, "retried": 0, "rated_overdue": 0}
    with store.read() as s:
        asks = list(s.execute(select(Payment.id, Payment.gateway, Payment.gateway_key).where(
            (Payment.status == UNKNOWN)
            | ((Payment.status == PENDING) & (Payment.updated_at < now - STALE_PENDING)))))
        refund_asks = list(s.execute(
            select(Refund.id, Payment.gateway, Refund.gateway_key)
            .join(Payment, Payment.id == Refund.payment_id).where(
                (Refund.status == UNKNOWN)
                | ((Refund.status == PENDING) & (Refund.updated_at < now - STALE_PENDING)))))
    for pid, name, key in asks:
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
        due = list(s.execute(select(Payment.id, Payment.statement_id).where(
            Payment.status.in_((FAILED, CANCELED)), Payment.next_retry_at <= now)))
    for pid, sid in due:
        with store.write() as s:
            s.execute(update(Payment).where(Payment.id == pid).values(next_retry_at=None))
        try:
            pay(store, None, sid, trigger="dunning", gateways=gateways, now=now)
            report["retried"] += 1
        except (WrongState, Conflict, InvalidInput) as exc:
            log.info("dunning of statement %s: %s", sid, exc)
    with store.write() as s:
        overdue = list(s.scalars(select(Statement).where(
            Statement.status == "finalized", Statement.paid_at.is_(None),
            Statement.due_at < now)))
        for st in overdue:
            totals = [m for m in (st.totals or {}).values() if m]
            if len(totals) == 1 and totals[0] > 0 and _rate(s, st, SCORE_OVERDUE, now):
                report["rated_overdue"] += 1
    return report


def _rate(session: Session, statement: Statement, score: int, now: datetime) -> bool:
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


# -- refunds ----------------------------------------------------------------------------------

def refund(store, actor: Actor, payment_id: int, amount_minor: int, *, reason: str = "",
           idempotency_key: str | None = None, gateways: Gateways | None = None,
           now: datetime | None = None) -> Refund:
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
            raise NotYours(f"{actor} may not refund payment {payment_id}: only its home "
                           f"provider {payment.home_provider_id}", where=f"payment {payment_id}")
        if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) \
                or amount_minor <= 0:
            raise InvalidInput("a refund is a positive whole number of minor units",
                               field="amount_minor")
        if not isinstance(reason, str) or len(reason) > 500:
            raise InvalidInput("a reason is at most 500 characters", field="reason")

        def run() -> Refund:
            nonlocal made
            if payment.status != SUCCEEDED:
                raise WrongState(f"payment {payment_id} is {payment.status}; only a succeeded "
                                 f"payment is refunded", where=f"payment {payment_id}")
            left = payment.amount_minor - payment.refunded_minor
            if amount_minor > left:
                raise InvalidInput(f"payment {payment_id} paid {payment.amount_minor} and "
                                   f"{payment.refunded_minor} of it is refunded (or under "
                                   f"way); at most {left} more can be", field="amount_minor")
            n = 1 + int(s.scalar(select(func.count()).select_from(Refund)
                                 .where(Refund.payment_id == payment_id)))
            payment.refunded_minor += amount_minor
            r = Refund(payment_id=payment_id, statement_id=payment.statement_id,
                       gateway_key=f"pktx-payment-{payment_id}-refund-{n}", status=PENDING,
                       amount_minor=amount_minor, currency=payment.currency, reason=reason,
                       created_at=now, updated_at=now)
            s.add(r)
            s.flush()
            made = True
            return r

        r = once(s, actor, idempotency_key, "refund",
                 {"payment": payment_id, "amount": amount_minor, "reason": reason}, Refund, run)
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


def settle_refund(session: Session, refund_id: int, result: GatewayResult,
                  now: datetime) -> Refund:
    """Record a refund's answer: a success takes it off the statement's ``paid_minor`` and
    posts it (debit ``refunds``, credit ``cash``); a failure frees the reserved amount."""
    r = session.scalar(select(Refund).where(Refund.id == refund_id).with_for_update())
    if r.status not in IN_FLIGHT or result.status == PENDING:
        return r
    r.updated_at = now
    r.status = result.status
    if result.status == UNKNOWN:
        return r
    payment = session.scalar(select(Payment).where(Payment.id == r.payment_id).with_for_update())
    if result.status == SUCCEEDED:
        r.gateway_ref = result.ref
        statement = session.get(Statement, r.statement_id)
        statement.paid_minor -= r.amount_minor
        post(session, REFUND_POSTING, str(r.id), [
            Entry(refunds(payment.home_provider_id), r.currency, r.amount_minor),
            Entry(cash(payment.home_provider_id), r.currency, -r.amount_minor)],
            memo=f"payment {payment.id} of statement {r.statement_id}", now=now)
    else:
        r.decline_code = result.decline_code
        payment.refunded_minor -= r.amount_minor
    return r


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


def refund_view(r: Refund) -> dict:
    return {"id": r.id, "payment_id": r.payment_id, "statement_id": r.statement_id,
            "status": r.status, "amount_minor": r.amount_minor, "currency": r.currency,
            "reason": r.reason, "decline_code": r.decline_code, "created_at": r.created_at}
