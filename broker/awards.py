"""Awards (the outcome of a request, negotiation or auction) and their delivery jobs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.capacity import share_rate
from broker.charging import VOID, price_lines
from broker.clock import resolve_now
from broker.currency import check_amount
from broker.dispatch import FINISHED, ended_undelivered
from broker.errors import InvalidInput, NotFound, NotYours, WrongState
from broker.groups import group_of_request, payers_for
from broker.idempotency import once
from broker.models import (
    Award,
    AwardPayer,
    Charge,
    DeliveryJob,
    JobEvent,
    SealedParams,
    ServiceRequest,
)

JOB_STATUSES = ("queued", "claimed", "running", "done", "failed")
# The status before leases (migration 0010): still accepted where a status is given.
_OLD_STATUSES = {"picked": "claimed"}


def make_award(
    session: Session,
    request: ServiceRequest,
    provider_id: int,
    price_minor: int,
    *,
    source: str,
    now: datetime,
    negotiation_id: int | None = None,
    auction_id: int | None = None,
    share: int = 0,
    shares: int = 1,
) -> Award:
    """Award ``request`` (share ``share`` of ``shares``) to ``provider_id`` at ``price_minor``
    and queue its delivery job.

    The payers are the requester, or a group's payers by its split rule (`GroupUnderfunded`
    when they cannot cover the price: then nothing is awarded and nobody owes anything). A
    share carries 1/``shares`` of the request's rates and data cap (rounded up) for the whole
    block. A cancelled or already decided request is never awarded (`WrongState`); the callers
    hold its row lock.
    """
    if request.status not in ("brokering", "pledging") and not (
        request.status == "awarded" and share > 0
    ):
        raise WrongState(
            f"request {request.id} is {request.status}; it is not awarded again",
            where=f"request {request.id}",
        )
    check_amount(price_minor, field="price_minor")
    payers = payers_for(session, request, price_minor)
    award = Award(
        request_id=request.id,
        provider_id=provider_id,
        home_provider_id=request.home_provider_id,
        source=source,
        negotiation_id=negotiation_id,
        auction_id=auction_id,
        share=share,
        shares=shares,
        price_minor=price_minor,
        currency=request.currency,
        services=request.services,
        volume_bytes=request.volume_bytes,
        starts_at=request.starts_at,
        ends_at=request.ends_at,
        min_rate_bps=share_rate(request.min_rate_bps, shares),
        max_rate_bps=share_rate(request.max_rate_bps, shares),
        data_cap_bytes=share_rate(request.data_cap_bytes, shares),
        created_at=now,
        payers=[AwardPayer(user_id=u, share_minor=s) for u, s in payers],
    )
    session.add(award)
    session.flush()
    job = DeliveryJob(
        award_id=award.id,
        provider_id=provider_id,
        status="queued",
        spec=job_spec(award, request),
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    if request.sealed_params:  # the job waits for their box (broker/sealing.py)
        session.add(SealedParams(award_id=award.id, names=request.sealed_params, created_at=now))
    session.flush()
    session.add_all(price_lines(award, job_id=job.id, now=now))  # the payers owe the price
    request.status = "served" if source == "home" else "awarded"
    group = group_of_request(session, request.id)
    if group is not None:
        group.status, group.closed_at = "funded", group.closed_at or now
    session.flush()
    return award


def job_spec(award: Award, request: ServiceRequest) -> dict:
    """What a delivery daemon needs to run the award (JSON, times in ISO 8601 UTC)."""

    def iso(t):
        return t.isoformat() if t is not None else None

    return {
        "award_id": award.id,
        "request_id": request.id,
        "services": award.services.split(","),
        # Which flows this award carries: those that engine.packet.flowhash.share_of_packets puts in
        # share ``index`` of ``of`` (a symmetric flow hash: both directions of a flow alike).
        "share": {"index": award.share, "of": award.shares, "by": "symmetric-flow-hash"},
        "volume_bytes": award.volume_bytes,
        "starts_at": iso(award.starts_at),
        "ends_at": iso(award.ends_at),
        "min_rate_bps": award.min_rate_bps,
        "max_rate_bps": award.max_rate_bps,
        "data_cap_bytes": award.data_cap_bytes,
        # More bandwidth from history: the percentage max_rate_bps carries above what the
        # user asked for (docs/billing.md, "Bandwidth").
        "bandwidth_grant_pct": request.bandwidth_grant_pct or 0,
        "recipients": [m.describe() for m in request.members],
        # Where the daemon reads the stream and delivers it (broker/endpoints.py).
        "source": request.source,
        "sink": request.sink,
        # Secret parameters the requester seals to this provider's key (broker/sealing.py):
        # their names only; the box reaches the claiming daemon in the claim's answer.
        "sealed_params": request.sealed_params.split(",") if request.sealed_params else [],
    }


def _may_see(session: Session, actor: Actor, award: Award) -> bool:
    if (
        actor.is_admin
        or actor.speaks_for_provider(award.provider_id)
        or actor.speaks_for_provider(award.home_provider_id)
    ):
        return True
    if actor.user_id is None:
        return False
    requester = session.get_one(ServiceRequest, award.request_id).user_id
    return actor.user_id == requester or any(p.user_id == actor.user_id for p in award.payers)


def get_award(session: Session, actor: Actor, award_id: int) -> Award:
    award = session.get(Award, award_id)
    if award is None:
        raise NotFound("award", award_id)
    if not _may_see(session, actor, award):
        raise NotYours(f"{actor} is not a party of award {award_id}", where=f"award {award_id}")
    return award


def list_awards(
    session: Session, actor: Actor, *, after: int | None = None, limit: int = 100
) -> list[Award]:
    """The awards the actor delivers, brokered as home provider, requested, or pays for;
    newest first, ``after`` the last id of the page before."""
    query = select(Award).order_by(Award.id.desc()).limit(limit)
    if after is not None:
        query = query.where(Award.id < after)
    if actor.provider_ids:
        query = query.where(
            or_(
                Award.provider_id.in_(actor.provider_ids),
                Award.home_provider_id.in_(actor.provider_ids),
            )
        )
    elif actor.user_id is not None:
        paid = select(AwardPayer.award_id).where(AwardPayer.user_id == actor.user_id)
        requested = select(ServiceRequest.id).where(ServiceRequest.user_id == actor.user_id)
        query = query.where(or_(Award.id.in_(paid), Award.request_id.in_(requested)))
    elif not actor.is_admin:
        return []
    return list(session.scalars(query))


def list_jobs(
    session: Session,
    actor: Actor,
    provider_id: int,
    *,
    status: str | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> list[DeliveryJob]:
    """The delivery jobs of ``provider_id`` (for its daemons), oldest first; ``after`` is the
    last id of the page before."""
    if not (actor.is_admin or actor.speaks_for_provider(provider_id)):
        raise NotYours(
            f"{actor} may not list provider {provider_id}'s jobs", where=f"provider {provider_id}"
        )
    query = select(DeliveryJob).where(DeliveryJob.provider_id == provider_id)
    if status is not None:
        status = _OLD_STATUSES.get(status, status)
        if status not in JOB_STATUSES:
            raise InvalidInput(f"status is one of {', '.join(JOB_STATUSES)}", field="status")
        query = query.where(DeliveryJob.status == status)
    if after is not None:
        query = query.where(DeliveryJob.id > after)
    return list(session.scalars(query.order_by(DeliveryJob.id).limit(limit)))


def set_job_status(
    session: Session,
    actor: Actor,
    job_id: int,
    status: str,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> DeliveryJob:
    """Set a job's status by hand, outside the daemons' leases (an operator, a provider
    without a daemon, the demo): recorded as a ``status`` event. A daemon claims and moves its
    jobs through `broker.dispatch` instead, under a fencing token."""
    job = session.get(DeliveryJob, job_id)
    if job is None:
        raise NotFound("delivery job", job_id)
    if not actor.speaks_for_provider(job.provider_id):
        raise NotYours(f"{actor} does not run job {job_id}", where=f"delivery job {job_id}")
    status = _OLD_STATUSES.get(status, status)
    if status not in JOB_STATUSES:
        raise InvalidInput(f"status is one of {', '.join(JOB_STATUSES)}", field="status")

    def run() -> DeliveryJob:
        now_ = resolve_now(now)
        if (
            job.status == "failed"
            and status != "failed"
            and session.scalar(
                select(exists().where(Charge.award_id == job.award_id, Charge.kind == VOID))
            )
        ):
            raise WrongState(
                f"job {job_id} failed with nothing delivered and its price was "
                f"voided; it is not reopened (the request can be made again)",
                where=f"delivery job {job_id}",
            )
        if job.status != status:
            session.add(
                JobEvent(
                    job_id=job.id,
                    event="status",
                    from_status=job.status,
                    to_status=status,
                    token=job.token,
                    daemon=None,
                    at=now_,
                    detail=f"set by {actor}",
                )
            )
        job.status, job.updated_at = status, now_
        if status in FINISHED or status == "queued":
            job.lease_expires_at = None if status == "queued" else now_
        if status == "done":
            job.award.status = "delivered"
        elif status == "failed":
            ended_undelivered(session, job, {}, at=now_)
        elif job.award.status == "failed":
            job.award.status = "active"
        session.flush()
        return job

    return once(
        session,
        actor,
        idempotency_key,
        "job.status",
        {"job": job_id, "status": status},
        DeliveryJob,
        run,
    )
