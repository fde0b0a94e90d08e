"""Awards and their deliveries: progress, throughput over time (live), the rating form, and
a provider's card with its reputation over time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker import awards
from broker.actors import Actor
from broker.api.deps import id_path, policy_of, store_of
from broker.clock import utcnow
from broker.console.charts import line_chart
from broker.console.forms import FIELDS, Form
from broker.console.site import ConsoleRoute, Posted, Signed, render
from broker.delivery_record import DeliveryRecord, weekly_records
from broker.errors import BrokerError, InvalidInput
from broker.models import JobEvent, Provider, Rating, UsageReport
from broker.reputation import ReputationPolicy, beta_reputations, rate
from broker.usage import job_usage
from broker.views import award_view, provider_view

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
AwardId = Annotated[int, id_path("an award's id")]
ProviderId = Annotated[int, id_path("a provider's id")]
SVG = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
WEEKS = 12  # a provider's reputation is drawn week by week over this many weeks


def throughput(session: Session, actor: Actor, award_id: int) -> list[tuple[float, float]]:
    """(seconds since the delivery started, Mbit/s delivered since the report before) for the
    award's job; for the award's parties (`awards.get_award`)."""
    award = awards.get_award(session, actor, award_id)
    if award.job is None:
        return []
    rows: list[tuple[datetime, int]] = [
        (at, sent)
        for at, sent in session.execute(
            select(UsageReport.usage_at, UsageReport.bytes_out)
            .where(UsageReport.job_id == award.job.id)
            .order_by(UsageReport.sequence)
        )
    ]
    # From the delivery's first start, at nothing delivered (reports are cumulative): a job
    # reported once, at its end (a file's), still shows its rate.
    started = session.scalar(
        select(func.min(JobEvent.at)).where(
            JobEvent.job_id == award.job.id, JobEvent.event == "start"
        )
    )
    if started is not None and rows and started < rows[0][0]:
        rows.insert(0, (started, 0))
    points = []
    for (before, sent_before), (at, sent) in pairwise(rows):
        seconds = (at - before).total_seconds()
        if seconds > 0:
            since = (at - rows[0][0]).total_seconds()
            points.append((round(since, 3), (sent - sent_before) * 8 / seconds / 1e6))
    return points


def _progress(session: Session, actor: Actor, award_id: int) -> dict:
    award = awards.get_award(session, actor, award_id)
    if award.job is None:
        return {"status": award.status, "reports": 0, "bytes_out": 0, "packets_out": 0}
    used = job_usage(session, actor, award.job.id)
    return {
        "status": f"{award.status}/{used['status']}",
        "reports": used["reports"],
        "bytes_out": used["bytes_out"],
        "packets_out": used["packets_out"],
    }


def _award_page(request: Request, signed, award_id: int, **extra) -> Response:
    actor = signed.actor
    with store_of(request).read() as s:
        award = awards.get_award(s, actor, award_id)
        shown = award_view(award)
        progress = _progress(s, actor, award_id)
        used = job_usage(s, actor, award.job.id) if award.job is not None else None
        points = throughput(s, actor, award_id)
        provider_side = actor.speaks_for_provider(award.provider_id)
        may_rate = provider_side or (
            actor.user_id is not None and not actor.provider_ids and not actor.is_admin
        )
        query = select(Rating).where(Rating.award_id == award_id)
        if provider_side:
            query = query.where(Rating.direction == "payment")
        else:
            query = query.where(Rating.direction == "service", Rating.user_id == actor.user_id)
        mine = s.scalars(query.order_by(Rating.id).limit(1)).first()
        rated = None if mine is None else {"score": mine.score, "comment": mine.comment}
        provider_name = s.get_one(Provider, award.provider_id).name
    return render(
        request,
        "award.html",
        signed,
        status=extra.pop("status", 200),
        w=shown,
        provider_name=provider_name,
        progress=progress,
        used=used,
        points=points,
        may_rate=may_rate,
        rates_whom="the payer" if provider_side else "the provider's service",
        rated=rated,
        form=extra.pop("form", None) or Form({}),
    )


@router.get("/awards/{award_id}")
def award_page(request: Request, signed: Signed, award_id: AwardId) -> Response:
    return _award_page(request, signed, award_id)


@router.get("/awards/{award_id}/throughput.svg")
def award_chart(request: Request, signed: Signed, award_id: AwardId) -> Response:
    with store_of(request).read() as s:
        points = throughput(s, signed.actor, award_id)
    svg = line_chart(
        points,
        title=f"Award #{award_id}: delivered throughput",
        x_label="seconds since the delivery started",
        y_label="Mbit/s",
        # From the start: a point is the rate up to its time, so a single report is not
        # drawn at the chart's left edge as if the delivery had begun there.
        x_span=(0.0, max(x for x, _ in points)) if points else None,
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)


def _party(request: Request, signed: Signed, award_id: AwardId) -> int:
    """Checked before the stream starts: a refusal is a page, not a stream cut short."""
    with store_of(request).read() as s:
        awards.get_award(s, signed.actor, award_id)
    return award_id


@router.get("/awards/{award_id}/events", response_class=EventSourceResponse)
async def award_events(
    request: Request, signed: Signed, award_id: Annotated[int, Depends(_party)]
) -> AsyncIterator[ServerSentEvent]:
    """The delivery's progress as server-sent events, sent when it changes."""
    options = request.app.state.event_stream
    ends = time.monotonic() + options["seconds"]
    store = store_of(request)

    def look() -> dict | None:
        try:
            with store.read() as s:
                return _progress(s, signed.actor, award_id)
        except BrokerError:
            return None

    yield ServerSentEvent(comment="pktx console delivery", retry=options["retry_ms"])
    last = None
    while time.monotonic() < ends and not await request.is_disconnected():
        now = await anyio.to_thread.run_sync(look)
        if now is None:
            return
        if now != last:
            last = now
            yield ServerSentEvent(event="update", data=now)
        await anyio.sleep(options["poll"])


@router.post("/awards/{award_id}/rating")
def award_rating(request: Request, signed: Signed, form: Posted, award_id: AwardId) -> Response:
    score = form.integer("score", low=0, required=True)
    if score is not None and score > 100:
        form.refuse("score", "0 to 100")
    if not form.errors:
        assert score is not None
        try:
            with store_of(request).write() as s:
                rate(s, signed.actor, award_id, score, comment=form.text("comment"))
        except InvalidInput as exc:
            form.refuse(FIELDS.get(exc.field or "", "score"), exc.message)
    if form.errors:
        return _award_page(request, signed, award_id, form=form, status=422)
    return RedirectResponse(f"/awards/{award_id}", status_code=303)


# -- a provider's card -----------------------------------------------------------------------


def reputation_history(
    session: Session, provider_id: int, *, policy: ReputationPolicy, weeks: int = WEEKS
) -> list[tuple[float, float]]:
    """(weeks from now, negative into the past; the reputation's score then), week by week:
    the Beta reputation of `broker.reputation` over the ratings given by then (a rating
    replaced later counts from its latest time: the earlier score is not kept)."""
    now = utcnow()
    rows = session.execute(
        select(Rating.score, Rating.rated_at).where(
            Rating.provider_id == provider_id, Rating.direction == "service"
        )
    ).all()
    points = []
    for back in range(weeks, -1, -1):
        then = now - timedelta(weeks=back)
        given = [(score, at) for score, at in rows if at <= then]
        ages_us = np.array(
            [(then - at) // timedelta(microseconds=1) for _, at in given], dtype=np.int64
        )
        ppm, _ = beta_reputations(
            np.zeros(len(given), dtype=np.int64),
            np.array([score for score, _ in given], dtype=np.int64),
            ages_us,
            1,
            policy,
        )
        points.append((float(-back), int(ppm[0]) / 1_000_000))
    return points


def measured_points(weekly: list[tuple[int, DeliveryRecord]]) -> list[tuple[float, float]]:
    """(weeks from now, the mean score of the jobs judged that week) for the weeks with jobs:
    a job's score is its share of min-rate windows met (all of none without a min rate),
    halved when the block was not honoured, 0 when it failed: the evidence the auction's
    score takes (`broker.delivery_record`). A week without jobs has no point."""
    return [
        (float(-back), record.score_ppm_sum / record.jobs / 1_000_000)
        for back, record in weekly
        if record.jobs
    ]


@router.get("/providers/{provider_id}")
def provider_page(request: Request, signed: Signed, provider_id: ProviderId) -> Response:
    with store_of(request).read() as s:  # a provider's card is public, as in the API
        card = provider_view(s, provider_id, policy=policy_of(request))
        history = reputation_history(s, provider_id, policy=policy_of(request))
        weekly = weekly_records(s, provider_id, now=utcnow(), weeks=WEEKS)
    return render(request, "provider.html", signed, p=card, history=history, weekly=weekly)


@router.get("/providers/{provider_id}/reputation.svg")
def provider_chart(request: Request, signed: Signed, provider_id: ProviderId) -> Response:
    with store_of(request).read() as s:
        card = provider_view(s, provider_id, policy=policy_of(request))
        history = reputation_history(s, provider_id, policy=policy_of(request))
    svg = line_chart(
        history,
        title=f"{card['name']}: reputation over {WEEKS} weeks",
        x_label="weeks from now",
        y_label="reputation (0 to 1)",
        y_top=1.0,
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)


@router.get("/providers/{provider_id}/measured.svg")
def provider_measured_chart(request: Request, signed: Signed, provider_id: ProviderId) -> Response:
    with store_of(request).read() as s:
        card = provider_view(s, provider_id, policy=policy_of(request))
        weekly = weekly_records(s, provider_id, now=utcnow(), weeks=WEEKS)
    svg = line_chart(
        measured_points(weekly),
        title=f"{card['name']}: measured delivery score, week by week",
        x_label="weeks from now",
        y_label="mean job score (0 to 1)",
        y_top=1.0,
        x_span=(float(-WEEKS), 0.0),
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)
