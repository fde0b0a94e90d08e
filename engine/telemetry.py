"""What a running engine process shows an operator on ``--metrics ADDR:PORT``: Prometheus
metrics on ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready), served by a thread of
the process (docs/operations.md).

The metrics are read at each scrape from what the process already keeps (the delivery's
`Meter`, its dispatcher's workers and tasks, the worker's task counts): nothing is counted
twice on the packet path, and the counters are the usage record's own numbers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.errors import EngineError

log = logging.getLogger(__name__)

Ready = Callable[[], tuple[bool, str]]  # (ready?, why not)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9400)")
    return host.strip("[]"), int(port)


class TelemetryServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one address, in a daemon thread."""

    def __init__(self, address: str, collectors: list[Collector], ready: Ready) -> None:
        self.registry = CollectorRegistry()
        for collector in collectors:
            self.registry.register(collector)
        self.ready = ready
        host, port = parse_address(address)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._answer(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = server.ready()
                    self._answer(200 if ok else 503, (why or "ready").encode() + b"\n")
                else:
                    self._answer(404, b"/metrics, /healthz or /readyz\n")

            def _answer(
                self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args) -> None:  # scrapes are not news
                log.debug("telemetry: " + fmt, *args)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise EngineError(
                f"--metrics {address}: cannot listen there: {exc.strerror or exc}"
            ) from None
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="pktx-telemetry", daemon=True
        )

    def start(self) -> TelemetryServer:
        self.thread.start()
        log.info("metrics on http://%s/metrics", self.address)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _service_seconds(name: str, doc: str, service_ns: dict[str, int]):
    family = CounterMetricFamily(name, doc, labels=["service"])
    for service, ns in sorted(service_ns.items()):
        family.add_metric([service], ns / 1e9)
    return family


def _counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None):
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class DeliveryCollector(Collector):
    """A delivery's metrics: its usage record so far, and its dispatcher's live state."""

    def __init__(self, delivery) -> None:
        self.delivery = delivery

    def collect(self):
        d = self.delivery
        u = d.meter.usage()
        for name, key, doc in (
            ("packets_in", "packets_in", "Packets read from the source"),
            ("bytes_in", "bytes_in", "Bytes read from the source"),
            ("packets_out", "packets_out", "Packets written to the sink"),
            ("bytes_out", "bytes_out", "Bytes written to the sink"),
            ("segments", "segments", "Segments dispatched"),
            ("retries", "retries", "Segments sent again (a worker lost or too slow)"),
            ("duplicates_dropped", "duplicates_dropped", "Results that came twice"),
            ("packets_skipped", "packets_skipped", "Packets of poison segments skipped"),
            (
                "min_rate_windows_met",
                "min_rate_windows_met",
                "One-second windows at or above the minimum rate",
            ),
            (
                "min_rate_windows_missed",
                "min_rate_windows_missed",
                "One-second windows below the minimum rate",
            ),
        ):
            yield _counter(f"pktx_delivery_{name}", doc, u[key])
        per_worker = CounterMetricFamily(
            "pktx_delivery_worker_packets", "Packets processed, by worker", labels=["worker"]
        )
        segs = CounterMetricFamily(
            "pktx_delivery_worker_segments", "Segments processed, by worker", labels=["worker"]
        )
        for worker, counts in sorted(u["workers"].items()):
            per_worker.add_metric([worker], counts.get("packets", 0))
            segs.add_metric([worker], counts.get("segments", 0))
        yield per_worker
        yield segs
        services = CounterMetricFamily(
            "pktx_delivery_service_events",
            "What each service counted (its usage counters)",
            labels=["service", "counter"],
        )
        for service, counters in sorted(u["services"].items()):
            for counter, value in sorted(counters.items()):
                services.add_metric([service, counter], value)
        yield services
        yield _service_seconds(
            "pktx_delivery_service_seconds",
            "Seconds the workers spent in each service (their tasks answered)",
            u.get("service_ns", {}),
        )
        yield _counter(
            "pktx_delivery_throttled_seconds",
            "Seconds the output waited on the rate limit (--max-rate)",
            u.get("throttled_ns", 0) / 1e9,
        )
        lost = CounterMetricFamily(
            "pktx_delivery_workers_lost", "Workers lost, by reason", labels=["reason"]
        )
        for reason, n in sorted(u["lost_workers"].items()):
            lost.add_metric([reason], n)
        yield lost
        dispatcher = getattr(d, "dispatcher", None)
        live = {"workers_connected": 0, "segments_in_flight": 0, "credit": 0}
        if dispatcher is not None:
            live = {
                "workers_connected": len(dispatcher.workers),
                "segments_in_flight": len(dispatcher.pending),
                "credit": dispatcher.total_credit(),
            }
        for name, doc in (
            ("workers_connected", "Workers joined and not lost"),
            ("segments_in_flight", "Segments sent and not yet answered"),
            ("credit", "Segments the workers can take now"),
        ):
            gauge = GaugeMetricFamily(f"pktx_delivery_{name}", doc)
            gauge.add_metric([], live[name])
            yield gauge
        limit = GaugeMetricFamily(
            "pktx_delivery_max_rate_bps", "The output's rate limit in bit/s (0: none)"
        )
        limit.add_metric([], u["max_rate_bps"] or 0)
        yield limit


def delivery_ready(delivery) -> Ready:
    def ready() -> tuple[bool, str]:
        dispatcher = getattr(delivery, "dispatcher", None)
        if dispatcher is None or not dispatcher.workers:
            return False, "no worker has joined yet"
        return True, ""

    return ready


class WorkerCollector(Collector):
    def __init__(self, worker) -> None:
        self.worker = worker

    def collect(self):
        w = self.worker
        yield _counter("pktx_worker_tasks_done", "Segments processed and answered", w.tasks_done)
        yield _counter("pktx_worker_tasks_failed", "Segments a service failed on", w.tasks_failed)
        yield _service_seconds(
            "pktx_worker_service_seconds",
            "Seconds spent in each service (tasks answered)",
            w.service_time(),
        )
        joined = GaugeMetricFamily("pktx_worker_joined", "1 while joined to a dispatcher")
        joined.add_metric([], 1 if w.joined else 0)
        yield joined


def worker_ready(worker) -> Ready:
    def ready() -> tuple[bool, str]:
        return (True, "") if worker.joined else (False, "not joined to a dispatcher")

    return ready


# What a daemon counts (Daemon.events), with the help its metric gets.
DAEMON_EVENTS = {
    "claimed": "Jobs claimed from the broker",
    "completed": "Deliveries that ended well (complete sent)",
    "failed": "Deliveries that failed (fail sent)",
    "handed_back": "Jobs handed back (draining, a job it could not run)",
    "lease_lost": "Jobs whose lease another daemon took",
    "broker_away": "Calls to the broker that found it away (retried with back-off)",
}
BROKER_SILENT_S = 60.0  # not ready once the broker has not answered for this long


class DaemonCollector(Collector):
    """A delivery daemon's jobs and its broker, read from the daemon at each scrape."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def collect(self):
        d = self.daemon
        events = dict(d.events)
        for name, doc in DAEMON_EVENTS.items():
            yield _counter(
                f"pktx_daemon_jobs_{name}" if name != "broker_away" else "pktx_daemon_broker_away",
                doc,
                events.get(name, 0),
            )
        for name, doc, value in (
            ("pktx_daemon_jobs_running", "Deliveries running now", len(d.runs)),
            (
                "pktx_daemon_jobs_waiting",
                "Jobs claimed whose block has not started",
                len(d.waiting),
            ),
            (
                "pktx_daemon_draining",
                "1 once SIGTERM asked it to drain",
                1 if d.draining.is_set() else 0,
            ),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge
        out = CounterMetricFamily(
            "pktx_daemon_job_bytes_out",
            "Bytes delivered by each running job so far",
            labels=["job_id"],
        )
        # What each running job's delivery has recorded (its usage file, this run's).
        throttled = CounterMetricFamily(
            "pktx_daemon_job_throttled_seconds",
            "Seconds each running job's output waited on its rate limit",
            labels=["job_id"],
        )
        missed = CounterMetricFamily(
            "pktx_daemon_job_min_rate_windows_missed",
            "One-second windows of each running job below its minimum rate",
            labels=["job_id"],
        )
        service = CounterMetricFamily(
            "pktx_daemon_job_service_seconds",
            "Seconds the workers spent in each service of each running job",
            labels=["job_id", "service"],
        )
        for job_id, run in sorted(dict(d.runs).items()):
            try:
                out.add_metric([str(job_id)], run.counters().get("bytes_out", 0))
            except (OSError, ValueError):  # its usage file is being replaced: next scrape
                continue
            usage = run.usage()
            if not usage:
                continue
            throttled.add_metric([str(job_id)], usage.get("throttled_ns", 0) / 1e9)
            missed.add_metric([str(job_id)], usage.get("min_rate_windows_missed", 0))
            for name, ns in sorted(usage.get("service_ns", {}).items()):
                service.add_metric([str(job_id), name], ns / 1e9)
        yield out
        yield throttled
        yield missed
        yield service


def daemon_ready(daemon) -> Ready:
    """Ready: the broker answered (lately), and the claim loop runs (not draining)."""
    import time

    def ready() -> tuple[bool, str]:
        d = daemon
        if d.provider_id is None or d.broker_seen is None:
            return False, "the broker has not answered yet"
        if d.draining.is_set():
            return False, "draining"
        if d.claim_thread is None or not d.claim_thread.is_alive():
            return False, "the claim loop is not running"
        silent = time.monotonic() - d.broker_seen
        if silent > BROKER_SILENT_S:
            return False, f"the broker has not answered for {silent:.0f} s"
        return True, ""

    return ready
