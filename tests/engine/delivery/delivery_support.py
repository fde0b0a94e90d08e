"""Helpers for the delivery tests: ports, worker processes, waiting."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"


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


def run_in_thread(delivery) -> tuple[threading.Thread, dict]:
    """Start ``delivery.run()`` on a daemon thread; the box gets ``usage`` or ``error``."""
    box: dict = {}

    def target():
        try:
            box["usage"] = delivery.run()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box
