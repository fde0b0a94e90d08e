"""``pktx bench daemon``: what the delivery daemon costs on top of the engine, measured against
a real ``pktx broker serve`` (SQLite, loopback) and one running ``pktx daemon``.

Issue 11's speed section: an award reaches a running daemon and its first packet is delivered
within 1 s on loopback; the daemon's own overhead on a delivery (claiming, heartbeats, reports)
costs under 2% of the throughput of ``pktx deliver`` on the same job.

- **Award to first packet.** The clock starts before the request's POST (a request served at
  home is awarded in that call, and its job queued) and stops when a UDP socket in this process
  receives the first datagram of the delivery: the job's sink is ``udp://127.0.0.1:PORT``, so
  the instant is the packet's arrival, not a report about it (the usage record's ``start`` is
  the delivery's start, before its first packet, and a usage report is sent later still).
  Its source is a small capture (1,000 packets). Median of the runs, with the claim's share
  (the broker's ``claim`` event against the same wall clock).
- **Throughput.** The same job, a generated capture file delivered to a file with ``identity``
  and the same local workers: ``pktx deliver`` as a whole process (start-up included), against
  the daemon from the award (before the POST) to the broker's ``complete`` event of the job.
  Runs alternate between the two so load on a shared machine falls on both; best of the runs.
  The overhead is the throughput lost: ``1 - deliver / daemon`` in seconds. At more than one
  job size (200,000 and 2,000,000 packets by default): the difference in seconds that stays
  the same across sizes is the daemon's fixed cost a job, the share at the largest size its
  steady-state overhead. The daemon keeps a spare delivery process started while it is idle
  (``engine.daemon.standby``): after each job the benchmark waits until the next spare is
  ready, so no timed run shares the CPU with its start-up, and counts the jobs a spare took.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.report import BYTE_RATE, PACKET_RATE, SECONDS, WHAT, Column, Report, label

TARGET_FIRST_PACKET_S = 1.0
TARGET_OVERHEAD = 0.02
WORKERS = 2
SIZES = (200_000, 2_000_000)
# What the daemon logs of its own time on each job it completes (`engine.daemon.node`).
SPARE = "the spare started ahead"  # its log line of a job its spare delivery process took
OWN_TIME = re.compile(r"job \d+: done \(the daemon's own time: ([\d.]+) ms")
LATENCY_PACKETS = 1000
ROOT = Path(__file__).resolve().parents[1]


def _pktx(*args) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *map(str, args)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )


class Scene:
    """A broker on SQLite, a provider (its key), a user at home there, and a daemon of the
    provider's with ``files`` as its files folder; all stopped by `close`."""

    def __init__(self, folder: Path, workers: int = WORKERS) -> None:
        import httpx

        self.folder, self.files = folder, folder / "files"
        self.files.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.clients: list = []
        db = f"sqlite:///{folder / 'broker.sqlite3'}"
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn(
            "broker",
            _pktx(
                "broker",
                "serve",
                "--db",
                db,
                "--port",
                port,
                "--log-level",
                "warning",
                "--expire-every",
                "0",
            ),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the broker did not start: " + self._log("broker"))
            time.sleep(0.1)
        init = subprocess.run(
            _pktx("broker", "admin", "init", "--db", db),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        self.admin = self._client(json.loads(init.stdout)["token"])
        net = self._make("/v1/networks", {"name": "bench"})
        self.provider = self._make(
            "/v1/providers",
            {
                "network_id": net,
                "name": "bench",
                "services": ["identity"],
                "capacity_bps": 10**12,
                "currency": "EUR",
                "per_gb_minor": 1,
                "per_mbps_hour_minor": 1,
            },
        )
        user = self._make("/v1/users", {"name": "bench", "home_provider_id": self.provider})
        self.user = self._client(self._key("user", user))
        self._spawn(
            "daemon",
            _pktx(
                "daemon",
                "--broker",
                self.url,
                "--key-env",
                "BENCH_KEY",
                "--state",
                folder / "state",
                "--files",
                self.files,
                "--workers",
                workers,
                "--max-jobs",
                1,
                "--name",
                "bench",
            ),
            BENCH_KEY=self._key("provider", self.provider),
        )

    def _spawn(self, name: str, argv: list[str], **env) -> None:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it
        self.procs.append(
            subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**_env(), **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        )

    def _log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-2000:]

    def log_text(self) -> str:
        """The daemon's whole log so far."""
        return (self.folder / "daemon.log").read_text(errors="replace")

    def _client(self, token: str):
        import httpx

        client = httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        )
        self.clients.append(client)
        return client

    def _make(self, path: str, body: dict) -> int:
        r = self.admin.post(path, json=body)
        r.raise_for_status()
        return r.json()["id"]

    def _key(self, kind: str, ident: int) -> str:
        r = self.admin.post("/v1/keys", json={"kind": kind, "id": ident})
        r.raise_for_status()
        return r.json()["token"]

    def request(self, source: str, sink: str) -> tuple[float, int]:
        """Request (and so award) a job; the wall time just before the POST, and its id."""
        body = {"services": ["identity"], "volume_bytes": 10**12, "source": source, "sink": sink}
        t0 = time.time()
        r = self.user.post("/v1/requests", json=body)
        if r.status_code != 201 or r.json()["status"] != "served":
            raise RuntimeError(f"the request was not served: {r.status_code} {r.text[:300]}")
        return t0, r.json()["id"]

    def job_of(self, request_id: int) -> int:
        r = self.admin.get(f"/v1/providers/{self.provider}/jobs")
        r.raise_for_status()
        for job in r.json()["items"]:
            if job["spec"]["request_id"] == request_id:
                return job["id"]
        raise RuntimeError(f"no job for request {request_id}")

    def wait_done(self, request_id: int, timeout: float = 600) -> dict[str, float]:
        """When the job's transitions happened (the broker's clock, epoch seconds) once done."""
        job_id = self.job_of(request_id)
        deadline = time.monotonic() + timeout
        while True:
            r = self.admin.get(f"/v1/jobs/{job_id}")
            r.raise_for_status()
            detail = r.json()
            status = detail["job"]["status"]
            if status == "done":
                return {e["event"]: _epoch(e["at"]) for e in detail["events"]}
            if status == "failed" or time.monotonic() > deadline:
                raise RuntimeError(
                    f"job {job_id} {status}: {detail['events']}\n" + self._log("daemon")
                )
            if self.procs[1].poll() is not None:
                raise RuntimeError("the daemon exited: " + self._log("daemon"))
            time.sleep(0.1)

    def spare_ready(self, timeout: float = 20) -> None:
        """Wait until the daemon's next spare delivery process has done its imports (it
        starts when a job ends): a ``pktx deliver`` measured meanwhile would share the CPU
        with it, which no run of the daemon's does."""
        from engine.daemon.standby import READY

        log = self.folder / "state" / "standby.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if READY in log.read_text(errors="replace"):
                    return
            time.sleep(0.02)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for proc in reversed(self.procs):  # the daemon first, then the broker
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _epoch(at: str) -> float:
    """An event's time (ISO 8601; naive means UTC) in epoch seconds."""
    from datetime import UTC

    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def first_packet(scene: Scene) -> tuple[float, float]:
    """One award: seconds from before the POST to the first datagram here, and to the claim."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(60)
        t0, request_id = scene.request("small.pcap", f"udp://127.0.0.1:{rx.getsockname()[1]}")
        rx.recv(65536)
        t1 = time.time()
        events = scene.wait_done(request_id)
    scene.spare_ready()
    return t1 - t0, events["claim"] - t0


def through_daemon(scene: Scene, capture: str, n: int) -> tuple[float, float]:
    """A big job through the daemon: seconds from the award to ``complete``, and from
    ``claim`` to ``complete``."""
    sink = f"out/daemon-{n}.pcap"
    t0, request_id = scene.request(capture, sink)
    events = scene.wait_done(request_id)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(scene.files / sink)  # untimed: freeing its pages is no part of the next run
    scene.spare_ready()
    return events["complete"] - t0, events["complete"] - events["claim"]


def whole_deliver(scene: Scene, capture: str, workers: int) -> float:
    """A big job as ``pktx deliver``, a whole process: seconds, start-up included."""
    out = scene.files / "out" / "deliver.pcap"
    t0 = time.perf_counter()
    subprocess.run(
        _pktx(
            "deliver",
            scene.files / capture,
            "-o",
            out,
            "--service",
            "identity",
            "--workers",
            workers,
            "-q",
        ),
        cwd=ROOT,
        env=_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    out.unlink()
    return seconds


def measure(
    packets: int | list[int] = SIZES, repeat: int = 5, workdir: str | None = None, status=None
) -> dict:
    """Everything the tables show, as numbers (``packets``: the job sizes, one capture each,
    delivered both ways ``repeat`` times)."""
    from engine.capture.generate import generate_capture

    sizes = [packets] if isinstance(packets, int) else list(packets)
    status = status or (lambda text: contextlib.nullcontext())
    with tempfile.TemporaryDirectory(prefix="pktx-bench-daemon-", dir=workdir) as tmp:
        folder = Path(tmp)
        with status("starting a broker and a daemon"):
            scene = Scene(folder)
        try:
            (scene.files / "out").mkdir()
            generate_capture(
                scene.files / "small.pcap", packets=LATENCY_PACKETS, flows=10, seed=1, format="pcap"
            )
            with status("warming up (a job through the daemon)"):
                first_packet(scene)
            latency, claim = [], []
            for i in range(repeat):
                with status(f"award to first packet {i + 1}/{repeat}"):
                    a, c = first_packet(scene)
                latency.append(a)
                claim.append(c)
            jobs = []
            for n in sizes:
                capture = f"big-{n}.pcap"
                with status(f"generating {n:,} packets"):
                    generate_capture(
                        scene.files / capture,
                        packets=n,
                        flows=1000,
                        seed=42,
                        format="pcap",
                        ts_resolution="us",
                    )
                with status(f"warming up on {n:,} packets (pktx deliver)"):
                    whole_deliver(scene, capture, WORKERS)
                deliver, daemon, running = [], [], []
                logged = len(scene.log_text())
                for i in range(repeat):
                    with status(f"{n:,} packets: throughput {i + 1}/{repeat}"):
                        deliver.append(whole_deliver(scene, capture, WORKERS))
                        d, r = through_daemon(scene, capture, i)
                    daemon.append(d)
                    running.append(r)
                since = scene.log_text()[logged:]
                own = [float(ms) for ms in OWN_TIME.findall(since)]
                jobs.append(
                    {
                        "packets": n,
                        "bytes": os.path.getsize(scene.files / capture),
                        "deliver": deliver,
                        "daemon": daemon,
                        "running": running,
                        "own_ms": own,
                        # how many of its runs the daemon's spare delivery process took
                        "spares": since.count(SPARE),
                    }
                )
                os.unlink(scene.files / capture)  # the next size's disk space
        finally:
            scene.close()
    return {"repeat": repeat, "latency": latency, "claim": claim, "jobs": jobs}


def run(
    packets: int | list[int] | None = None,
    repeat: int = 5,
    stream_gb: float = 0.0,
    workdir: str | None = None,
    *,
    report: Report,
) -> int:
    sizes = packets or SIZES
    count = 1 if isinstance(sizes, int) else len(sizes)
    report.expect_steps(2 + repeat + count * (2 + repeat))
    fill(report, measure(sizes, repeat, workdir, status=report.step))
    return 0


def fill(report: Report, r: dict) -> None:
    """The two tables, notes and verdicts of `measure`'s numbers."""
    repeat = r["repeat"]
    median = statistics.median(r["latency"])
    claim = statistics.median(r["claim"])
    t = report.sheet(
        f"pktx bench daemon: award to first packet ({LATENCY_PACKETS:,}-packet "
        f"capture to udp://, loopback), {repeat} awards",
        [
            WHAT,
            Column("median_s", "median s", "s", "{:.3f}"),
            Column("min_s", "min s", "s", "{:.3f}"),
            Column("max_s", "max s", "s", "{:.3f}"),
        ],
    )
    t.add_row(
        "award (before the request's POST) -> first datagram received",
        median,
        min(r["latency"]),
        max(r["latency"]),
    )
    t.add_row(
        "  of which award -> claim (the broker's claim event)",
        claim,
        min(r["claim"]),
        max(r["claim"]),
    )

    jobs = r["jobs"]
    t = report.sheet(
        f"pktx bench daemon: the same job both ways, identity, {WORKERS} workers, "
        f"file -> file, best of {repeat} (runs alternate)",
        [
            label("job"),
            WHAT,
            SECONDS,
            PACKET_RATE,
            BYTE_RATE,
            Column("more_than_deliver_s", "daemon - deliver", "s", lambda v: f"{v * 1000:+.1f} ms"),
            Column("overhead", "overhead", "ratio", "{:.1%}"),
        ],
    )
    verdicts = []
    for j in jobs:
        deliver, daemon, running = min(j["deliver"]), min(j["daemon"]), min(j["running"])
        overhead = 1 - deliver / daemon
        job = f"{j['packets']:,} packets, {j['bytes'] / 1e6:,.0f} MB pcap"

        def row(job, name, secs, note, j=j, deliver=deliver):
            t.add_row(
                job,
                name,
                secs,
                j["packets"] / secs,
                j["bytes"] / secs,
                secs - deliver if secs != deliver else None,
                note,
            )

        t.add_section()
        row(job, "pktx deliver (whole process, start-up included)", deliver, "reference")
        row("", "pktx daemon: award -> complete", daemon, overhead)
        row("", "pktx daemon: claim -> complete", running, 1 - deliver / running)
        if j["own_ms"]:
            own = statistics.median(j["own_ms"])
            t.add_row(
                "",
                "the daemon's own time a job, median of its log (claim -> delivery "
                "started, its exit -> complete answered)",
                None,
                None,
                None,
                own / 1000,
                own / 1000 / deliver,
            )
        verdicts.append(
            (
                f"daemon overhead on a delivery < {TARGET_OVERHEAD:.0%} of pktx "
                f"deliver's throughput, {j['packets']:,} packets (award -> complete "
                f"against the whole process, best of {repeat}): {overhead:.1%}",
                overhead < TARGET_OVERHEAD,
            )
        )
    for j in jobs:
        report.note(
            f"runs (s), {j['packets']:,} packets: pktx deliver {_list(j['deliver'])}; "
            f"daemon {_list(j['daemon'])}; the daemon's own time (ms) "
            + ", ".join(f"{ms:.1f}" for ms in j["own_ms"])
            + f"; runs its spare delivery process took (start-up paid while the node was "
            f"idle): {j.get('spares', 0)} of {len(j['daemon'])}",
            packets=j["packets"],
            deliver_s=j["deliver"],
            daemon_s=j["daemon"],
            own_ms=j["own_ms"],
            spares=j.get("spares", 0),
        )
    report.note(f"award -> first packet (s): {_list(r['latency'])}", latency_s=r["latency"])
    report.check(
        f"award to first packet on loopback < {TARGET_FIRST_PACKET_S:g} s (median of {repeat})",
        median < TARGET_FIRST_PACKET_S,
    )
    for name, ok in verdicts:
        report.check(name, ok)


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)
