"""The broker's operations endpoints (issue 12): ``/metrics`` read by prometheus-client's own
parser and compared with the calls made and the rows stored, route templates rather than
paths as labels, the HTTP counters summed over ``--workers 2`` real processes, ``/readyz``
refusing a database at another schema while ``/healthz`` stays alive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
from alembic import command
from apiclient import block
from locations import ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from broker.models import DeliveryJob, UsageReport
from broker.store import alembic_config, head_revision


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    r = httpx.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def calls(samples, route: str, status: str, method: str = "POST") -> float:
    key = (
        "pktx_broker_http_requests_total",
        (("method", method), ("route", route), ("status", status)),
    )
    return samples.get(key, 0)


def test_metrics_count_the_calls_by_route_and_match_the_store(api):
    a = api
    before = scrape(a.base)
    r = a.alice.post("/v1/requests", json=block(services=["identity"]))
    assert r.status_code == 201, r.text
    assert a.alice.get("/v1/requests/999999").status_code == 404
    assert httpx.get(f"{a.base}/v1/no/such/path/12345").status_code == 404
    assert (
        httpx.get(f"{a.base}/v1/requests", headers={"Authorization": "Bearer nonsense"}).status_code
        == 401
    )
    after = scrape(a.base)
    assert calls(after, "/v1/requests", "201") - calls(before, "/v1/requests", "201") == 1
    assert (
        calls(after, "/v1/requests/{request_id}", "404", "GET")
        - calls(before, "/v1/requests/{request_id}", "404", "GET")
        == 1
    )
    assert (
        calls(after, "(unmatched)", "404", "GET") - calls(before, "(unmatched)", "404", "GET") == 1
    )
    assert (
        calls(after, "/v1/requests", "401", "GET") - calls(before, "/v1/requests", "401", "GET")
        == 1
    )
    labels = {dict(k[1]).get("route") for k in after if k[0].startswith("pktx_broker_http")}
    assert not any(re.search(r"/\d+(/|$)", label or "") for label in labels), labels
    count = (
        "pktx_broker_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/requests")),
    )
    assert after[count] >= 1


def test_the_market_gauges_are_the_stored_rows(api, market):
    a = api
    for _ in range(3):
        assert a.alice.post("/v1/requests", json=block(services=["identity"])).status_code == 201
    samples = scrape(a.base)
    with market.store.read() as s:
        jobs = dict(
            s.execute(select(DeliveryJob.status, func.count()).group_by(DeliveryJob.status)).all()
        )
        reports = s.scalar(select(func.count()).select_from(UsageReport))
    assert jobs and {st: samples[("pktx_broker_jobs", (("status", st),))] for st in jobs} == jobs
    assert samples[("pktx_broker_usage_reports_total", ())] == reports
    assert samples[("pktx_broker_database_up", ())] == 1


def test_readyz_wants_the_schema_healthz_only_the_process(store, served):
    assert httpx.get(f"{served.url}/readyz").json() == {
        "ready": True,
        "database": store.backend,
        "revision": head_revision(),
        "expected_revision": head_revision(),
        "reason": "",
    }
    with store.engine.connect() as conn:
        cfg = alembic_config(store.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011")
        conn.commit()
    r = httpx.get(f"{served.url}/readyz")
    assert r.status_code == 503
    assert r.json()["revision"] == "0011" and "needs " + head_revision() in r.json()["reason"]
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def test_workers_share_their_counters(tmp_path):
    """Two worker processes: whichever answers the scrape, the calls of both are counted; both
    log JSON lines as the command was told."""
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(tmp_path / "broker.log", "w")  # noqa: SIM115 - closed after the process ends
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "broker",
            "serve",
            "--db",
            f"sqlite:///{tmp_path / 'b.sqlite3'}",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "info",
            "--log-format",
            "json",
            "--expire-every",
            "0",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited at start"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        start = calls(scrape(base), "/healthz", "200", "GET")
        for _ in range(40):  # new connections: both workers take some
            assert httpx.get(f"{base}/healthz").status_code == 200
        seen = {calls(scrape(base), "/healthz", "200", "GET") - start for _ in range(6)}
        assert seen == {40}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    # Its workers log as it was told: JSON lines, access lines included, with their role.
    lines = [json.loads(line) for line in (tmp_path / "broker.log").read_text().splitlines()]
    assert {line["role"] for line in lines} == {"broker"}
    assert any(
        line["message"].startswith("serving sqlite store on http://127.0.0.1:") for line in lines
    )
    assert any(
        "GET /healthz" in line["message"] and line["logger"] == "uvicorn.access" for line in lines
    )
