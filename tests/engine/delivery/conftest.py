"""Fixtures for delivery tests: real processes, real sockets, test-only services."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from locations import ROOT

HERE = Path(__file__).resolve().parent

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


@pytest.fixture(scope="session")
def sample_pcap(tmp_path_factory) -> Path:
    """20,000 generated packets in 200 flows (both directions), nanosecond pcap."""
    from engine.capture.generate import generate_capture

    path = tmp_path_factory.mktemp("delivery") / "sample.pcap"
    generate_capture(path, packets=20_000, flows=200, seed=3, format="pcap", ts_resolution="ns")
    return path
