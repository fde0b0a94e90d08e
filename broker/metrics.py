"""The broker's Prometheus metrics: its HTTP calls by route and status with their latency
(counted in the process that answered), and the market's state read from the database at each
scrape (docs/operations.md, "Metrics").

``pktx broker serve --workers N`` runs N processes: the HTTP counters then live in
prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, made by the serve
command), so any worker's ``/metrics`` shows the sum over all of them. The market's state
comes from the database and is the same whoever answers.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.models import (
    Auction,
    Bid,
    DeliveryJob,
    Payment,
    ServiceRequest,
    Statement,
    UsageReport,
)
from broker.store import Store

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "(unmatched)"  # a path no route has: one label, not one per path a stranger tries

# Not in any registry: each scrape gathers them into its own (see `exposition`), so several
# apps in one process (tests) and several processes (multiprocess files) read alike.
REQUESTS = Counter(
    "pktx_broker_http_requests",
    "HTTP calls answered, by route and status",
    ["method", "route", "status"],
    registry=None,
)
LATENCY = Histogram(
    "pktx_broker_http_request_duration_seconds",
    "Time from a call's arrival to the end of its answer, by route",
    ["method", "route"],
    registry=None,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
_STATES = (  # (metric, help, model, its status column)
    ("pktx_broker_requests", "Service requests by status", ServiceRequest, ServiceRequest.status),
    ("pktx_broker_auctions", "Auctions by status", Auction, Auction.status),
    ("pktx_broker_jobs", "Delivery jobs by state", DeliveryJob, DeliveryJob.status),
    ("pktx_broker_statements", "Statements by status", Statement, Statement.status),
    ("pktx_broker_payments", "Card payments by outcome", Payment, Payment.status),
)
_TOTALS = (
    ("pktx_broker_bids", "Bids received (stored)", Bid),
    ("pktx_broker_usage_reports", "Usage reports taken in (stored, each once)", UsageReport),
)


class HttpMetrics:
    """ASGI middleware: count each HTTP call by method, route template and status, and time it.
    The route is the template FastAPI matched (``/v1/jobs/{job_id}/usage``), so a label never
    carries an id or a stranger's path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets if nothing answers (RequestIds turns it into JSON)

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            template = route_template(scope)
            method = scope.get("method", "")
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - began)


_PREFIX = "_pktx_metrics_prefix"  # a route's prefix (its router's), learnt from a call


def route_template(scope: Scope) -> str:
    """The template of the route a call matched, prefix included (``/v1/jobs/{job_id}``).
    FastAPI gives the route's own template; its router's prefix is static, so it is what is
    left of the path once the route's template, filled with the call's values, is taken off
    its end. The template alone when that cannot be told (a converter changed a value)."""
    route = scope.get("route")
    form = getattr(route, "path_format", None)
    if form is None:
        return UNMATCHED
    prefix = getattr(route, _PREFIX, None)
    if prefix is None:
        try:
            filled = form.format(**{k: str(v) for k, v in scope.get("path_params", {}).items()})
        except (KeyError, IndexError, ValueError):
            return form
        path = scope.get("path", "")
        if not path.endswith(filled):
            return form
        prefix = path[: len(path) - len(filled)]
        setattr(route, _PREFIX, prefix)
    return prefix + form


class MarketCollector(Collector):
    """The market's state, counted in the database at each scrape: requests, auctions, jobs,
    statements and payments by status; bids and usage reports stored."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self):
        up = GaugeMetricFamily(
            "pktx_broker_database_up", "1 when the last scrape could read the database"
        )
        families: list[Metric] = []
        try:
            with self.store.read() as s:
                for name, doc, _model, column in _STATES:
                    family = GaugeMetricFamily(name, doc, labels=["status"])
                    for status, n in s.execute(
                        select(column, func.count()).group_by(column).order_by(column)
                    ):
                        family.add_metric([status], n)
                    families.append(family)
                for name, doc, model in _TOTALS:
                    total = CounterMetricFamily(name, doc)
                    total.add_metric(
                        [], s.execute(select(func.count()).select_from(model)).scalar_one()
                    )
                    families.append(total)
        except Exception:  # a scrape says the database is away; it never fails itself
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def exposition(store: Store) -> bytes:
    """The text of a scrape: this process's (or all workers') HTTP metrics and the market's."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROCESS_DIR):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(MarketCollector(store))
    return generate_latest(registry)
