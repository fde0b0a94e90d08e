"""The Grafana dashboard in deploy/grafana names only metrics that exist (issue 12): each name
in its queries is a family that the broker, a delivery or a worker actually exposes, read from
real scrapes with prometheus-client's own parser."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import httpx
from locations import ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = ROOT / "deploy" / "grafana" / "pktx-overview.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
)


def families(url: str) -> set[str]:
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.get(url, timeout=5)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.1)
    assert r.status_code == 200
    return {f.name for f in text_string_to_metric_families(r.text)}


def named(dashboard: dict) -> set[str]:
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bpktx_[a-z_]+", target["expr"]):
                for suffix in SUFFIXES:
                    name = name.removesuffix(suffix)
                names.add(name)
    return names


def test_every_metric_the_dashboard_names_exists(served, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pktx-overview" and dashboard["panels"]
    httpx.get(f"{served.url}/healthz")  # one call: the HTTP families have samples
    exposed = families(f"{served.url}/metrics")
    worker_metrics, delivery_metrics = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "worker",
                "--connect",
                "tcp://127.0.0.1:1",
                "--max-idle",
                "30",
                "--metrics",
                f"127.0.0.1:{worker_metrics}",
                "-q",
            ],
            env=ENV,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "deliver",
                f"udp://127.0.0.1:{port}",
                "-o",
                str(tmp_path / "o.pcap"),
                "--workers",
                "1",
                "--idle-timeout",
                "30",
                "--metrics",
                f"127.0.0.1:{delivery_metrics}",
                "-q",
            ],
            env=ENV,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        exposed |= families(f"http://127.0.0.1:{worker_metrics}/metrics")
        exposed |= families(f"http://127.0.0.1:{delivery_metrics}/metrics")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(30)
    wanted = named(dashboard)
    assert len(wanted) >= 20
    assert wanted <= exposed, sorted(wanted - exposed)
