"""Operations routes: alive (``/healthz``), ready (``/readyz``), Prometheus metrics
(``/metrics``). None needs a key: they tell an orchestrator or a scraper how the broker is,
never what is in the market beyond counts."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from broker import __version__
from broker.api.deps import store_of
from broker.api.responses import Health, Ready
from broker.metrics import exposition
from broker.store import head_revision

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def health(request: Request) -> dict:
    """The process answers. Its store's revision too, when the database does (None when
    not: alive is not ready, see /readyz)."""
    store = store_of(request)
    try:
        revision = store.revision()
    except Exception:
        revision = None
    return {"status": "ok", "version": __version__, "database": store.backend, "revision": revision}


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
def ready(request: Request):
    """Ready to take calls: the database answers and is migrated to this broker's schema."""
    store = store_of(request)
    head = head_revision()
    try:
        revision = store.revision()
    except Exception as exc:
        log.warning("readyz: the database does not answer: %s", type(exc).__name__)
        return JSONResponse(
            {
                "ready": False,
                "database": store.backend,
                "revision": None,
                "expected_revision": head,
                "reason": "the database does not answer",
            },
            status_code=503,
        )
    if revision != head:
        return JSONResponse(
            {
                "ready": False,
                "database": store.backend,
                "revision": revision,
                "expected_revision": head,
                "reason": f"the database is at schema {revision}, this broker "
                f"needs {head} (`pktx broker serve` migrates it as it "
                f"starts)",
            },
            status_code=503,
        )
    return {
        "ready": True,
        "database": store.backend,
        "revision": revision,
        "expected_revision": head,
        "reason": "",
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition"}
    },
)
async def metrics(request: Request) -> Response:
    body = await asyncio.to_thread(exposition, store_of(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
