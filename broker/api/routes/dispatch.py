"""Dispatch routes: what a provider's delivery daemons call (docs/daemon.md).

Claim (a long-poll), heartbeat, start, complete, fail, hand back; each call after the claim
names the claim's fencing token, and one under a stale token is a 409 ``lease_lost``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response

from broker import dispatch, sealing
from broker.actors import Actor
from broker.api.deps import CurrentActor, IdemKey, id_path, store_of
from broker.api.responses import ClaimOut, HeartbeatOut, JobDetailOut, JobOut
from broker.api.schemas import ClaimIn, CompleteIn, FailIn, HandbackIn, HeartbeatIn, TokenIn
from broker.awards import get_award
from broker.clock import utcnow
from broker.delivery_record import measurement_view
from broker.errors import NotFound
from broker.job_bell import BELL
from broker.models import DeliveryJob, JobMeasurement
from broker.store import Store
from broker.views import job_view

router = APIRouter(tags=["dispatch"])
JobId = Annotated[int, id_path("a delivery job's id")]
ProviderId = Annotated[int, id_path("a provider's id")]
# How often a waiting claim looks for a job queued by another process; one queued by this
# process wakes it at once (broker/job_bell.py).
POLL_S = 0.2


def _claim_once(
    store: Store, actor: Actor, provider_id: int, body: ClaimIn, first: bool
) -> dict | None:
    now = utcnow()
    if not first:  # a cheap read before the write lock, as most polls find nothing
        with store.read() as s:
            if not dispatch.something_to_claim(s, provider_id, now, body.sealing_key):
                return None
    with store.write() as s:
        job = dispatch.claim(
            s, actor, provider_id, body.daemon, body.lease_s, now=now, sealing_key=body.sealing_key
        )
        if job is None:
            return None
        assert job.lease_expires_at is not None  # claim() just set it
        return {
            "job": job_view(job),
            "token": job.token,
            "lease_expires_at": job.lease_expires_at.isoformat(),
            "reported": dispatch.reported(s, job.id),
            "sealed": sealing.claimed_box(s, job),
        }


@router.post(
    "/providers/{provider_id}/jobs/claim",
    response_model=ClaimOut,
    responses={204: {"description": "no job to claim within wait_s"}},
)
async def claim_job(provider_id: ProviderId, body: ClaimIn, request: Request, actor: CurrentActor):
    """Claim one of the provider's jobs for a daemon, under a lease of ``lease_s`` seconds.

    The oldest claimable job: queued, or claimed under a lease that lapsed (a daemon that lost
    a job gets it again only after the provider's other daemons had their chance). With
    ``wait_s`` the call waits (long-poll) until a job can be claimed, 204 when none could
    within it. The answer's ``token`` is the fencing token every later call names;
    ``reported`` is the last usage report taken in, where the job's cumulative counters
    continue from. A job whose request named sealed parameters is claimable once they were
    sealed to the key the daemon holds (``sealing_key``); its box is in ``sealed``."""
    store = store_of(request)
    deadline = time.monotonic() + body.wait_s
    first = True
    while True:
        answer = await asyncio.to_thread(_claim_once, store, actor, provider_id, body, first)
        first = False
        if answer is not None:
            return answer
        left = deadline - time.monotonic()
        if left <= 0 or await request.is_disconnected():
            return Response(status_code=204)
        await BELL.wait(provider_id, min(POLL_S, left))  # a job queued here wakes it


@router.post("/jobs/{job_id}/heartbeat", response_model=HeartbeatOut)
def heartbeat(job_id: JobId, body: HeartbeatIn, request: Request, actor: CurrentActor) -> dict:
    """Renew the lease for ``lease_s`` seconds; the job's current rate limits (a bandwidth
    grant may change them while it runs) and whether its award was cancelled."""
    with store_of(request).write() as s:
        return dispatch.heartbeat(s, actor, job_id, body.token, body.lease_s)


@router.post("/jobs/{job_id}/start", response_model=JobOut)
def start(
    job_id: JobId, body: TokenIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """claimed -> running. Again under the same token: the same answer."""
    with store_of(request).write() as s:
        return job_view(dispatch.start(s, actor, job_id, body.token, idempotency_key=key))


@router.post("/jobs/{job_id}/complete", response_model=JobOut)
def complete(
    job_id: JobId, body: CompleteIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """-> done, with the delivery as measured (judged against the award into the provider's
    measured record); the award is delivered. Again under the same token: the same answer."""
    with store_of(request).write() as s:
        return job_view(
            dispatch.complete(
                s,
                actor,
                job_id,
                body.token,
                body.measured.model_dump(),
                report=(body.report.model_dump() if body.report is not None else None),
                idempotency_key=key,
            )
        )


@router.post("/jobs/{job_id}/fail", response_model=JobOut)
def fail(
    job_id: JobId, body: FailIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """-> failed, with why and what was measured until then (a failure in the provider's
    measured record). Again under the same token: the same answer."""
    with store_of(request).write() as s:
        return job_view(
            dispatch.fail(
                s,
                actor,
                job_id,
                body.token,
                body.error,
                body.measured.model_dump(),
                idempotency_key=key,
            )
        )


@router.post("/jobs/{job_id}/handback", response_model=JobOut)
def handback(
    job_id: JobId, body: HandbackIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """-> queued: the provider's other daemons may claim it at once (this one after a while).
    Again under the same token: the same answer."""
    with store_of(request).write() as s:
        return job_view(
            dispatch.handback(s, actor, job_id, body.token, body.reason, idempotency_key=key)
        )


@router.get("/jobs/{job_id}", response_model=JobDetailOut)
def get_job(job_id: JobId, request: Request, actor: CurrentActor) -> dict:
    """A job with every transition it went through and its measured delivery, for the
    award's parties."""
    with store_of(request).read() as s:
        job = s.get(DeliveryJob, job_id)
        if job is None:
            raise NotFound("delivery job", job_id)
        award = get_award(s, actor, job.award_id)  # 403 unless a party of the award
        return {
            "job": job_view(job),
            "events": [
                {
                    "event": e.event,
                    "from_status": e.from_status,
                    "to_status": e.to_status,
                    "token": e.token,
                    "daemon": e.daemon,
                    "at": e.at,
                    "detail": e.detail,
                }
                for e in dispatch.events(s, job_id)
            ],
            "measured": measurement_view(s.get(JobMeasurement, job_id), award),
        }
