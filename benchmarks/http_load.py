"""The HTTP side of ``pktx bench broker``: ``pktx broker serve`` as a subprocess, and a lean load
generator (keep-alive HTTP/1.1 connections on an event loop, in the manner of wrk) that POSTs
bids and checks every answer; CPU time read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPLAY_EVERY = 10  # every n-th bid is POSTed twice with its key: a client's retry


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of process ``pid`` and its children so far; None where there is
    no /proc to read it from."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == pid]
        total = 0
        for p in pids:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / ticks
    except (OSError, ValueError, IndexError):
        return None


def _parent(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(url: str, *, workers: int = 1) -> Iterator[tuple[str, int]]:
    """``pktx broker serve`` on a random loopback port, as a subprocess; yields its base URL
    and process id.

    Logging at warning: uvicorn's access log line per request is an operator's choice, not
    the broker's cost.
    """
    import httpx

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "broker",
        "serve",
        "--db",
        url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(f"the broker server exited: {errors.read().decode()}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the broker server did not answer within 60 s")
                time.sleep(0.1)
            yield base, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to POST a bid
    and read the answer: status, headers, a Content-Length body. A load generator in the
    manner of wrk: httpx spends more CPU per request than the server does, and on a 2-core
    machine that CPU is taken from the server being measured."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"\r\n".encode()
            + body
        )
        try:
            await self.writer.drain()
            lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            status = int(lines[0].split()[1])
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            answer = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()
            raise ConnectionError("the connection broke mid-request") from None
        if close:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _post_bids(
    host: str,
    port: int,
    auction: int,
    jobs: list[tuple[int, str, int]],
    stop_at: float,
    counts: dict,
) -> None:
    """One client: each bid one POST with its own idempotency key, every n-th sent twice
    (a retry, which must not make a second bid); failures are retried with the same key. An
    answer counts as a success only when it is a 201 naming this bid's provider and price."""
    import json

    conn = _Connection(host, port)
    path = f"/v1/auctions/{auction}/bids"
    try:
        for n, (provider, token, price) in enumerate(jobs):
            if time.perf_counter() >= stop_at:
                break
            headers = {
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": f"bid-{auction}-{provider}",
            }
            body = json.dumps({"provider_id": provider, "price_minor": price}).encode()
            times = 2 if n % REPLAY_EVERY == REPLAY_EVERY - 1 else 1
            for _ in range(times):
                for _attempt in range(5):
                    counts["requests"] += 1
                    try:
                        status, answer = await conn.post(path, headers, body)
                    except ConnectionError:
                        counts["errors"] += 1
                        continue
                    if status == 201:
                        got = json.loads(answer)
                        if (got["provider_id"], got["price_minor"]) == (provider, price):
                            break
                    counts["errors"] += 1
            counts["sent"] += 1
            counts["replays"] += times - 1
    finally:
        conn.close()


def client_process(
    base: str, auction: int, shares: list, seconds: float, ready, go, results
) -> None:
    """A process of ``len(shares)`` concurrent clients (one connection each, on one event
    loop); starts when ``go`` is set."""
    from urllib.parse import urlsplit

    url = urlsplit(base)
    ready.set()
    go.wait()
    cpu0 = time.process_time()
    stop_at = time.perf_counter() + seconds
    counts = dict.fromkeys(("sent", "replays", "errors", "requests"), 0)

    async def clients() -> None:
        await asyncio.gather(
            *(
                _post_bids(url.hostname, url.port, auction, share, stop_at, counts)
                for share in shares
            )
        )

    asyncio.run(clients())
    counts["cpu_s"] = time.process_time() - cpu0
    results.put(counts)
