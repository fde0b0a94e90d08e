"""Helpers for the delivery tests: ports, worker processes, waiting."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from locations import CORPUS, ROOT, free_port  # noqa: F401 (the delivery tests import them here)

HERE = Path(__file__).resolve().parent


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


class RawPeer:
    """A hand-driven DEALER speaking PKTX/1 (or not): a stranger, a liar, a slow reader."""

    def __init__(self, endpoint: str, **sockopts) -> None:
        import zmq

        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        for name, value in sockopts.items():
            setattr(self.sock, name, value)
        self.sock.connect(endpoint)

    def send(self, *frames, flags: int = 0) -> None:
        from engine.delivery import protocol as P

        self.sock.send_multipart([P.PROTOCOL, *frames], flags)

    def ready(self, name: str, services=("identity", "slow"), credit: int = 1) -> None:
        from engine.delivery import protocol as P

        self.send(P.READY, P.dumps({"name": name, "services": list(services), "credit": credit}))

    def recv(self, timeout_s: float = 30) -> list[bytes] | None:
        if not self.sock.poll(int(timeout_s * 1000)):
            return None
        return self.sock.recv_multipart()

    def recv_command(
        self, command: bytes, timeout_s: float = 30, heartbeat: bool = True
    ) -> list[bytes]:
        """Frames of the next ``command`` message, heartbeating meanwhile."""
        from engine.delivery import protocol as P

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frames = self.recv(0.05)
            if frames is None:
                if heartbeat:
                    self.send(P.HEARTBEAT)
                continue
            if frames[1] == command:
                return frames
        raise AssertionError(f"no {P.COMMAND_NAMES[command]} within {timeout_s} s")

    def close(self) -> None:
        self.sock.close(0)


def result_frames(header, batch, counters=None) -> list:
    """A RESULT body answering ``header`` with ``batch``."""
    from engine.delivery import protocol as P

    return [
        P.RESULT,
        header.pack(),
        P.dumps(counters or {}),
        *[bytes(f) for f in batch.to_frames()],
    ]
