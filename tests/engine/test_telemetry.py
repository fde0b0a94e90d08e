"""``--metrics ADDR:PORT`` on ``pktx deliver`` and ``pktx worker`` (issue 12), as an operator
scrapes them: real processes, real sockets, read with prometheus-client's own parser. The
delivery's counters equal its usage record; a worker is ready only once it has joined a
dispatcher, and its task count is the one it reports at exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import dpkt
import httpx
import pytest
from locations import ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families


def pktx_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *map(str, args)]


ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def ready(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200


def udp_frames(tmp_path, packets: int, flows: int) -> list[bytes]:
    """The frames of a generated capture, to send as datagrams."""
    src = tmp_path / "in.pcap"
    subprocess.run(
        pktx_cmd("generate", src, "--packets", packets, "--flows", flows, "-q"),
        check=True,
        env=ENV,
    )
    with open(src, "rb") as f:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]


def live_delivery(tmp_path, in_port: int, metrics: int, *options) -> subprocess.Popen:
    """``pktx deliver`` from ``udp://`` ``in_port`` (ending 4 s after its last datagram) with
    ``options``, its usage record in ``usage.json`` and its metrics on ``metrics``."""
    return subprocess.Popen(
        pktx_cmd(
            "deliver",
            f"udp://127.0.0.1:{in_port}",
            "-o",
            tmp_path / "out.pcap",
            *options,
            "--segment-ms",
            20,
            "--idle-timeout",
            4,
            "--usage-json",
            tmp_path / "usage.json",
            "--metrics",
            f"127.0.0.1:{metrics}",
            "-q",
        ),
        env=ENV,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def remote_worker(bind: int, metrics: int, *options) -> subprocess.Popen:
    """``pktx worker`` joining a dispatcher on ``bind``, its metrics on ``metrics``."""
    return subprocess.Popen(
        pktx_cmd(
            "worker",
            "--connect",
            f"tcp://127.0.0.1:{bind}",
            "--metrics",
            f"127.0.0.1:{metrics}",
            "--max-idle",
            60,
            *options,
            "-q",
        ),
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def send_and_scrape(frames: list[bytes], port: int, metrics: int) -> dict:
    """Send ``frames`` to a live delivery's udp:// ``port``; its scrape once all are out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for frame in frames:
            tx.sendto(frame, ("127.0.0.1", port))
            time.sleep(0.0005)
    return wait_for(
        lambda: (
            (s := scrape(metrics))[("pktx_delivery_packets_out_total", ())] == len(frames) and s
        ),
        "every packet out",
    )


def test_a_live_delivery_shows_its_usage_record_while_it_runs(tmp_path):
    frames = udp_frames(tmp_path, 300, 30)
    in_port, metrics = free_port(), free_port()
    proc = live_delivery(tmp_path, in_port, metrics, "--workers", 1, "--service", "checksum")
    try:
        wait_for(lambda: ready(metrics), "the delivery's worker to join")
        assert httpx.get(f"http://127.0.0.1:{metrics}/healthz").status_code == 200
        seen = send_and_scrape(frames, in_port, metrics)
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    usage = json.loads((tmp_path / "usage.json").read_text())
    for key in ("packets_in", "bytes_in", "packets_out", "bytes_out", "segments", "retries"):
        assert seen[(f"pktx_delivery_{key}_total", ())] == usage[key], key
    for service, counters in usage["services"].items():
        for counter, value in counters.items():
            assert (
                seen[
                    (
                        "pktx_delivery_service_events_total",
                        (("counter", counter), ("service", service)),
                    )
                ]
                == value
            )
    for worker, counts in usage["workers"].items():
        assert (
            seen[("pktx_delivery_worker_packets_total", (("worker", worker),))] == counts["packets"]
        )
    assert seen[("pktx_delivery_workers_connected", ())] == 1
    assert usage["packets_out"] == len(frames)


def test_a_worker_is_ready_once_joined_and_counts_its_tasks(tmp_path):
    src = tmp_path / "in.pcap"
    subprocess.run(pktx_cmd("generate", src, "--packets", 2000, "-q"), check=True, env=ENV)
    bind, metrics = free_port(), free_port()
    worker = remote_worker(bind, metrics, "--json")
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{metrics}/healthz").status_code == 200,
            "the worker's telemetry",
        )
        r = httpx.get(f"http://127.0.0.1:{metrics}/readyz")
        assert (r.status_code, r.text.strip()) == (503, "not joined to a dispatcher")
        assert scrape(metrics)[("pktx_worker_joined", ())] == 0
        done = subprocess.run(
            pktx_cmd(
                "deliver",
                src,
                "-o",
                tmp_path / "out.pcap",
                "--workers",
                0,
                "--bind",
                f"tcp://127.0.0.1:{bind}",
                "--segment-packets",
                100,
                "--json",
                "-q",
            ),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        segments = json.loads(done.stdout)["segments"]
        wait_for(
            lambda: scrape(metrics)[("pktx_worker_tasks_done_total", ())] == segments,
            "the worker's count",
        )
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert json.loads(out)["tasks_done"] == segments, err


def test_a_bad_or_busy_metrics_address_is_one_line(tmp_path):
    src = tmp_path / "in.pcap"
    subprocess.run(pktx_cmd("generate", src, "--packets", 10, "-q"), check=True, env=ENV)
    bad = subprocess.run(
        pktx_cmd("deliver", src, "-o", tmp_path / "o.pcap", "--metrics", "9400"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            pktx_cmd("deliver", src, "-o", tmp_path / "o.pcap", "--metrics", f"127.0.0.1:{port}"),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"pktx: error: --metrics 127.0.0.1:{port}: cannot listen")
    assert not (tmp_path / "o.pcap").exists()


@pytest.mark.parametrize("max_rate", [None, "2M"], ids=["unlimited", "max-rate-2M"])
def test_service_time_throttling_and_missed_windows_are_the_usage_records(tmp_path, max_rate):
    """A live delivery to a remote worker, both scraped once every packet is out: the seconds
    in each service of the chain are the usage record's and the worker's own count of them;
    the seconds waited on --max-rate are the record's (none without a limit)."""
    frames = udp_frames(tmp_path, 400, 40)
    bind, in_port, d_metrics, w_metrics = (free_port() for _ in range(4))
    worker = remote_worker(bind, w_metrics)
    delivery = live_delivery(
        tmp_path,
        in_port,
        d_metrics,
        *("--workers", 0, "--bind", f"tcp://127.0.0.1:{bind}"),
        *("--service", "checksum,identity", "--min-rate", "1G"),
        *(["--max-rate", max_rate] if max_rate else []),
    )
    try:
        wait_for(lambda: ready(d_metrics), "the worker to join the delivery")
        seen = send_and_scrape(frames, in_port, d_metrics)
        at_worker = scrape(w_metrics)
        assert delivery.wait(60) == 0, delivery.stderr.read().decode()
    finally:
        for proc in (delivery, worker):
            if proc.poll() is None:
                proc.kill()
    usage = json.loads((tmp_path / "usage.json").read_text())
    assert usage["packets_out"] == len(frames) and usage["retries"] == 0
    assert set(usage["service_ns"]) == {"checksum", "identity"}
    for service, ns in usage["service_ns"].items():
        label = (("service", service),)
        assert ns > 0
        assert seen[("pktx_delivery_service_seconds_total", label)] == ns / 1e9
        # the worker counted the same nanoseconds on its side of the wire
        assert at_worker[("pktx_worker_service_seconds_total", label)] == ns / 1e9
    throttled = seen[("pktx_delivery_throttled_seconds_total", ())]
    assert throttled == usage["throttled_ns"] / 1e9
    if max_rate:
        assert 0 < usage["throttled_ns"] < usage["duration_ns"]
    else:
        assert usage["throttled_ns"] == 0
    # every window so far missed 1 Gbit/s; the idle seconds after the scrape missed it too
    missed = seen[("pktx_delivery_min_rate_windows_missed_total", ())]
    assert 0 < missed <= usage["min_rate_windows_missed"]
    assert usage["min_rate_windows_met"] == 0
