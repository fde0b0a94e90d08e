"""The FastAPI application: routers, error answers, request ids, the negotiation sweeper.

Every answer is JSON, errors included: a domain error with its status, a validation error as a
422 naming the field, anything unexpected as a 500 whose body carries the request id that the
log line about it carries too (``X-Request-ID``, the caller's if it sent a sane one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import __version__
from broker.api.responses import ERRORS
from broker.errors import BrokerError
from broker.groupcommit import GroupCommit
from broker.metrics import HttpMetrics
from broker.negotiation import expire_overdue
from broker.reputation import DEFAULT_POLICY, ReputationPolicy
from broker.settings import BrokerSettings
from broker.settings import load as load_settings
from broker.store import Store

log = logging.getLogger(__name__)

EXPIRE_EVERY = 30.0
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestIds:
    """ASGI middleware: every request gets an id (``X-Request-ID``), kept in the scope's state
    for the error handlers and sent back on the answer; an exception no handler took becomes a
    JSON 500 carrying the id (logged with it), and the connection stays usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        rid = sent if _SANE_ID.fullmatch(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error(
                "request %s: %s %s failed: %s",
                rid,
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                exc_info=exc,
            )
            if started:  # half an answer is out: all that is left is to cut it short
                raise
            await JSONResponse(
                {
                    "error": "internal",
                    "request_id": rid,
                    "message": "the broker failed to answer this call; nothing of it was kept. "
                    f"Quote request id {rid} to the operator",
                },
                status_code=500,
            )(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id") or "-"


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def expire_negotiations(store: Store) -> int:
    """Mark every open negotiation past its deadline expired (one transaction); how many."""
    with store.write() as session:
        return expire_overdue(session)


async def _expire_periodically(store: Store, every: float) -> None:
    """Run `expire_negotiations` every ``every`` seconds, off the event loop, until cancelled.

    A failed round (the database away for a moment) is logged and the next one tried: a
    negotiation past its deadline already reads as expired, this only writes it down.
    """
    while True:
        try:
            expired = await asyncio.to_thread(expire_negotiations, store)
        except Exception:
            log.exception("expiring overdue negotiations failed; trying again in %g s", every)
        else:
            if expired:
                log.info("expired %d overdue negotiation(s)", expired)
        await asyncio.sleep(every)


def _add_error_answers(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, exc: BrokerError):
        return JSONResponse(exc.as_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        details = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "")} for e in errors]
        return JSONResponse(
            {
                "error": "invalid_input",
                "field": field,
                "message": f"field {field}: {first.get('msg', 'invalid')}",
                "details": details,
            },
            status_code=422,
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError):
        log.info("request %s: integrity error turned into 409: %s", request_id(request), exc.orig)
        return JSONResponse(
            {
                "error": "conflict",
                "message": "the change clashes with data "
                "stored meanwhile (a duplicate?); read the current state and retry",
            },
            status_code=409,
        )

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def create_app(
    store: Store,
    *,
    reputation_policy: ReputationPolicy | None = None,
    expire_every: float | None = EXPIRE_EVERY,
    settings: BrokerSettings | None = None,
    event_stream_seconds: float = 300.0,
    event_poll_seconds: float = 0.5,
) -> FastAPI:
    """The API over ``store``; while it runs, overdue negotiations are expired every
    ``expire_every`` seconds (None or 0: never). A device's event stream stays open
    ``event_stream_seconds`` (then the device reconnects with ``Last-Event-ID``) and looks for
    new events every ``event_poll_seconds``."""
    from broker.api.routes import (
        billing,
        credit,
        directory,
        dispatch,
        events,
        market,
        negotiations,
        operations,
        outcomes,
        payments,
        profiles,
        sealing,
        statements,
    )
    from broker.api.routes.auctions import bids
    from broker.api.routes.auctions import router as auctions

    settings = settings or BrokerSettings()
    policy = reputation_policy or (
        ReputationPolicy(half_life=settings.reputation_half_life)
        if settings.reputation_half_life_days != 90.0
        else DEFAULT_POLICY
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = None
        if expire_every:
            task = asyncio.create_task(
                _expire_periodically(store, expire_every), name="pktx-expire-negotiations"
            )
        try:
            yield
        finally:
            # Bids already received are committed and answered before the server goes.
            await asyncio.to_thread(app.state.group_commit.stop)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        lifespan=lifespan,
        title="packet-exchange broker",
        version=__version__,
        description="The market for packet-processing services: requests, negotiation, "
        "auctions, groups, awards, ratings, tariffs and usage. Authenticate with "
        "an API key. Send an Idempotency-Key header with every state-changing call "
        "to make retries safe (a usage report's is its sequence number). Money is "
        "integer minor units with an ISO 4217 currency. "
        "Lists are paged with ?limit and ?cursor (the answer's next_cursor).",
    )
    app.state.store = store
    app.state.settings = settings
    app.state.reputation_policy = policy
    app.state.group_commit = GroupCommit(store)
    app.state.event_stream = {
        "seconds": event_stream_seconds,
        "poll": event_poll_seconds,
        "retry_ms": 1000,
    }
    app.add_middleware(RequestIds)
    app.add_middleware(HttpMetrics)  # outside RequestIds: an unhandled error counts as its 500
    _add_error_answers(app)
    # Bids first: the busiest route, and FastAPI tries routes in order. Every operation
    # declares the error answers too (one shape, `ErrorOut`, instead of FastAPI's own 422).
    app.include_router(bids, prefix="/v1", responses=ERRORS)
    app.include_router(billing.reports, prefix="/v1", responses=ERRORS)
    for router in (
        directory.router,
        market.router,
        negotiations.router,
        auctions,
        outcomes.router,
        dispatch.router,
        billing.router,
        statements.router,
        profiles.router,
        events.router,
        sealing.router,
    ):
        app.include_router(router, prefix="/v1", responses=ERRORS)
    from broker.api.routes.settlements import router as settlements_router  # issue 10

    app.include_router(settlements_router, prefix="/v1", responses=ERRORS)
    app.include_router(payments.router, prefix="/v1", responses=ERRORS)
    app.include_router(credit.router, prefix="/v1", responses=ERRORS)
    app.include_router(operations.router, responses=ERRORS)
    from broker.console import install as install_console  # the web console, at /

    install_console(app)
    _openapi_3_1(app)
    return app


def _openapi_3_1(app: FastAPI) -> None:
    """Keep /openapi.json valid OpenAPI 3.1, the version it declares, and true: FastAPI
    describes an event stream with 3.2's ``itemSchema`` (a 3.1 document says it is a string)
    and gives the stream's error answers its media type (they are JSON)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = build()
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    for status, answer in operation.get("responses", {}).items():
                        content = answer.get("content", {})
                        stream = content.get("text/event-stream")
                        if stream is None:
                            continue
                        if not status.startswith("2"):  # errors are JSON, as everywhere
                            content["application/json"] = content.pop("text/event-stream")
                        elif "itemSchema" in stream:
                            stream.pop("itemSchema")
                            stream["schema"] = {
                                "type": "string",
                                "description": "server-sent events",
                            }
        assert app.openapi_schema is not None  # build() keeps what it makes
        return app.openapi_schema

    # FastAPI's documented way to adjust the schema is to replace this method.
    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """The app of one server process of ``pktx broker serve --processes N`` (a uvicorn factory):
    the settings the command exported to the environment (`broker.settings`)."""
    from engine.logs import inherited

    inherited("broker")
    settings = load_settings()
    return create_app(
        Store(settings.db, migrate=False),
        settings=settings,
        expire_every=settings.expire_every or None,
    )
