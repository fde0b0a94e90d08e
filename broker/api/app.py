"""The FastAPI application: authentication, one transaction per call, errors as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from broker.actors import Actor, authenticate
from broker.errors import BrokerError
from broker.groupcommit import GroupCommit
from broker.negotiation import expire_overdue
from broker.reputation import DEFAULT_POLICY, ReputationPolicy
from broker.store import ENV_DB, Store

log = logging.getLogger(__name__)

# What `app_from_environment` reads: how `pktx broker serve --workers N` configures each worker.
ENV_HALF_LIFE = "PKTX_BROKER_HALF_LIFE_DAYS"
ENV_EXPIRE_EVERY = "PKTX_BROKER_EXPIRE_EVERY"
EXPIRE_EVERY = 30.0

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer pktx_<prefix>_<secret>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def store_of(request: Request) -> Store:
    return request.app.state.store


def policy_of(request: Request) -> ReputationPolicy:
    return request.app.state.reputation_policy


def group_commit_of(request: Request) -> GroupCommit:
    """The app's one writer thread for the small, frequent writes (bids): see `GroupCommit`."""
    return request.app.state.group_commit


async def api_token(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    header: Annotated[str | None, Depends(_header)]) -> str | None:
    """The API key sent, from ``Authorization: Bearer ...`` or ``X-API-Key`` (not checked)."""
    return bearer.credentials if bearer is not None else header


ApiToken = Annotated[str | None, Depends(api_token)]


def actor_of(store: Store, token: str | None) -> Actor:
    """The caller a token authenticates as; `NotAuthenticated` (401) otherwise."""
    with store.read() as session:
        return authenticate(session, token)


def current_actor(request: Request, token: ApiToken) -> Actor:
    """The caller, from ``Authorization: Bearer ...`` or ``X-API-Key``; 401 otherwise."""
    return actor_of(store_of(request), token)


CurrentActor = Annotated[Actor, Depends(current_actor)]
IdemKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="makes a retried POST return the first call's result")]


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
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


def create_app(store: Store, *, reputation_policy: ReputationPolicy = DEFAULT_POLICY,
               expire_every: float | None = EXPIRE_EVERY) -> FastAPI:
    """The API over ``store``; while it runs, overdue negotiations are expired every
    ``expire_every`` seconds (None or 0: never)."""
    from broker.api.routes_directory import router as directory
    from broker.api.routes_market import bids
    from broker.api.routes_market import router as market
    from broker.api.routes_outcomes import router as outcomes

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = None
        if expire_every:
            task = asyncio.create_task(_expire_periodically(store, expire_every),
                                       name="pktx-expire-negotiations")
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
        version="0.1.0",
        description="The market for packet-processing services: requests, negotiation, "
                    "auctions, groups, awards and ratings. Authenticate with an API key. "
                    "Send an Idempotency-Key header with state-changing POSTs to make retries "
                    "safe. Money is integer minor units with an ISO 4217 currency.")
    app.state.store = store
    app.state.reputation_policy = reputation_policy
    app.state.group_commit = GroupCommit(store)

    @app.exception_handler(BrokerError)
    async def _broker_error(_request: Request, exc: BrokerError):
        return JSONResponse(exc.as_dict(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        details = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "")}
                   for e in errors]
        return JSONResponse({"error": "invalid_input", "field": field,
                             "message": f"field {field}: {first.get('msg', 'invalid')}",
                             "details": details}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, exc: IntegrityError):
        log.info("integrity error turned into 409: %s", exc.orig)
        return JSONResponse({"error": "conflict", "message": "the change clashes with data "
                             "stored meanwhile (a duplicate?); read the current state and retry"},
                            status_code=409)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    app.include_router(bids, prefix="/v1")
    app.include_router(directory, prefix="/v1")
    app.include_router(market, prefix="/v1")
    app.include_router(outcomes, prefix="/v1")

    @app.get("/healthz", tags=["operations"])
    def health() -> dict:
        return {"status": "ok", "database": store.backend, "revision": store.revision()}

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``pktx broker serve --workers N`` (a uvicorn factory):
    the store from ``$PKTX_BROKER_DB``, the half-life and the expiry period from the
    environment the command set before starting the workers."""
    policy = ReputationPolicy(half_life=timedelta(days=float(os.environ.get(ENV_HALF_LIFE, 90))))
    every = float(os.environ.get(ENV_EXPIRE_EVERY, EXPIRE_EVERY))
    return create_app(Store(os.environ.get(ENV_DB) or None, migrate=False),
                      reputation_policy=policy, expire_every=every or None)
