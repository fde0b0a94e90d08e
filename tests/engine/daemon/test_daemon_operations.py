"""Issue 12's "done when", as processes on loopback: a broker, a daemon and two remote workers,
each with its metrics; during a delivery every ``/metrics`` answers with live counters, the
daemon is ready once its broker answered and its claim loop runs, and its JSON log lines name
the job they are about. The daemon's counters agree with the broker's record of the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from locations import ROOT, free_port, need_corpus
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.node_world import BrokerProcess, Daemon, market, read_packets


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"{url}/metrics", timeout=5)
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def until(check, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (httpx.TransportError, KeyError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def world(tmp_path):
    corpus = need_corpus()
    broker = BrokerProcess(tmp_path / "broker").start()
    m = market(broker, tmp_path / "files", corpus / "dpkt" / "http.pcap")
    yield broker, m
    m.close()
    broker.stop()


def test_a_broker_a_daemon_and_two_workers_show_live_metrics_and_logs_name_the_job(world, tmp_path):
    broker, m = world
    bind, metrics = free_port(), free_port()
    daemon = Daemon(
        m,
        tmp_path / "d",
        extra=(
            "--workers",
            "0",
            "--bind",
            f"tcp://127.0.0.1:{bind}",
            "--metrics",
            f"127.0.0.1:{metrics}",
            "--log-format",
            "json",
            "--json",
        ),
    ).start()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    worker_ports = [free_port(), free_port()]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "worker",
                "--connect",
                f"tcp://127.0.0.1:{bind}",
                "--metrics",
                f"127.0.0.1:{port}",
                "--max-idle",
                "120",
                "-q",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in worker_ports
    ]
    node = f"http://127.0.0.1:{metrics}"
    try:
        until(lambda: httpx.get(f"{node}/readyz").status_code == 200, "the daemon ready")
        assert scrape(broker.url)[("pktx_broker_database_up", ())] == 1
        # A job slow enough to be seen running: the capture (25.8 KB) at 50 kbit/s, about 4 s,
        # so its delivery writes its usage record (every second) a few times while it runs
        # and the scrapes below see it under load (at 200 kbit/s it lasted about 1 s).
        request = m.request(sink="out/fleet.pcap", max_rate_bps=50_000)
        running = until(
            lambda: (s := scrape(node))[("pktx_daemon_jobs_running", ())] == 1 and s,
            "the job running",
        )
        assert running[("pktx_daemon_jobs_claimed_total", ())] == 1
        until(
            lambda: scrape(broker.url)[("pktx_broker_jobs", (("status", "running"),))] == 1,
            "the broker's job gauge",
        )
        until(
            lambda: (
                sum(
                    scrape(f"http://127.0.0.1:{p}")[("pktx_worker_tasks_done_total", ())]
                    for p in worker_ports
                )
                > 0
            ),
            "the workers' live counters",
        )
        # The running job's rate limit and its service, from its delivery's usage record.
        seen = until(
            lambda: (
                (s := scrape(node))
                and any(
                    name == "pktx_daemon_job_throttled_seconds_total" and value > 0
                    for (name, _labels), value in s.items()
                )
                and any(name == "pktx_daemon_job_service_seconds_total" for name, _ in s)
                and s
            ),
            "the job's throttling and service time",
        )
        services = {
            dict(labels)["service"]
            for (name, labels), value in seen.items()
            if name == "pktx_daemon_job_service_seconds_total" and value > 0
        }
        assert services == {"identity"}  # the job's chain
        job = m.wait_job(request["id"], "done")
        done = until(
            lambda: (s := scrape(node))[("pktx_daemon_jobs_completed_total", ())] == 1 and s,
            "the completion counted",
        )
        assert done[("pktx_daemon_jobs_running", ())] == 0
        assert (
            scrape(broker.url)[("pktx_broker_usage_reports_total", ())]
            == m.usage(job["id"])["reports"]
        )
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
        for w in workers:
            w.send_signal(signal.SIGTERM)
            w.wait(60)
    assert read_packets(m.files / "out" / "fleet.pcap") == m.packets
    logged = daemon.log()
    report = json.loads(logged[logged.rindex('{\n  "name"') :])  # --json: its stdout, at exit
    assert (report["provider_id"], report["jobs_finished"], report["exit_status"]) == (
        m.provider_id,
        1,
        0,
    )
    assert report["events"]["claimed"] == report["events"]["completed"] == 1
    lines = [
        json.loads(line)
        for line in logged[: logged.rindex('{\n  "name"')].splitlines()
        if line.startswith("{")
    ]
    assert lines and {line["role"] for line in lines} == {"daemon"}
    about = [line for line in lines if line.get("job_id") == job["id"]]
    assert any("claimed" in line["message"] for line in about), lines
    assert any("delivering" in line["message"] for line in about), lines
    assert m.provider_token not in daemon.log()
