"""The broker's HTTP API (FastAPI): authenticated, JSON errors, OpenAPI at /openapi.json."""

from broker.api.app import create_app

__all__ = ["create_app"]
