"""Usage intake: a delivery job's cumulative usage reports, each taken in exactly once and
charged the difference from the report before it (docs/billing.md, "Usage intake").

A report is identified by (job, sequence), unique in the table with no time window: the same
report again answers what was stored; the same sequence with other numbers is a conflict;
counters that go backwards are refused. The charge is rated by the delivering provider's tariff
version active when the usage happened, on the usage the award's price does not cover
(`broker.charging.billable`), and split among the award's payers by their shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, union_all
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.awards import get_award
from broker.bounds import check_int
from broker.charging import allocate, billable
from broker.clock import as_utc, resolve_now
from broker.currency import MINOR_DIGITS
from broker.errors import (
    InvalidInput,
    LeaseLost,
    NotFound,
    NotYours,
    ReportMismatch,
    WrongState,
)
from broker.groupcommit import deferred
from broker.models import (
    COUNTERS,
    Award,
    AwardPayer,
    Charge,
    DeliveryJob,
    TariffVersion,
    UsageReport,
)
from broker.rating import CONNECT, charge_for_report
from broker.tariff_book import _PARSED, parsed

# Per-service counters: for each service of the job's chain, these running totals.
SERVICE_COUNTERS = ("packets", "bytes")
FINISHED = ("done", "failed")
_COUNTER_OF = {"bytes": "bytes_out", "seconds": "seconds"}  # rated dimension -> counter

# The tariff version active at ``at`` for the award's provider and chain (rule 9 of
# docs/billing.md; unique (provider, services, active_from): never a tie), as a column of the
# job's query.
_TARIFF_AT = (
    select(TariffVersion.id)
    .where(
        TariffVersion.provider_id == Award.provider_id,
        TariffVersion.services == Award.services,
        TariffVersion.active_from <= bindparam("at"),
    )
    .order_by(TariffVersion.active_from.desc())
    .limit(1)
    .correlate(Award)
    .scalar_subquery()
)
# The job, its award's terms, the tariff version active at ``at`` and the award's payers (one
# row per payer, in their order): one query.
_JOB_TERMS = (
    select(
        DeliveryJob.status,
        DeliveryJob.provider_id.label("job_provider"),
        DeliveryJob.token,
        Award.id.label("award_id"),
        Award.provider_id,
        Award.home_provider_id,
        Award.services,
        Award.currency,
        Award.volume_bytes,
        Award.data_cap_bytes,
        Award.starts_at,
        Award.ends_at,
        _TARIFF_AT.label("tariff_id"),
        AwardPayer.user_id.label("payer"),
        AwardPayer.share_minor,
    )
    .join(Award, Award.id == DeliveryJob.award_id)
    .outerjoin(AwardPayer, AwardPayer.award_id == Award.id)
)
_JOB = _JOB_TERMS.where(DeliveryJob.id == bindparam("job")).order_by(AwardPayer.id)
# The same for every job of a group commit's batch at once, at the batch's latest time.
_JOBS = (
    _JOB_TERMS.add_columns(DeliveryJob.id.label("job_id"))
    .where(DeliveryJob.id.in_(bindparam("jobs", expanding=True)))
    .order_by(DeliveryJob.id, AwardPayer.id)
)
_TARIFF_DOC = select(TariffVersion.doc).where(TariffVersion.id == bindparam("id"))
_REPORT_COLUMNS = (
    UsageReport.id,
    UsageReport.sequence,
    UsageReport.usage_at,
    *(getattr(UsageReport, c) for c in COUNTERS),
    UsageReport.service_counters,
    UsageReport.tariff_id,
    UsageReport.charged_minor,
    UsageReport.currency,
    UsageReport.created_at,
)
# The report with this sequence (if any), the one before it and the one after it: one query.
_AT_AND_BEFORE = (
    select(*_REPORT_COLUMNS)
    .where(UsageReport.job_id == bindparam("job"), UsageReport.sequence <= bindparam("sequence"))
    .order_by(UsageReport.sequence.desc())
    .limit(2)
    .subquery()
)
_AFTER = (
    select(*_REPORT_COLUMNS)
    .where(UsageReport.job_id == bindparam("job"), UsageReport.sequence > bindparam("sequence"))
    .order_by(UsageReport.sequence)
    .limit(1)
    .subquery()
)
_NEIGHBOURS = union_all(select(_AT_AND_BEFORE), select(_AFTER))
# Each job's latest report, for every job of a batch at once.
_LAST = (
    select(UsageReport.job_id, func.max(UsageReport.sequence).label("sequence"))
    .where(UsageReport.job_id.in_(bindparam("jobs", expanding=True)))
    .group_by(UsageReport.job_id)
    .subquery()
)
_LATEST = select(UsageReport.job_id, *_REPORT_COLUMNS).join(
    _LAST, and_(UsageReport.job_id == _LAST.c.job_id, UsageReport.sequence == _LAST.c.sequence)
)
PREFETCH_KIND = "usage: jobs and latest reports"
_INSERT_REPORT = insert(UsageReport).returning(UsageReport.id)
# Many reports at once (a group commit's batch), their ids in the order of the rows.
_INSERT_REPORTS = insert(UsageReport).returning(UsageReport.id, sort_by_parameter_order=True)
_DEFERRED = "usage reports"
_INSERT_CHARGES = insert(Charge)
_LINES = (
    select(Charge.kind, func.sum(Charge.amount_minor))
    .where(Charge.usage_report_id == bindparam("report"))
    .group_by(Charge.kind)
    .order_by(Charge.kind)
)


def check_services(services: object, chain: str) -> dict[str, dict[str, int]]:
    """Per-service counters: only the job's own services, only the known counters."""
    if not isinstance(services, Mapping):
        raise InvalidInput("must be an object of service -> counters", field="services")
    known = chain.split(",")
    checked = {}
    for name, counters in services.items():
        if name not in known:
            raise InvalidInput(
                f"not a service of this job; its chain is {chain}", field=f"services.{name}"
            )
        if not isinstance(counters, Mapping):
            raise InvalidInput("must be an object of counter -> count", field=f"services.{name}")
        for counter in counters:
            if counter not in SERVICE_COUNTERS:
                raise InvalidInput(
                    f"unknown counter; known: {', '.join(SERVICE_COUNTERS)}",
                    field=f"services.{name}.{counter}",
                )
        checked[name] = {
            c: check_int(counters.get(c, 0), field=f"services.{name}.{c}") for c in SERVICE_COUNTERS
        }
    return checked


def _not_backwards(report: Mapping, before, *, later: bool = False) -> None:
    """Every counter of ``report`` at least ``before``'s (``later``: at most the next's)."""
    for name in COUNTERS:
        mine, theirs = report[name], getattr(before, name)
        if (mine > theirs) if later else (mine < theirs):
            raise InvalidInput(
                f"counters are cumulative: {mine} is {'above' if later else 'below'} "
                f"{theirs} of report {before.sequence}",
                field=name,
            )
    for service, counters in before.service_counters.items():
        for name, theirs in counters.items():
            mine = report["services"].get(service, {}).get(name, 0)
            if (mine > theirs) if later else (mine < theirs):
                raise InvalidInput(
                    f"counters are cumulative: {mine} is {'above' if later else 'below'} "
                    f"{theirs} of report {before.sequence}",
                    field=f"services.{service}.{name}",
                )


def _same(report: Mapping, stored) -> bool:
    return all(report[c] == getattr(stored, c) for c in COUNTERS) and _normal(
        report["services"]
    ) == _normal(stored.service_counters)


def _normal(services: Mapping) -> dict:
    return {
        s: {c: n for c, n in counters.items() if n}
        for s, counters in services.items()
        if any(counters.values())
    }


def _tariff(conn, tariff_id: int):
    """The stored tariff version ``tariff_id``, parsed once per database and row."""
    database = conn.engine.url.render_as_string()
    tariff = _PARSED.get((database, tariff_id))
    if tariff is None:
        tariff = parsed(
            database, tariff_id, conn.execute(_TARIFF_DOC, {"id": tariff_id}).scalar_one()
        )
    return tariff


def prefetch(job_id: int, at: datetime | None, now: datetime):
    """What `report_usage` of ``job_id`` wants read with the rest of its group commit's batch
    (`broker.groupcommit.Prefetch`): the job's terms and its latest report."""
    try:
        tariff_at = now if at is None else as_utc(at, field="at")
    except InvalidInput:
        tariff_at = now
    return PREFETCH_KIND, _read_batch, (job_id, tariff_at)


def _read_batch(session: Session, keys: list[tuple[int, datetime]]) -> dict:
    """For the jobs of ``keys``: job id -> (its `_JOB` rows at the batch's latest time, its
    latest report or None); two statements for the whole batch."""
    conn = session.connection()
    jobs = sorted({job for job, _ in keys})
    found: dict = {}
    for row in conn.execute(_JOBS, {"jobs": jobs, "at": max(t for _, t in keys)}):
        found.setdefault(row.job_id, ([], None))[0].append(row)
    for row in conn.execute(_LATEST, {"jobs": jobs}):
        if row.job_id in found:
            found[row.job_id] = (found[row.job_id][0], row)
    return found


def report_usage(
    session: Session,
    actor: Actor,
    job_id: int,
    sequence: int,
    counters: Mapping[str, int],
    *,
    services: Mapping | None = None,
    at: datetime | None = None,
    now: datetime | None = None,
    token: int | None = None,
) -> tuple[dict, bool]:
    """Take in report ``sequence`` of job ``job_id``; (its view, whether it is new).

    ``counters`` are the job's running totals (`COUNTERS`, each 0..2**63-1, checked by the
    caller's schema or here); ``at`` when they were read (default: now, never later). The same
    sequence again with the same numbers returns the stored report, changing nothing.
    ``token``, the daemon's fencing token (`broker.dispatch`): a report under a token that is
    not the job's current one, or a new report of a job handed back, is `LeaseLost`.

    Every check and read comes before the first write: a `BrokerError` raised here has written
    nothing (the group commit runs it without a savepoint of its own on that promise). Four
    statements for a new report: the job (with its award's terms, the tariff version active at
    the report's time and the payers), the neighbouring reports, the insert, the charges; in a
    group commit's batch the last two are deferred to its end, for every report of the batch
    at once (`broker.groupcommit.deferred`).
    """
    now = resolve_now(now)
    conn = session.connection()
    later = deferred(session)
    if later is not None and any(r["job_id"] == job_id for r, _ in later.pending(_DEFERRED)):
        later.flush(session)  # this job's report before, still unwritten: the reads need it
    try:  # the tariff version is looked up at the report's time (a bad one is refused below)
        tariff_at = now if at is None else as_utc(at, field="at")
    except InvalidInput:
        tariff_at = now
    # Read with the rest of the batch (`prefetch`), once: a second report of the job in the
    # batch reads afresh, after the first is written.
    read = later.found.get(PREFETCH_KIND, {}).pop(job_id, None) if later is not None else None
    job_rows, latest = read if read is not None else (None, None)
    if (
        job_rows
        and job_rows[0].tariff_id is not None
        and _tariff(conn, job_rows[0].tariff_id).active_from > tariff_at
    ):
        job_rows = None  # a version active at the batch's time but not yet at this report's
    if not job_rows:
        job_rows = conn.execute(_JOB, {"job": job_id, "at": tariff_at}).all()
    if not job_rows:
        raise NotFound("delivery job", job_id)
    job = job_rows[0]
    if not actor.speaks_for_provider(job.job_provider):
        raise NotYours(
            f"{actor} does not deliver job {job_id}; only its provider reports usage",
            where=f"delivery job {job_id}",
        )
    if token is not None and token != job.token:
        raise LeaseLost(
            f"token {token} is stale: the job was claimed again (token "
            f"{job.token}); nothing of this report was kept",
            where=f"delivery job {job_id}",
            field="token",
        )
    report: dict[str, Any] = {c: check_int(counters.get(c, 0), field=c) for c in COUNTERS}
    unknown = set(counters) - set(COUNTERS)
    if unknown:
        raise InvalidInput(
            f"unknown counter; known: {', '.join(COUNTERS)}", field=sorted(unknown)[0]
        )
    report["services"] = check_services(services or {}, job.services)
    where = f"usage report {sequence} of job {job_id}"
    if read is not None and (latest is None or latest.sequence < sequence):
        rows = [] if latest is None else [latest]  # the next report, as most are
    else:
        rows = sorted(
            conn.execute(_NEIGHBOURS, {"job": job_id, "sequence": sequence}).all(),
            key=lambda r: r.sequence,
        )
    after = rows.pop() if rows and rows[-1].sequence > sequence else None
    if rows and rows[-1].sequence == sequence:
        stored = rows[-1]
        if not _same(report, stored):
            raise ReportMismatch(
                "was taken in before with other counters; a report is sent "
                "again unchanged, new usage goes in a new sequence",
                where=where,
            )
        return _view(conn, job_id, job.award_id, stored), False
    if job.status in FINISHED:
        raise WrongState(f"job {job_id} is {job.status}: it takes no more usage", where=where)
    if token is not None and job.status == "queued":
        raise LeaseLost(
            f"the job was handed back under token {token}; nothing of this report was kept",
            where=where,
            field="token",
        )
    before = rows[-1] if rows else None
    # A late report without its time is placed at the latest it can have been read: when the
    # report after it was.
    at = (now if after is None else after.usage_at) if at is None else as_utc(at, field="at")
    if at > now:
        raise InvalidInput(
            f"{at.isoformat()} is in the future (it is {now.isoformat()})", field="at"
        )
    if before is not None:
        _not_backwards(report, before)
        if at < before.usage_at:
            raise InvalidInput(
                f"is before report {before.sequence}'s {before.usage_at.isoformat()}", field="at"
            )
    if after is not None:
        _not_backwards(report, after, later=True)
        if at > after.usage_at:
            raise InvalidInput(
                f"is after report {after.sequence}'s {after.usage_at.isoformat()}", field="at"
            )
    lines: tuple[tuple[str, int], ...] = ()
    tariff_id, version, currency = None, None, None
    # A report that arrives after a later one (late) is kept but charged nothing: the later
    # report's difference already covers its usage. Otherwise ``at`` is the time the job's
    # query looked the tariff version up at.
    if after is None and job.tariff_id is not None:
        tariff_id, tariff = job.tariff_id, _tariff(conn, job.tariff_id)
        version, currency = tariff.version, tariff.currency
        previous = billable(
            job, before._mapping if before is not None else dict.fromkeys(COUNTERS, 0)
        )
        try:
            charge = charge_for_report(tariff, previous, billable(job, report))
        except InvalidInput as exc:  # a charge past 64 bits: name the counter that drives it
            dimension = (exc.field or "").rpartition(".")[2]
            raise InvalidInput(
                exc.message, where=where, field=_COUNTER_OF.get(dimension, exc.field)
            ) from None
        lines = tuple((kind, minor) for kind, minor in charge.lines if kind != CONNECT and minor)
    total = sum(minor for _, minor in lines)
    charges: list[dict[str, Any]] = []
    if lines:  # each line split among the payers: worked out before anything is written
        assert currency is not None  # lines come from a tariff, which has a currency
        payers = [(r.payer, r.share_minor) for r in job_rows if r.payer is not None]
        for kind, minor in lines:
            for (payer, _), part in zip(
                payers, allocate(minor, [s for _, s in payers]), strict=True
            ):
                if part:
                    charges.append(
                        {
                            "user_id": payer,
                            "provider_id": job.provider_id,
                            "home_provider_id": job.home_provider_id,
                            "award_id": job.award_id,
                            "job_id": job_id,
                            "kind": kind,
                            "amount_minor": part,
                            "currency": currency,
                            "minor_digits": MINOR_DIGITS[currency],
                            "tariff_id": tariff_id,
                            "tariff_version": version,
                            "rated_at": now,
                        }
                    )
    row = {
        **{c: report[c] for c in COUNTERS},
        "job_id": job_id,
        "award_id": job.award_id,
        "sequence": sequence,
        "usage_at": at,
        "service_counters": report["services"],
        "tariff_id": tariff_id,
        "charged_minor": total,
        "currency": currency,
        "created_at": now,
    }
    if later is not None:  # in a group commit's batch: written with the batch's other reports
        later.add(_DEFERRED, _write_reports, (row, charges))
    else:
        _write_reports(session, [(row, charges)])
    return {
        "job_id": job_id,
        "award_id": job.award_id,
        "sequence": sequence,
        "usage_at": at,
        **{c: report[c] for c in COUNTERS},
        "services": report["services"],
        "charged_minor": total,
        "currency": currency,
        "tariff_id": tariff_id,
        "tariff_version": version,
        "lines": [{"kind": k, "amount_minor": m} for k, m in lines],
        "received_at": now,
    }, True


def _write_reports(session: Session, reports: list[tuple[dict, list[dict]]]) -> None:
    """Insert reports (rows of `usage_reports`) with their charge lines: two statements."""
    conn = session.connection()
    if len(reports) == 1:
        ids: Sequence[int] = [conn.execute(_INSERT_REPORT, reports[0][0]).scalar_one()]
    else:
        ids = conn.execute(_INSERT_REPORTS, [row for row, _ in reports]).scalars().all()
    charges = [
        {**charge, "usage_report_id": report_id}
        for (_, lines), report_id in zip(reports, ids, strict=True)
        for charge in lines
    ]
    if charges:
        conn.execute(_INSERT_CHARGES, charges)


def _view(conn, job_id: int, award_id: int, stored) -> dict:
    lines = conn.execute(_LINES, {"report": stored.id}).all()
    version = None if stored.tariff_id is None else _tariff(conn, stored.tariff_id).version
    return {
        "job_id": job_id,
        "award_id": award_id,
        "sequence": stored.sequence,
        "usage_at": stored.usage_at,
        **{c: getattr(stored, c) for c in COUNTERS},
        "services": stored.service_counters,
        "charged_minor": stored.charged_minor,
        "currency": stored.currency,
        "tariff_id": stored.tariff_id,
        "tariff_version": version,
        "lines": [{"kind": k, "amount_minor": int(m)} for k, m in lines],
        "received_at": stored.created_at,
    }


def job_usage(session: Session, actor: Actor, job_id: int) -> dict:
    """A job's usage so far (its latest report's counters) and what it has been charged, per
    payer and kind, price included; for the award's parties."""
    job = session.get(DeliveryJob, job_id)
    if job is None:
        raise NotFound("delivery job", job_id)
    get_award(session, actor, job.award_id)  # 403 unless a party of the award
    latest = session.scalars(
        select(UsageReport)
        .where(UsageReport.job_id == job_id)
        .order_by(UsageReport.sequence.desc())
        .limit(1)
    ).first()
    count = session.scalar(
        select(func.count()).select_from(UsageReport).where(UsageReport.job_id == job_id)
    )
    totals = session.execute(
        select(Charge.user_id, Charge.kind, Charge.currency, func.sum(Charge.amount_minor))
        .where(Charge.award_id == job.award_id)
        .group_by(Charge.user_id, Charge.kind, Charge.currency)
        .order_by(Charge.user_id, Charge.kind)
    ).all()
    return {
        "job_id": job_id,
        "award_id": job.award_id,
        "status": job.status,
        "reports": count,
        "last_sequence": latest.sequence if latest else None,
        "usage_at": latest.usage_at if latest else None,
        **{c: getattr(latest, c) if latest else 0 for c in COUNTERS},
        "services": latest.service_counters if latest else {},
        "charges": [
            {"user_id": u, "kind": k, "currency": c, "amount_minor": int(m)}
            for u, k, c, m in totals
        ],
    }
