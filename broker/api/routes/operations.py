"""Operations routes: health."""

from __future__ import annotations

from fastapi import APIRouter, Request

from broker import __version__
from broker.api.deps import store_of
from broker.api.responses import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def health(request: Request) -> dict:
    store = store_of(request)
    return {"status": "ok", "version": __version__, "database": store.backend,
            "revision": store.revision()}
