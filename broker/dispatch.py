"""Dispatch of delivery jobs to providers' daemons: claims under leases with fencing tokens,
the transitions a daemon makes, each one recorded (docs/daemon.md).

A claim takes one job of the provider that is ``queued``, or ``claimed``/``running`` under a
lease that has lapsed, with a conditional UPDATE (``WHERE id = ? AND token = <as read> AND
<still claimable>``): of two daemons claiming at once exactly one changes the row, on SQLite
(writers take turns) and on PostgreSQL (the second UPDATE waits for the first's row lock and
then finds the token moved on). The winner's token is the job's claim count, so every claim
holds a larger token than the ones before it; every later call of the daemon names it, and a
call under any other token is refused (`LeaseLost`) before anything is written.

A job released by a daemon (its lease lapsed, or it handed the job back) goes to the
provider's other daemons first: the daemon that released it can claim it again only
``REOFFER_AFTER`` later. A daemon that lost its lease to a pause but finds it not yet claimed
by another keeps it: its token is still the current one, and a heartbeat renews the lease.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.charging import void_price
from broker.clock import resolve_now
from broker.delivery_record import judge
from broker.errors import InvalidInput, LeaseLost, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.models import (
    COUNTERS,
    Award,
    DeliveryJob,
    JobEvent,
    JobMeasurement,
    SealedParams,
    UsageReport,
)

ACTIVE = ("claimed", "running")
FINISHED = ("done", "failed")
LEASE_S = (5, 300)
REOFFER_AFTER = timedelta(seconds=10)
# A claimed job whose lease lapsed this long ago, past its block's end, is given up for failed.
ABANDONED = timedelta(seconds=60)
_JOBS = DeliveryJob.__table__


def _sealed_ready(sealing_key: str | None):
    """Jobs whose award waits for no sealed parameters, or whose box is sealed to
    ``sealing_key``, the key the claiming daemon holds (SQL): a job waiting for its box, or
    sealed to a key the daemon does not hold, is not claimable by it."""
    waits = exists().where(SealedParams.award_id == DeliveryJob.award_id)
    if sealing_key is None:
        return ~waits
    return or_(
        ~waits,
        exists().where(
            SealedParams.award_id == DeliveryJob.award_id,
            SealedParams.box.is_not(None),
            SealedParams.sealed_to == sealing_key,
        ),
    )


def _claimable(now: datetime, daemon: str, sealing_key: str | None = None):
    """Jobs a claim by ``daemon`` (holding ``sealing_key``) may take at ``now`` (SQL)."""
    lapsed = and_(DeliveryJob.status.in_(ACTIVE), DeliveryJob.lease_expires_at <= now)
    free = or_(DeliveryJob.status == "queued", lapsed)
    # Released by another daemon (or never held), or long enough ago by this one.
    elsewhere = or_(
        DeliveryJob.daemon.is_(None),
        DeliveryJob.daemon != daemon,
        DeliveryJob.lease_expires_at.is_(None),
        DeliveryJob.lease_expires_at <= now - REOFFER_AFTER,
    )
    return and_(free, elsewhere, _sealed_ready(sealing_key))


def check_daemon(daemon: object) -> str:
    if not isinstance(daemon, str) or not 1 <= len(daemon.strip()) <= 100:
        raise InvalidInput("a daemon's name is 1..100 characters", field="daemon")
    return daemon.strip()


def check_lease(lease_s: object) -> timedelta:
    if (
        isinstance(lease_s, bool)
        or not isinstance(lease_s, int)
        or not LEASE_S[0] <= lease_s <= LEASE_S[1]
    ):
        raise InvalidInput(f"a lease is {LEASE_S[0]}..{LEASE_S[1]} seconds", field="lease_s")
    return timedelta(seconds=lease_s)


def _may_dispatch(actor: Actor, provider_id: int) -> None:
    if not actor.speaks_for_provider(provider_id):
        raise NotYours(
            f"{actor} does not speak for provider {provider_id}; only its own "
            f"daemons claim its jobs",
            where=f"provider {provider_id}",
        )


def _record(
    session: Session,
    job_id: int,
    event: str,
    from_status: str | None,
    to_status: str,
    token: int,
    daemon: str | None,
    now: datetime,
    detail: str = "",
) -> None:
    session.add(
        JobEvent(
            job_id=job_id,
            event=event,
            from_status=from_status,
            to_status=to_status,
            token=token,
            daemon=daemon,
            at=now,
            detail=detail[:300],
        )
    )


def something_to_claim(
    session: Session, provider_id: int, now: datetime, sealing_key: str | None = None
) -> bool:
    """Whether a claim of ``provider_id`` could find a job now (a cheap read a waiting claim
    polls before it takes the write lock)."""
    lapsed = and_(DeliveryJob.status.in_(ACTIVE), DeliveryJob.lease_expires_at <= now)
    return bool(
        session.scalar(
            select(
                exists().where(
                    DeliveryJob.provider_id == provider_id,
                    or_(DeliveryJob.status == "queued", lapsed),
                    _sealed_ready(sealing_key),
                )
            )
        )
    )


def expire_unclaimed(
    session: Session, provider_id: int | None, now: datetime, *, home_provider_id: int | None = None
) -> list[int]:
    """Fail the jobs whose block has ended while no daemon held them: queued ones (never
    claimed, or handed back), and claimed or running ones whose lease lapsed ``ABANDONED``
    ago (their daemon is gone). Of one delivering provider (a claim of it), or of the awards
    one home provider brokered (closing its billing period), or all. The failure is in the
    provider's measured record (outcome failed, score 0, what was reported until then); an
    award that delivered nothing has its price voided (`ended_undelivered`)."""
    abandoned = and_(
        DeliveryJob.status.in_(ACTIVE), DeliveryJob.lease_expires_at <= now - ABANDONED
    )
    query = (
        select(DeliveryJob)
        .join(Award, Award.id == DeliveryJob.award_id)
        .where(
            or_(DeliveryJob.status == "queued", abandoned),
            Award.ends_at.is_not(None),
            Award.ends_at <= now,
        )
        .order_by(DeliveryJob.id)
        .with_for_update(of=DeliveryJob)
    )
    if provider_id is not None:
        query = query.where(DeliveryJob.provider_id == provider_id)
    if home_provider_id is not None:
        query = query.where(Award.home_provider_id == home_provider_id)
    rows = session.execute(query).scalars().all()
    for job in rows:
        was = job.status
        job.status, job.updated_at = "failed", now
        job.lease_expires_at = min(job.lease_expires_at or now, now)
        sealed = session.get(SealedParams, job.award_id)
        waited = was == "queued" and sealed is not None and sealed.box is None
        ends_at = job.award.ends_at
        assert ends_at is not None  # the query takes blocks that ended
        ended = f"the block ended at {ends_at.isoformat()}"
        why = (
            f"{ended} before its sealed parameters arrived"
            if waited
            else f"{ended} unclaimed"
            if was == "queued"
            else f"{ended} and daemon {job.daemon}'s lease lapsed"
        )
        _record(session, job.id, "expire", was, "failed", job.token, None, now, why)
        so_far = reported(session, job.id)
        measured = {"bytes": so_far["bytes_out"], "packets": so_far["packets_out"]}
        session.add(
            JobMeasurement(
                job_id=job.id,
                provider_id=job.provider_id,
                **judge(job.award, measured, outcome="failed"),
                token=job.token,
                error=(
                    "the block ended before its sealed parameters arrived"
                    if waited
                    else "the block ended before a daemon claimed the job"
                    if was == "queued"
                    else why
                ),
                created_at=now,
            )
        )
        ended_undelivered(session, job, measured, at=min(ends_at, now))
    session.flush()
    return [job.id for job in rows]


def delivered_nothing(session: Session, job: DeliveryJob, measured: Mapping) -> bool:
    """No byte or packet of the job reached its sink: none reported, none measured."""
    so_far = reported(session, job.id)
    return not any(
        (
            so_far["bytes_out"],
            so_far["packets_out"],
            measured.get("bytes", 0),
            measured.get("packets", 0),
        )
    )


def ended_undelivered(
    session: Session, job: DeliveryJob, measured: Mapping, *, at: datetime
) -> bool:
    """A failed job's award: failed, and its price voided if nothing was delivered (the payers
    do not pay for a delivery that did not happen; a part delivered keeps the price, and the
    provider's measured record shows the failure)."""
    if job.award.status == "active":
        job.award.status = "failed"
    if not delivered_nothing(session, job, measured):
        return False
    void_price(session, job.award, job_id=job.id, at=at)
    return True


def reported(session: Session, job_id: int) -> dict:
    """The job's last acknowledged usage report: where a new claimer's counters resume."""
    latest = session.scalars(
        select(UsageReport)
        .where(UsageReport.job_id == job_id)
        .order_by(UsageReport.sequence.desc())
        .limit(1)
    ).first()
    return {
        "sequence": latest.sequence if latest else 0,
        **{c: getattr(latest, c) if latest else 0 for c in COUNTERS},
        "services": latest.service_counters if latest else {},
    }


def claim(
    session: Session,
    actor: Actor,
    provider_id: int,
    daemon: str,
    lease_s: int,
    *,
    now: datetime | None = None,
    sealing_key: str | None = None,
) -> DeliveryJob | None:
    """Claim one job of ``provider_id`` for ``daemon`` under a lease of ``lease_s`` seconds,
    oldest first; None when there is none to claim. A job with sealed parameters only for a
    daemon holding the key they were sealed to (``sealing_key``, its public half)."""
    _may_dispatch(actor, provider_id)
    daemon, lease = check_daemon(daemon), check_lease(lease_s)
    now = resolve_now(now)
    expire_unclaimed(session, provider_id, now)
    conn = session.connection()
    for _ in range(3):  # PostgreSQL: when other claims took every job read, read again
        candidates = conn.execute(
            select(
                DeliveryJob.id,
                DeliveryJob.token,
                DeliveryJob.status,
                DeliveryJob.daemon,
                DeliveryJob.lease_expires_at,
            )
            .where(DeliveryJob.provider_id == provider_id, _claimable(now, daemon, sealing_key))
            .order_by(DeliveryJob.id)
            .limit(8)
        ).all()
        if not candidates:
            return None
        for row in candidates:
            won = conn.execute(
                update(_JOBS)
                .where(
                    _JOBS.c.id == row.id,
                    _JOBS.c.token == row.token,
                    _claimable(now, daemon, sealing_key),
                )
                .values(
                    status="claimed",
                    token=row.token + 1,
                    daemon=daemon,
                    lease_expires_at=now + lease,
                    updated_at=now,
                )
            ).rowcount
            if won != 1:
                continue  # another claim took it between the read and the update
            if row.status in ACTIVE:
                _record(
                    session,
                    row.id,
                    "lapse",
                    row.status,
                    "queued",
                    row.token,
                    row.daemon,
                    now,
                    f"the lease of {row.daemon} lapsed at {row.lease_expires_at.isoformat()}",
                )
            _record(session, row.id, "claim", "queued", "claimed", row.token + 1, daemon, now)
            session.flush()
            return session.get(DeliveryJob, row.id, populate_existing=True)
    return None


def _held(session: Session, actor: Actor, job_id: int, token: int) -> DeliveryJob:
    """The job, locked, if ``token`` is its current fencing token; `LeaseLost` otherwise."""
    job = session.get(DeliveryJob, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise NotFound("delivery job", job_id)
    if not actor.speaks_for_provider(job.provider_id):
        raise NotYours(f"{actor} does not deliver job {job_id}", where=f"delivery job {job_id}")
    if isinstance(token, bool) or not isinstance(token, int):
        raise InvalidInput(f"a fencing token is an integer, got {token!r}", field="token")
    if token != job.token:
        raise LeaseLost(
            f"token {token} is stale: the job was claimed again (token "
            f"{job.token}, daemon {job.daemon}); stop delivering it",
            where=f"delivery job {job_id}",
            field="token",
        )
    return job


def _released(job: DeliveryJob, token: int) -> LeaseLost:
    return LeaseLost(
        f"the job was handed back under token {token}; claim it again to deliver it",
        where=f"delivery job {job.id}",
        field="token",
    )


def heartbeat(
    session: Session,
    actor: Actor,
    job_id: int,
    token: int,
    lease_s: int,
    *,
    now: datetime | None = None,
) -> dict:
    """Renew the lease; the job's current rate limits and whether its award was cancelled."""
    lease = check_lease(lease_s)
    now = resolve_now(now)
    job = _held(session, actor, job_id, token)
    if job.status in FINISHED:
        raise WrongState(
            f"the job is {job.status}: nothing to renew", where=f"delivery job {job_id}"
        )
    if job.status == "queued":
        raise _released(job, token)
    job.lease_expires_at = now + lease
    session.flush()
    return {
        "job_id": job.id,
        "status": job.status,
        "token": job.token,
        "lease_expires_at": job.lease_expires_at,
        "max_rate_bps": job.spec.get("max_rate_bps"),
        "min_rate_bps": job.spec.get("min_rate_bps"),
        "cancelled": job.award.status == "cancelled",
    }


def _transition(
    session: Session,
    actor: Actor,
    job_id: int,
    token: int,
    *,
    event: str,
    to: str,
    sources: tuple[str, ...],
    key: str | None,
    params: dict,
    now: datetime | None,
    then: Callable[[DeliveryJob, datetime], None] | None = None,
    detail: str = "",
) -> DeliveryJob:
    now = resolve_now(now)

    def run() -> DeliveryJob:
        job = _held(session, actor, job_id, token)
        if job.status == to:
            return job  # the same transition again under the same token: answered the same
        if job.status == "queued":
            raise _released(job, token)
        if job.status not in sources:
            raise WrongState(
                f"the job is {job.status}; {event} needs it {' or '.join(sources)}",
                where=f"delivery job {job_id}",
            )
        _record(session, job.id, event, job.status, to, token, job.daemon, now, detail)
        job.status, job.updated_at = to, now
        if to != "running":  # released or finished: the lease ends now
            job.lease_expires_at = now
        if then is not None:
            then(job, now)
        session.flush()
        return job

    return once(
        session,
        actor,
        key,
        f"job.{event}",
        {"job": job_id, "token": token, **params},
        DeliveryJob,
        run,
    )


def start(
    session: Session,
    actor: Actor,
    job_id: int,
    token: int,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> DeliveryJob:
    """claimed -> running."""
    return _transition(
        session,
        actor,
        job_id,
        token,
        event="start",
        to="running",
        sources=("claimed",),
        key=idempotency_key,
        params={},
        now=now,
    )


def _measure(session: Session, outcome: str, measured: Mapping, error: str = ""):
    def then(job: DeliveryJob, now: datetime) -> None:
        session.add(
            JobMeasurement(
                job_id=job.id,
                provider_id=job.provider_id,
                token=job.token,
                **judge(job.award, measured, outcome=outcome),
                error=error[:300],
                created_at=now,
            )
        )
        if outcome == "done":
            job.award.status = "delivered"
        else:
            ended_undelivered(session, job, measured, at=now)

    return then


def complete(
    session: Session,
    actor: Actor,
    job_id: int,
    token: int,
    measured: Mapping,
    *,
    report: Mapping | None = None,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> DeliveryJob:
    """claimed or running -> done, with the measured delivery; the award is delivered.

    ``report``: the job's last usage report (``sequence``, the counters, ``services``,
    ``at``), taken in first, in the same transaction, under the same token: a daemon's final
    report and its completion in one call, both or neither. Sent again (a lost answer), the
    report is answered as stored (nothing charged again) and the completion the same."""
    now = resolve_now(now)
    if report is not None:
        from broker import usage

        if report.get("token") not in (None, token):
            raise InvalidInput(
                f"the report's token {report['token']} is not the call's {token}",
                field="report.token",
            )
        usage.report_usage(
            session,
            actor,
            job_id,
            report["sequence"],
            {c: report.get(c, 0) for c in COUNTERS},
            services=report.get("services") or {},
            at=report.get("at"),
            now=now,
            token=token,
        )
    return _transition(
        session,
        actor,
        job_id,
        token,
        event="complete",
        to="done",
        sources=ACTIVE,
        key=idempotency_key,
        params={"measured": measured},
        now=now,
        then=_measure(session, "done", measured),
    )


def fail(
    session: Session,
    actor: Actor,
    job_id: int,
    token: int,
    error: str,
    measured: Mapping,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> DeliveryJob:
    """claimed or running -> failed, with why and what was measured until then."""
    if not isinstance(error, str) or not 1 <= len(error) <= 300:
        raise InvalidInput("say why in 1..300 characters", field="error")
    return _transition(
        session,
        actor,
        job_id,
        token,
        event="fail",
        to="failed",
        sources=ACTIVE,
        key=idempotency_key,
        params={"error": error, "measured": measured},
        now=now,
        then=_measure(session, "failed", measured, error),
        detail=error,
    )


def handback(
    session: Session,
    actor: Actor,
    job_id: int,
    token: int,
    reason: str,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> DeliveryJob:
    """claimed or running -> queued: the provider's other daemons may claim it at once."""
    if not isinstance(reason, str) or len(reason) > 300:
        raise InvalidInput("a reason is at most 300 characters", field="reason")
    return _transition(
        session,
        actor,
        job_id,
        token,
        event="handback",
        to="queued",
        sources=ACTIVE,
        key=idempotency_key,
        params={"reason": reason},
        now=now,
        detail=reason,
    )


def events(session: Session, job_id: int) -> list[JobEvent]:
    return list(
        session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    )
