"""What goes on a statement: a user's charges and credit notes not yet on one, with what each
line is presented by, and the hash of a statement's content (docs/billing.md, "Statements").

Lines are gathered for many users at once (one query for the charges with their award,
provider, network, request and device; one for the reports before each usage report; one for
the requests' recipients; one for the credit notes), so a period close of 10,000 users reads
the store in a few dozen statements, not one per line.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased

from broker.charging import PRICE, VOID, billable
from broker.models import (
    Award,
    Charge,
    CreditNote,
    Device,
    Network,
    PhoneNumber,
    Provider,
    RequestMember,
    ServiceRequest,
    Statement,
    StatementLine,
    UsageReport,
    User,
)
from broker.rating import CONNECT

CREDIT = "credit"
_KIND_ORDER = {PRICE: 0, VOID: 0, CONNECT: 1}

_on_line = aliased(StatementLine)  # the line a charge or note is on, if any
_unassigned_charge = ~exists().where(_on_line.charge_id == Charge.id)
_unassigned_note = ~exists().where(_on_line.credit_note_id == CreditNote.id)
_CHARGES = (
    select(
        Charge.id,
        Charge.user_id,
        Charge.provider_id,
        Charge.kind,
        Charge.amount_minor,
        Charge.currency,
        Charge.minor_digits,
        Charge.rated_at,
        Charge.award_id,
        Charge.job_id,
        Charge.usage_report_id,
        Provider.name.label("provider"),
        Network.name.label("network"),
        Award.services,
        Award.source,
        Award.auction_id,
        Award.negotiation_id,
        Award.share,
        Award.shares,
        Award.request_id,
        Award.volume_bytes,
        Award.data_cap_bytes,
        Award.starts_at,
        Award.ends_at,
        ServiceRequest.device_id,
        Device.name.label("device"),
        UsageReport.sequence,
        UsageReport.bytes_out,
        UsageReport.seconds,
    )
    .join(Provider, Provider.id == Charge.provider_id)
    .join(Network, Network.id == Provider.network_id)
    .join(Award, Award.id == Charge.award_id)
    .join(ServiceRequest, ServiceRequest.id == Award.request_id)
    .outerjoin(Device, Device.id == ServiceRequest.device_id)
    .outerjoin(UsageReport, UsageReport.id == Charge.usage_report_id)
)
_job_order: dict[str, Any] = {"partition_by": UsageReport.job_id, "order_by": UsageReport.sequence}
_LAGGED = (  # each report of some jobs with the counters of the report before it in its job
    select(
        UsageReport.id,
        UsageReport.job_id,
        func.lag(UsageReport.bytes_out, 1, 0).over(**_job_order).label("bytes_out"),
        func.lag(UsageReport.seconds, 1, 0).over(**_job_order).label("seconds"),
    )
)
_FIRST_PHONE = select(PhoneNumber.device_id, PhoneNumber.e164).order_by(
    PhoneNumber.device_id, PhoneNumber.id
)
_MEMBERS = (
    select(
        RequestMember.request_id,
        RequestMember.kind,
        User.name.label("user"),
        Device.name.label("device"),
        RequestMember.e164,
        RequestMember.address,
    )
    .outerjoin(User, User.id == RequestMember.user_id)
    .outerjoin(Device, Device.id == RequestMember.device_id)
    .order_by(RequestMember.request_id, RequestMember.id)
)
_NOTES = (
    select(
        CreditNote.id,
        CreditNote.user_id,
        CreditNote.amount_minor,
        CreditNote.currency,
        CreditNote.minor_digits,
        CreditNote.created_at,
        CreditNote.reason,
        CreditNote.corrects_charge_id,
        StatementLine.position,
        StatementLine.statement_id,
        StatementLine.attrs,
        Charge.provider_id,
    )
    .join(StatementLine, StatementLine.charge_id == CreditNote.corrects_charge_id)
    .join(Charge, Charge.id == CreditNote.corrects_charge_id)
)


def _description(row) -> str:
    if row.kind == PRICE:
        ident = row.auction_id if row.source == "auction" else row.negotiation_id
        what = (
            "home provider's list"
            if row.source == "home"
            else f"{row.source} {ident}"
            if ident is not None
            else row.source
        )
        share = f", share {row.share + 1} of {row.shares}" if row.shares > 1 else ""
        return f"price: {what}{share}"
    if row.kind == VOID:
        return f"price voided: award {row.award_id} delivered nothing"
    if row.kind == CONNECT:
        return f"connect fee, job {row.job_id}"
    return f"{row.kind} past the award's terms, job {row.job_id} report {row.sequence}"


def _recipient(member) -> str:
    return {
        "user": member.user,
        "device": member.device,
        "phone": member.e164,
        "address": member.address,
    }[member.kind] or "?"


def gather(
    session: Session, home_provider_id: int, user_ids: Iterable[int], before: datetime
) -> dict[int, list[dict]]:
    """Per user, the lines its next statement from ``home_provider_id`` takes: each of its
    charges rated before ``before`` and each credit note made before it that is on no
    statement yet, in the order they are presented (time, then price before connect before
    usage, then id). A line is a dict of the statement's line form without ``id``, with the
    delivering ``provider_id`` (for the ledger; not part of the stored line)."""
    users = sorted(set(user_ids))
    lines: dict[int, list[dict]] = {u: [] for u in users}
    if not users:
        return lines
    conn = session.connection()
    rows = conn.execute(
        _CHARGES.where(
            Charge.home_provider_id == home_provider_id,
            Charge.user_id.in_(users),
            Charge.rated_at < before,
            _unassigned_charge,
        )
    ).all()
    report_ids = [r.usage_report_id for r in rows if r.usage_report_id is not None]
    wanted = set(report_ids)
    previous: dict[int, tuple[int, int]] = {}
    for chunk in _chunks(sorted({r.job_id for r in rows if r.usage_report_id is not None})):
        for rid, _job, bytes_out, seconds in conn.execute(
            _LAGGED.where(UsageReport.job_id.in_(chunk))
        ):
            if rid in wanted:
                previous[rid] = (bytes_out, seconds)
    devices = sorted({r.device_id for r in rows if r.device_id is not None})
    phones: dict[int | None, str] = {}  # the query asks for some devices' numbers only
    for chunk in _chunks(devices):
        for device_id, e164 in conn.execute(_FIRST_PHONE.where(PhoneNumber.device_id.in_(chunk))):
            phones.setdefault(device_id, e164)
    recipients: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(sorted({r.request_id for r in rows})):
        for member in conn.execute(_MEMBERS.where(RequestMember.request_id.in_(chunk))):
            recipients[member.request_id].append(_recipient(member))
    for r in rows:
        quantity = unit = None
        if r.usage_report_id is not None and r.kind in ("bytes", "seconds"):
            terms = {
                "volume_bytes": r.volume_bytes,
                "data_cap_bytes": r.data_cap_bytes,
                "starts_at": r.starts_at,
                "ends_at": r.ends_at,
            }
            after = billable(terms, {"bytes_out": r.bytes_out, "seconds": r.seconds})
            prior = previous.get(r.usage_report_id, (0, 0))
            was = billable(terms, {"bytes_out": prior[0], "seconds": prior[1]})
            quantity, unit = after[r.kind] - was[r.kind], r.kind
        lines[r.user_id].append(
            {
                "charge_id": r.id,
                "credit_note_id": None,
                "provider_id": r.provider_id,
                "kind": r.kind,
                "amount_minor": r.amount_minor,
                "currency": r.currency,
                "minor_digits": r.minor_digits,
                "at": r.rated_at,
                "provider": r.provider,
                "network": r.network,
                "services": r.services.split(","),
                "device": r.device,
                "phone": phones.get(r.device_id),
                "recipients": sorted(recipients.get(r.request_id, [])),
                "award_id": r.award_id,
                "job_id": r.job_id,
                "usage_report_id": r.usage_report_id,
                "usage_sequence": r.sequence,
                "quantity": quantity,
                "unit": unit,
                "corrects": None,
                "description": _description(r),
            }
        )
    notes = conn.execute(
        _NOTES.where(
            CreditNote.home_provider_id == home_provider_id,
            CreditNote.user_id.in_(users),
            CreditNote.created_at < before,
            _unassigned_note,
        )
    ).all()
    numbers = _statement_numbers(session, {n.statement_id for n in notes})
    for n in notes:
        corrected = n.attrs
        lines[n.user_id].append(
            {
                **{
                    k: corrected.get(k)
                    for k in (
                        "provider",
                        "network",
                        "services",
                        "device",
                        "phone",
                        "recipients",
                        "award_id",
                        "job_id",
                    )
                },
                "charge_id": None,
                "credit_note_id": n.id,
                "provider_id": n.provider_id,
                "kind": CREDIT,
                "amount_minor": n.amount_minor,
                "currency": n.currency,
                "minor_digits": n.minor_digits,
                "at": n.created_at,
                "usage_report_id": None,
                "usage_sequence": None,
                "quantity": None,
                "unit": None,
                "corrects": {"statement_number": numbers[n.statement_id], "line": n.position},
                "description": f"credit note {n.id}: {n.reason}",
            }
        )
    for user_lines in lines.values():
        user_lines.sort(
            key=lambda x: (
                x["at"],
                x["credit_note_id"] is not None,
                _KIND_ORDER.get(x["kind"], 2),
                x["charge_id"] or x["credit_note_id"],
            )
        )
    return lines


def _statement_numbers(session: Session, ids: set[int]) -> dict[int, int | None]:
    if not ids:
        return {}
    return dict(
        session.connection()
        .execute(select(Statement.id, Statement.number).where(Statement.id.in_(sorted(ids))))
        .all()
    )


def _chunks(values: list, size: int = 900) -> Iterable[list]:
    # SQLite caps bound parameters per statement; 900 stays well under every limit.
    for i in range(0, len(values), size):
        yield values[i : i + size]


ATTRS = (
    "provider_id",
    "provider",
    "network",
    "services",
    "device",
    "phone",
    "recipients",
    "award_id",
    "job_id",
    "usage_report_id",
    "usage_sequence",
    "quantity",
    "unit",
    "corrects",
    "description",
)


def totals(lines: Iterable[dict]) -> dict[str, int]:
    """Per currency, the sum of the lines in minor units (currencies in code order)."""
    sums: dict[str, int] = defaultdict(int)
    for line in lines:
        sums[line["currency"]] += line["amount_minor"]
    return dict(sorted(sums.items()))


def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")


def content_hash(header: dict, lines: list[dict]) -> str:
    """SHA-256 of a statement's content: the header fields that identify it and every line,
    as canonical JSON (sorted keys, no spaces, times in ISO 8601 UTC)."""
    content = {
        "home_provider_id": header["home_provider_id"],
        "user_id": header["user_id"],
        "period": header["period"],
        "period_start": header["period_start"],
        "period_end": header["period_end"],
        "number": header["number"],
        "totals": header["totals"],
        "lines": [
            {
                "position": line["position"],
                "charge_id": line["charge_id"],
                "credit_note_id": line["credit_note_id"],
                "kind": line["kind"],
                "amount_minor": line["amount_minor"],
                "currency": line["currency"],
                "minor_digits": line["minor_digits"],
                "at": line["at"],
                "attrs": {k: line[k] for k in ATTRS},
            }
            for line in lines
        ],
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()
