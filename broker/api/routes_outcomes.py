"""Outcome routes: awards, delivery jobs, ratings."""

from __future__ import annotations

from fastapi import APIRouter, Request

from broker import awards
from broker.api.app import CurrentActor, IdemKey, store_of
from broker.api.schemas import JobStatusIn, RatingIn
from broker.reputation import rate
from broker.views import award_view

router = APIRouter(tags=["outcomes"])


def _job(job) -> dict:
    return {"id": job.id, "award_id": job.award_id, "provider_id": job.provider_id,
            "status": job.status, "spec": job.spec, "updated_at": job.updated_at.isoformat()}


@router.get("/awards")
def list_awards(request: Request, actor: CurrentActor) -> list[dict]:
    with store_of(request).read() as s:
        return [award_view(a) for a in awards.list_awards(s, actor)]


@router.get("/awards/{award_id}")
def get_award(award_id: int, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return award_view(awards.get_award(s, actor, award_id))


@router.post("/awards/{award_id}/ratings", status_code=201)
def post_rating(award_id: int, body: RatingIn, request: Request,
                actor: CurrentActor, key: IdemKey = None) -> dict:
    """Rate the other party of an award (0..100); a second rating replaces the first."""
    with store_of(request).write() as s:
        r = rate(s, actor, award_id, body.score, user_id=body.user_id, comment=body.comment,
                 idempotency_key=key)
        return {"id": r.id, "award_id": r.award_id, "direction": r.direction,
                "user_id": r.user_id, "provider_id": r.provider_id, "score": r.score,
                "comment": r.comment, "rated_at": r.rated_at.isoformat()}


@router.get("/providers/{provider_id}/jobs")
def list_jobs(provider_id: int, request: Request, actor: CurrentActor,
              status: str | None = None) -> list[dict]:
    """A provider's delivery jobs, oldest first (what its daemons pick up)."""
    with store_of(request).read() as s:
        return [_job(j) for j in awards.list_jobs(s, actor, provider_id, status=status)]


@router.post("/jobs/{job_id}/status")
def post_job_status(job_id: int, body: JobStatusIn, request: Request,
                    actor: CurrentActor) -> dict:
    with store_of(request).write() as s:
        return _job(awards.set_job_status(s, actor, job_id, body.status))
