"""Fixtures for delivery tests: real processes, real sockets, test-only services."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"

sys.path.insert(0, str(HERE))
from svc_fixtures import EXTRA  # noqa: E402


@pytest.fixture(autouse=True)
def _test_services(monkeypatch):
    """Workers (child processes) and the dispatcher find the test-only services."""
    monkeypatch.setenv("PKTX_EXTRA_SERVICES", EXTRA)
    paths = [str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    from engine.services import _registry, service_class

    _registry.cache_clear()
    service_class.cache_clear()
    yield
    _registry.cache_clear()
    service_class.cache_clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pktx_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *map(str, args)]


def start_worker(endpoint: str, *extra, name: str | None = None, stderr=None) -> subprocess.Popen:
    cmd = pktx_cmd("worker", "--connect", endpoint, "--max-idle", "60", *extra)
    if name:
        cmd += ["--name", name]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=stderr)


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def sample_pcap(tmp_path_factory) -> Path:
    """20,000 generated packets in 200 flows (both directions), nanosecond pcap."""
    from engine.generate import generate_capture

    path = tmp_path_factory.mktemp("delivery") / "sample.pcap"
    generate_capture(path, packets=20_000, flows=200, seed=3, format="pcap",
                     ts_resolution="ns")
    return path
