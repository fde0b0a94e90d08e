"""A broker and daemons as real processes on loopback, for the daemon's tests and benchmarks.

`BrokerProcess` is ``pktx broker serve`` on a SQLite file (stopped and started again at will,
the store kept); `market` sets up a provider with a key, a user with a key and a capture file
in the daemon's files folder; `Daemon` is ``pktx daemon`` with its state folder (SIGKILLed,
SIGSTOPped, SIGTERMed and started again at will). The tests (``tests/engine/daemon/``) and
``benchmarks/daemon_chaos.py`` share it; what goes wrong raises `WorldError` (not ``assert``:
a benchmark may run under ``python -O``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dpkt
import httpx

ROOT = Path(__file__).resolve().parents[1]


class WorldError(RuntimeError):
    """A process of the world did not do what was asked of it (what it said, when known)."""


def expect(ok: object, what: object) -> None:
    """Raise `WorldError` with ``what`` unless ``ok``."""
    if not ok:
        raise WorldError(str(what))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pktx(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


class BrokerProcess:
    def __init__(
        self,
        folder: Path,
        *,
        tls: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        reached_at: str | None = None,
        prefix: tuple[str, ...] = (),
        log_level: str = "warning",
    ) -> None:
        """``host``: where it listens; ``reached_at``: the address this process reaches it at
        (default ``host``); ``prefix``: what the command runs under (``ip netns exec NS``);
        ``log_level``: what it logs to ``broker.log``."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = f"sqlite:///{folder / 'broker.sqlite3'}"
        self.port = free_port()
        self.tls = tls
        self.host, self.prefix = host, prefix
        self.url = f"{'https' if tls else 'http'}://{reached_at or host}:{self.port}"
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None

    def start(self, *, verify=True) -> BrokerProcess:
        argv = [
            *self.prefix,
            sys.executable,
            "-m",
            "engine.cli",
            "broker",
            "serve",
            "--db",
            self.db,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            self.log_level,
            "--expire-every",
            "0",
        ]
        if self.tls:
            argv += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        log = open(self.folder / "broker.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2, verify=verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise WorldError((self.folder / "broker.log").read_text()[-2000:])
            expect(time.monotonic() < deadline, "the broker did not start")
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def admin_token(broker: BrokerProcess) -> str:
    done = pktx("broker", "admin", "init", "--db", broker.db)
    expect(done.returncode == 0, done.stderr)
    return json.loads(done.stdout)["token"]


@dataclass
class Market:
    url: str
    admin: httpx.Client
    provider_id: int
    provider_token: str
    user: httpx.Client
    files: Path
    packets: list[bytes]

    def request(self, *, sink: str = "out.pcap", services=("identity",), **extra) -> dict:
        """A request served at home: its award's job is queued for the provider's daemons."""
        body = {
            "services": list(services),
            "volume_bytes": 10**9,
            "source": "in.pcap",
            "sink": sink,
            **extra,
        }
        r = self.user.post("/v1/requests", json=body)
        expect(r.status_code == 201, r.text)
        expect(r.json()["status"] == "served", r.json())
        return r.json()

    def job_of(self, request_id: int) -> dict:
        r = self.admin.get(f"/v1/providers/{self.provider_id}/jobs")
        expect(r.status_code == 200, r.text)
        for job in r.json()["items"]:
            if job["spec"]["request_id"] == request_id:
                r = self.admin.get(f"/v1/jobs/{job['id']}")
                expect(r.status_code == 200, r.text)
                detail = r.json()
                return {**detail["job"], "events": detail["events"], "measured": detail["measured"]}
        raise WorldError(f"no job for request {request_id}")

    def wait_job(self, request_id: int, status: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job_of(request_id)
            if job["status"] == status:
                return job
            if time.monotonic() > deadline:
                raise WorldError(f"job stayed {job['status']}: {job}")
            time.sleep(0.2)

    def close(self) -> None:
        """Close the clients' connections (the broker's graceful stop waits for open ones)."""
        self.admin.close()
        self.user.close()

    def usage(self, job_id: int) -> dict:
        r = self.admin.get(f"/v1/jobs/{job_id}/usage")
        expect(r.status_code == 200, r.text)
        return r.json()


def market(
    broker: BrokerProcess,
    files: Path,
    capture: Path,
    *,
    verify=True,
    services=("identity", "checksum"),
) -> Market:
    token = admin_token(broker)
    admin = httpx.Client(
        base_url=broker.url, verify=verify, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )
    return provider_market(
        broker.url, admin, "home", files, capture, verify=verify, services=services
    )


def provider_market(
    url: str,
    admin: httpx.Client,
    name: str,
    files: Path,
    capture: Path,
    *,
    verify=True,
    services=("identity", "checksum"),
) -> Market:
    """A network ``name`` with a provider of that name (its key), a user at home there (its
    key), and ``capture`` as ``in.pcap`` in ``files``: another provider beside a market's is
    ``provider_market(m.url, m.admin, "other", ...)``."""

    def make(path, body):
        r = admin.post(path, json=body)
        expect(r.status_code == 201, r.text)
        return r.json()["id"]

    def key(kind, ident):
        r = admin.post("/v1/keys", json={"kind": kind, "id": ident})
        expect(r.status_code == 201, r.text)
        return r.json()["token"]

    net = make("/v1/networks", {"name": name})
    provider = make(
        "/v1/providers",
        {
            "network_id": net,
            "name": name,
            "services": list(services),
            "capacity_bps": 10**9,
            "currency": "EUR",
            "per_gb_minor": 100,
            "per_mbps_hour_minor": 10,
        },
    )
    user = make("/v1/users", {"name": f"alice-{name}", "home_provider_id": provider})
    user_client = httpx.Client(
        base_url=url,
        verify=verify,
        timeout=30,
        headers={"Authorization": f"Bearer {key('user', user)}"},
    )
    files.mkdir(parents=True, exist_ok=True)
    shutil.copy(capture, files / "in.pcap")
    return Market(
        url,
        admin,
        provider,
        key("provider", provider),
        user_client,
        files,
        read_packets(files / "in.pcap"),
    )


def read_packets(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]


def catching(proc: subprocess.Popen, sig: int, timeout: float = 60, what=lambda: "") -> None:
    """Wait until process ``proc`` has a handler for ``sig`` (Linux: its ``SigCgt`` mask): a
    signal sent before that, in the first milliseconds of the interpreter's start, ends it as
    it ends any process (``what``: text for the failure's message, the process's log)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, what()[-3000:]
        with open(f"/proc/{proc.pid}/status") as f:
            caught = next(ln for ln in f if ln.startswith("SigCgt:")).split()[1]
        if int(caught, 16) >> (sig - 1) & 1:
            return
        assert time.monotonic() < deadline, f"process {proc.pid} never caught signal {sig}"
        time.sleep(0.005)


class Daemon:
    """``pktx daemon`` for the market's provider, its state in ``folder``."""

    def __init__(
        self,
        m: Market,
        folder: Path,
        *,
        name: str = "node-1",
        lease: float = 6,
        grace: float = 5,
        extra: tuple[str, ...] = (),
        env: dict | None = None,
        broker_url: str | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """``broker_url``: where the daemon reaches the broker (default the market's URL);
        ``prefix``: what the command runs under (``ip netns exec NS``, which execs it: the
        process is the daemon's own)."""
        self.m, self.folder, self.name = m, folder, name
        self.argv = [
            *prefix,
            sys.executable,
            "-m",
            "engine.cli",
            "daemon",
            "--broker",
            broker_url or m.url,
            "--key-env",
            "NODE_KEY",
            "--state",
            str(folder / "state"),
            "--files",
            str(m.files),
            "--workers",
            "1",
            "--name",
            name,
            "--lease",
            str(lease),
            "--grace",
            str(grace),
            *extra,
        ]
        self.env = {**os.environ, "NODE_KEY": m.provider_token, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "daemon.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=log, env=self.env)
        return self

    def log(self) -> str:
        return (self.folder / "daemon.log").read_text(errors="replace")

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def catching(self, sig: int | None = None, timeout: float = 60) -> None:
        assert self.proc is not None, "not started"
        catching(self.proc, sig or signal.SIGTERM, timeout, what=self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)
