"""The broker's HTTP API (FastAPI): `create_app` builds it over a `broker.store.Store`."""

from broker.api.main import create_app

__all__ = ["create_app"]
