"""Withdrawing a bandwidth grant when the user's history worsens (docs/billing.md, "Bandwidth").

A grant is decided with the user's credit (`broker.credit.bandwidth_grant`) and raises a
request's max rate when the request is made (`broker.requests`). When a later decision gives the
user a smaller grant (a statement went unpaid past its due date, a payment failed), the rates
already raised come down to the new grant on everything not yet delivered: the user's open
requests, their awards, and the specs of their delivery jobs that are not finished (a daemon
reads the lowered rate with its next heartbeat). A grant that grows is not applied backwards:
it raises the rates of the requests made after it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.capacity import share_rate
from broker.models import Award, DeliveryJob, ServiceRequest

FINISHED_JOBS = ("done", "failed")
OPEN_REQUESTS = ("pledging", "brokering", "served", "awarded")


def granted_rate(base_bps: int, grant_pct: int) -> int:
    """The max rate a request asking for ``base_bps`` gets under a grant of ``grant_pct``."""
    return base_bps + base_bps * grant_pct // 100


def withdraw(session: Session, user_id: int, grant_pct: int, now: datetime) -> list[int]:
    """Bring the user's raised rates down to ``grant_pct``; returns the delivery jobs whose
    spec changed."""
    requests = list(
        session.scalars(
            select(ServiceRequest)
            .where(
                ServiceRequest.user_id == user_id,
                ServiceRequest.bandwidth_grant_pct > grant_pct,
                ServiceRequest.base_max_rate_bps.is_not(None),
                ServiceRequest.status.in_(OPEN_REQUESTS),
            )
            .with_for_update()
        )
    )
    changed = []
    for request in requests:
        assert request.base_max_rate_bps is not None  # the query takes raised rates only
        request.max_rate_bps = granted_rate(request.base_max_rate_bps, grant_pct)
        request.bandwidth_grant_pct = grant_pct
        for award, job in session.execute(
            select(Award, DeliveryJob)
            .join(DeliveryJob, DeliveryJob.award_id == Award.id)
            .where(Award.request_id == request.id, DeliveryJob.status.not_in(FINISHED_JOBS))
        ):
            award.max_rate_bps = share_rate(request.max_rate_bps, award.shares)
            job.spec = {
                **job.spec,
                "max_rate_bps": award.max_rate_bps,
                "bandwidth_grant_pct": grant_pct,
            }
            job.updated_at = now
            changed.append(job.id)
    session.flush()
    return changed
