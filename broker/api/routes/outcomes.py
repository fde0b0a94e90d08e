"""Outcome routes: awards, delivery jobs, ratings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from broker import awards
from broker.api.deps import CurrentActor, IdemKey, Paging, id_path, store_of
from broker.api.responses import AwardOut, JobOut, Page, RatingOut
from broker.api.schemas import JobStatusIn, RatingIn
from broker.reputation import rate
from broker.views import award_view, job_view

router = APIRouter(tags=["outcomes"])
AwardId = Annotated[int, id_path("an award's id")]
JobId = Annotated[int, id_path("a delivery job's id")]
ProviderId = Annotated[int, id_path("a provider's id")]


@router.get("/awards", response_model=Page[AwardOut])
def list_awards(request: Request, actor: CurrentActor, page: Paging) -> dict:
    """Awards the caller delivers, brokered as home provider, requested or pays for."""
    with store_of(request).read() as s:
        rows = awards.list_awards(s, actor, after=page.after, limit=page.limit + 1)
        return page.answer(rows, award_view)


@router.get("/awards/{award_id}", response_model=AwardOut)
def get_award(award_id: AwardId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return award_view(awards.get_award(s, actor, award_id))


@router.post("/awards/{award_id}/ratings", status_code=201, response_model=RatingOut)
def post_rating(
    award_id: AwardId, body: RatingIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """Rate the other party of an award (0..100); a second rating replaces the first."""
    with store_of(request).write() as s:
        r = rate(
            s,
            actor,
            award_id,
            body.score,
            user_id=body.user_id,
            comment=body.comment,
            idempotency_key=key,
        )
        return {
            "id": r.id,
            "award_id": r.award_id,
            "direction": r.direction,
            "user_id": r.user_id,
            "provider_id": r.provider_id,
            "score": r.score,
            "comment": r.comment,
            "rated_at": r.rated_at,
        }


@router.get("/providers/{provider_id}/jobs", response_model=Page[JobOut])
def list_jobs(
    provider_id: ProviderId,
    request: Request,
    actor: CurrentActor,
    page: Paging,
    status: Annotated[
        str | None, Query(pattern="^(queued|claimed|picked|running|done|failed)$")
    ] = None,
) -> dict:
    """A provider's delivery jobs, oldest first ("picked" is the old name of "claimed");
    daemons claim them through ``POST /v1/providers/{id}/jobs/claim``."""
    with store_of(request).read() as s:
        rows = awards.list_jobs(
            s, actor, provider_id, status=status, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, job_view)


@router.post("/jobs/{job_id}/status", response_model=JobOut)
def post_job_status(
    job_id: JobId, body: JobStatusIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """Set a job's status by hand, outside the daemons' leases (an operator, a provider
    without a daemon); recorded as a ``status`` event. Daemons use claim, start, complete,
    fail and hand back instead, which check their fencing token."""
    with store_of(request).write() as s:
        return job_view(awards.set_job_status(s, actor, job_id, body.status, idempotency_key=key))
