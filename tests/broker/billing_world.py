"""Charges to bill: awards by several providers for the `world` fixture's users, their tariffs
and usage reports, written through the domain functions, at times the tests choose."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from broker.awards import make_award
from broker.models import (
    Award,
    AwardPayer,
    BillingSettings,
    Charge,
    CreditNote,
    DeliveryJob,
    DeviceEvent,
    IdempotencyRecord,
    LedgerEntry,
    LedgerPosting,
    RequestMember,
    ServiceRequest,
    Statement,
    StatementLine,
    TariffVersion,
    UsageReport,
)
from broker.requests import submit_request
from broker.tariff_book import publish_tariff
from broker.usage import report_usage

VOLUME = 1_000_000
# Every table billing writes, in an order that deletes them (a state machine empties them
# between examples; the directory stays).
BILLING_TABLES = (
    LedgerEntry,
    LedgerPosting,
    StatementLine,
    CreditNote,
    DeviceEvent,
    Statement,
    BillingSettings,
    Charge,
    UsageReport,
    DeliveryJob,
    AwardPayer,
    Award,
    RequestMember,
    ServiceRequest,
    IdempotencyRecord,
    TariffVersion,
)
PER_BYTE_PAST_VOLUME = {
    "rate_unit": 1000,
    "increment": 1,
    "tiers": [{"up_to": None, "price": "0.013"}],
}


def publish_bytes_tariff(
    store, m, provider_id: int, services: str, at: datetime, *, connect_fee: str = "0"
) -> None:
    """0.013 per 1,000 bytes past the award's volume, from ``at``. ``m``: a `Market`."""
    with store.write() as s:
        publish_tariff(
            s,
            m.actor("provider", provider_id),
            provider_id,
            {
                "services": services.split(","),
                "currency": "EUR",
                "connect_fee": connect_fee,
                "active_from": at.isoformat(),
                "dimensions": {"bytes": PER_BYTE_PAST_VOLUME},
            },
            now=at,
        )


def award(
    store, requester, provider_id: int, *, price: int, at: datetime, services: str = "anonymize"
) -> int:
    """A request of ``requester`` (a user's or device's `Actor`) awarded to ``provider_id``
    at ``price`` (served at home when the home provider offers the services); its job id."""
    with store.write() as s:
        request = submit_request(s, requester, services=services, volume_bytes=VOLUME, now=at)
        s.flush()
        if request.status != "served":
            request = s.get(ServiceRequest, request.id)
            make_award(s, request, provider_id, price, source="auction", now=at)
        return s.scalar(select(DeliveryJob.id).order_by(DeliveryJob.id.desc()).limit(1))


def report(
    store, m, provider_id: int, job_id: int, sequence: int, bytes_out: int, at: datetime
) -> dict:
    with store.write() as s:
        view, _ = report_usage(
            s,
            m.actor("provider", provider_id),
            job_id,
            sequence,
            {"bytes_out": bytes_out, "packets_out": bytes_out // 1000},
            at=at,
            now=at + timedelta(seconds=1),
        )
        return view


def charged(store, user_id: int) -> dict[str, int]:
    """The user's charges in the store per currency (the statements must add up to this)."""
    with store.read() as s:
        rows = s.execute(
            select(Charge.currency, func.sum(Charge.amount_minor))
            .where(Charge.user_id == user_id)
            .group_by(Charge.currency)
        ).all()
    return {c: int(m) for c, m in rows}


def credit_some_line(store, actor, pick: int, part: int, now: datetime) -> str:
    """A credit note of ``part`` percent (at least 1 minor unit) on the ``pick``-th statement
    line that charges something, by ``actor``; what happened, for the property tests' notes
    (a line with too little left to credit is refused and nothing is written)."""
    from broker.errors import BrokerError
    from broker.statements import credit_line

    with store.read() as s:
        lines = s.execute(
            select(StatementLine.statement_id, StatementLine.position, StatementLine.amount_minor)
            .where(StatementLine.charge_id.is_not(None), StatementLine.amount_minor > 1)
            .order_by(StatementLine.id)
        ).all()
    if not lines:
        return "no line to credit"
    statement, position, amount = lines[pick % len(lines)]
    try:
        with store.write() as s:
            credit_line(
                s,
                actor,
                statement,
                position,
                amount_minor=-max(amount * part // 100, 1),
                reason="goodwill",
                now=now,
            )
    except BrokerError as exc:  # more than is left to credit on the line
        return f"credit refused: {exc}"
    return f"credited statement {statement} line {position}"
