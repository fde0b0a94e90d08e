"""Billing routes: tariff versions, usage reports of delivery jobs, a job's usage so far."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError

from broker import tariff_book, usage
from broker.actors import authenticate
from broker.api.deps import (
    ApiToken,
    CurrentActor,
    IdemKey,
    Paging,
    group_commit_of,
    id_path,
    key_cache_of,
    store_of,
    token_of,
)
from broker.api.responses import JobUsageOut, Page, TariffOut, UsageReportOut
from broker.api.schemas import TariffIn, UsageIn
from broker.clock import utcnow
from broker.models import COUNTERS

router = APIRouter(tags=["billing"])
# Usage reports come in as fast as bids: a router of their own, included before the others.
reports = APIRouter(tags=["billing"])
JobId = Annotated[int, id_path("a delivery job's id")]
_JOB_ID = TypeAdapter(JobId)
ProviderId = Annotated[int, id_path("a provider's id")]
TariffId = Annotated[int, id_path("a tariff version's id")]


def _plain(view: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in view.items()}


async def _take_report(
    request: Request, job_id: int, body: UsageIn, token: str | None
) -> JSONResponse:
    # Like bids, reports go to the app's group commit: one transaction per batch (see
    # broker.groupcommit). A key seen within the last seconds is not looked up again (KeyCache);
    # otherwise the report is authenticated in the batch's transaction. report_usage checks
    # everything before it writes: no savepoint of its own.
    arrived = utcnow()
    counters = {c: getattr(body, c) for c in COUNTERS}
    services = {name: c.model_dump() for name, c in body.services.items()}
    keys = key_cache_of(request)
    cached = keys.get(token)

    def take(s) -> tuple[dict, bool]:
        actor = cached
        if actor is None:
            since = time.monotonic()
            actor = authenticate(s, token)
            assert token is not None  # authenticate refuses a missing key
            keys.put(token, actor, since=since)
        return usage.report_usage(
            s,
            actor,
            job_id,
            body.sequence,
            counters,
            services=services,
            at=body.at,
            now=arrived,
            token=body.token,
        )

    view, new = await group_commit_of(request).run(
        take, checks_first=True, prefetch=usage.prefetch(job_id, body.at, arrived)
    )
    return JSONResponse(_plain(view), status_code=201 if new else 200)


def _located(errors: list, *where: str) -> list:
    """Pydantic's errors located as FastAPI locates them (the app's 422 handler words them)."""
    return [{**e, "loc": (*where, *e.get("loc", ()))} for e in errors]


async def _usage_endpoint(request: Request) -> Response:
    """`post_usage` without FastAPI's per-request dependency solving (a tenth of a report's
    server CPU): the same checks, done here. The operation stays declared below, for the
    OpenAPI document; this plain route is matched first."""
    raw = await request.body()
    data: object = raw  # bytes unless the Content-Type says JSON (none: not JSON), as in FastAPI
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    main, _, sub = kind.partition("/")
    if raw and main == "application" and (sub == "json" or sub.endswith("+json")):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:  # before anything else is checked, as in FastAPI
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body", exc.pos),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": exc.msg},
                    }
                ],
                body=exc.doc,
            ) from None
    errors: list = []  # every error at once, the path's first, as FastAPI lists them
    try:
        job_id = _JOB_ID.validate_python(request.path_params["job_id"])
    except ValidationError as exc:
        errors += _located(exc.errors(include_url=False), "path", "job_id")
    if not raw:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    elif not isinstance(data, dict):
        errors.append(
            {
                "type": "model_attributes_type",
                "loc": ("body",),
                "input": data,
                "msg": "Input should be a valid dictionary or object to extract fields from",
            }
        )
    else:
        try:
            body = UsageIn.model_validate(data)
        except ValidationError as exc:
            errors += _located(exc.errors(include_url=False), "body")
    if errors:
        raise RequestValidationError(errors)
    return await _take_report(request, job_id, body, token_of(request))


reports.add_route(
    "/jobs/{job_id}/usage", _usage_endpoint, methods=["POST"], include_in_schema=False
)


@reports.post(
    "/jobs/{job_id}/usage",
    status_code=201,
    response_model=UsageReportOut,
    responses={
        200: {"model": UsageReportOut, "description": "the report was taken in before: as stored"}
    },
)
async def post_usage(
    job_id: JobId, body: UsageIn, request: Request, token: ApiToken
) -> JSONResponse:
    """A usage report of a job, by its provider: cumulative counters and a sequence number.

    New: 201 with what it was charged. The same (job, sequence) again with the same counters:
    200 with the stored report, nothing charged again (the sequence is the report's idempotency
    key, with no time window). Other counters under a sequence taken: 409. Counters below the
    report before: 422 naming the counter. A daemon sends its claim's fencing ``token``: a
    report under a stale one is 409 ``lease_lost``, nothing written."""
    # Served by `_usage_endpoint` (matched first); declared here for the OpenAPI document.
    return await _take_report(request, job_id, body, token)


@router.get("/jobs/{job_id}/usage", response_model=JobUsageOut)
def get_usage(job_id: JobId, request: Request, actor: CurrentActor) -> dict:
    """A job's usage so far (its latest report) and its charges per payer and kind, for the
    award's parties."""
    with store_of(request).read() as s:
        return usage.job_usage(s, actor, job_id)


def _tariff(row) -> dict:
    return {
        "id": row.id,
        "provider_id": row.provider_id,
        "services": row.services.split(","),
        "version": row.version,
        "active_from": row.active_from,
        "currency": row.currency,
        "tariff": row.doc,
        "created_at": row.created_at,
    }


@router.post("/providers/{provider_id}/tariffs", status_code=201, response_model=TariffOut)
def post_tariff(
    provider_id: ProviderId,
    body: TariffIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Publish the next version of the provider's tariff for a service chain."""
    doc = body.model_dump(exclude_none=True, mode="json")
    doc["dimensions"] = {
        name: {
            k: v for k, v in dim.model_dump(mode="json").items() if v is not None or k == "maximum"
        }
        for name, dim in body.dimensions.items()
    }
    with store_of(request).write() as s:
        return _tariff(tariff_book.publish_tariff(s, actor, provider_id, doc, idempotency_key=key))


@router.get("/providers/{provider_id}/tariffs", response_model=Page[TariffOut])
def list_tariffs(
    provider_id: ProviderId,
    request: Request,
    actor: CurrentActor,
    page: Paging,
    services: Annotated[
        str | None, Query(max_length=400, description="one chain only, e.g. anonymize,checksum")
    ] = None,
) -> dict:
    """A provider's tariff versions, oldest first; anyone may read them."""
    with store_of(request).read() as s:
        rows = tariff_book.list_tariffs(
            s, provider_id, services=services, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, _tariff)


@router.get("/tariffs/{tariff_id}", response_model=TariffOut)
def get_tariff(tariff_id: TariffId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return _tariff(tariff_book.get_tariff(s, tariff_id))
