"""Where things are, defined once for every test: the project, the capture corpus beside it,
and a free loopback port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared/corpus beside the project: real captures (dpkt's and libpcap's test files).
CORPUS = ROOT.parent / "shared" / "corpus"


def need_corpus() -> Path:
    """The corpus folder, or skip the calling test with where it was looked for."""
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at <project>/../shared/corpus ({CORPUS})")
    return CORPUS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
