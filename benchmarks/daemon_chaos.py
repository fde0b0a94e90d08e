"""``pktx bench chaos``: issue 11's chaos run at length, a job after another delivered while the
daemon is SIGKILLed and restarted at random moments and the broker SIGKILLed and restarted
every few cycles; then every invariant checked against evidence the daemon did not write.

The world is `benchmarks.node_world`'s (the daemon tests' own): ``pktx broker serve`` on SQLite
and ``pktx daemon`` as real processes on loopback. The source is a generated capture with many
flows; each job delivers it file to file, shaped (``max_rate_bps``) to last about
``job_seconds``, so most kills land in a delivery, some in a claim, a report or a ``complete``.
The provider has a tariff of one minor unit a byte past the request's volume, so what is charged
is the bytes billed, to the unit.

Evidence, per job, read after the run:

- **the sink**: the output file read with dpkt, against the source read the same way: packets
  missing, packets there more often than in the source (duplicates), and packets out of order
  within their flow (IP 5-tuple), counted position by position against the source's order;
- **the broker's books** (its SQLite file, read directly): the job's usage reports (a
  sequence stored twice, or a report whose counters repeat the one before it, is a report
  counted twice) and its usage charges (kind not ``price``), against the delivered bytes past
  the volume; and the usage ``GET /v1/jobs/{id}/usage`` answers (``bytes_out``,
  ``packets_out``) against the bytes and packets in the sink;
- **the job's transitions** (``GET /v1/jobs/{id}``): claims after the first (a lease that
  lapsed while the daemon or the broker was down), hand-backs, and the status ``done``.

Time to recover: from the restarted daemon's ``Popen`` to the first sign of a delivery running
again (a new ``.NAME.*.part`` temporary, or an output, in the sink folder), for the kills that
landed while a job was being delivered; kills that came before the recovery are counted apart.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from random import Random

from benchmarks.report import WHAT, Quantity, Report, label

CYCLES = 100
SEED = 20261130
BROKER_EVERY = 7
PACKETS = 3000
FLOWS = 64
JOB_SECONDS = 1.0
KILL_AFTER_S = (0.2, 4.0)  # a kill comes this long after the daemon's (re)start, uniformly
VOLUME_BYTES = 1000  # the request's volume: the price covers it, the tariff the rest


def flow_of(packet: bytes) -> tuple:
    """The packet's flow: its IP 5-tuple (addresses and protocol for a packet without ports;
    one flow for everything that is not IP)."""
    import dpkt

    try:
        ip = dpkt.ethernet.Ethernet(packet).data
    except (dpkt.UnpackError, ValueError):
        return ("not ip",)
    if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
        return ("not ip",)
    l4 = ip.data
    ports = (l4.sport, l4.dport) if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP) else ()
    return (bytes(ip.src), bytes(ip.dst), ip.p, *ports)


def sink_faults(source: list[bytes], sink: list[bytes]) -> dict[str, int]:
    """What the sink does wrong against the source: packets ``missing``, ``duplicates`` (a
    packet there more often than in the source) and ``out_of_order`` (positions within a flow
    where the sink's packet is not the source's)."""
    have, want = Counter(sink), Counter(source)
    flows_in, flows_out = defaultdict(list), defaultdict(list)
    for p in source:
        flows_in[flow_of(p)].append(p)
    for p in sink:
        flows_out[flow_of(p)].append(p)
    out_of_order = 0
    for flow, packets in flows_out.items():
        expected = flows_in.get(flow, [])
        out_of_order += sum(1 for a, b in zip(packets, expected) if a != b)
    return {
        "missing": sum((want - have).values()),
        "duplicates": sum((have - want).values()),
        "out_of_order": out_of_order,
    }


class Chaos:
    """The broker, the market (with a tariff), the daemon and the run's counts."""

    def __init__(self, folder: Path, packets: int, job_seconds: float, seed: int) -> None:
        from benchmarks.node_world import BrokerProcess, Daemon, market
        from engine.capture.generate import generate_capture

        self.folder = folder
        source = folder / "source.pcap"
        generate_capture(source, packets=packets, flows=FLOWS, seed=seed, format="pcap")
        self.broker = BrokerProcess(folder / "broker").start()
        self.m = market(self.broker, folder / "files", source)
        self.out = self.m.files / "out"
        self.out.mkdir()
        self.rate_bps = max(8_000, int(source.stat().st_size * 8 / job_seconds))
        self._tariff()
        self.daemon = Daemon(self.m, folder / "daemon", lease=5)
        self.jobs: list[tuple[int, str]] = []  # (request id, sink), in the order requested
        self.done: set[int] = set()

    def _tariff(self) -> None:
        import httpx

        with httpx.Client(
            base_url=self.m.url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.m.provider_token}"},
        ) as provider:
            r = provider.post(
                f"/v1/providers/{self.m.provider_id}/tariffs",
                json={
                    "services": ["identity"],
                    "currency": "EUR",
                    "active_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                    "dimensions": {
                        "bytes": {"rate_unit": 1, "tiers": [{"up_to": None, "price": "0.01"}]}
                    },
                },
            )
            r.raise_for_status()

    def request(self) -> None:
        sink = f"out/job-{len(self.jobs)}.pcap"
        r = self.m.request(sink=sink, max_rate_bps=self.rate_bps, volume_bytes=VOLUME_BYTES)
        self.jobs.append((r["id"], sink))

    def current(self) -> tuple[int, str]:
        return self.jobs[-1]

    def current_done(self) -> bool:
        """Whether the latest job is done (asked only once its output exists: done implies
        it; a broker away answers no)."""
        import httpx

        request_id, sink = self.current()
        if request_id in self.done:
            return True
        if not (self.m.files / sink).exists():
            return False
        try:
            status = self.m.job_of(request_id)["status"]
        except (httpx.TransportError, RuntimeError):
            return False
        if status == "failed":
            raise RuntimeError(f"request {request_id}'s job failed:\n" + self.daemon.log()[-3000:])
        if status == "done":
            self.done.add(request_id)
        return status == "done"

    def marks(self) -> set[str]:
        return set(p.name for p in self.out.iterdir())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.daemon.signal(signal.SIGTERM)
                self.daemon.wait(60)
        with contextlib.suppress(Exception):
            self.daemon.kill()
        self.m.close()
        self.broker.stop()


def measure(
    cycles: int = CYCLES,
    seed: int = SEED,
    broker_every: int = BROKER_EVERY,
    packets: int = PACKETS,
    job_seconds: float = JOB_SECONDS,
    workdir: str | None = None,
    status=None,
) -> dict:
    """Run the chaos and gather the evidence: everything the table shows, as numbers."""
    status = status or (lambda text: contextlib.nullcontext())
    rng = Random(seed)
    with tempfile.TemporaryDirectory(prefix="pktx-bench-chaos-", dir=workdir) as tmp:
        with status("starting a broker, generating the source"):
            chaos = Chaos(Path(tmp), packets, job_seconds, seed)
        try:
            t0 = time.perf_counter()
            counts = _cycles(chaos, rng, cycles, broker_every, status)
            with status("the last job finishing undisturbed"):
                deadline = time.monotonic() + 300
                while not chaos.current_done():
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            "the last job was not done within 300 s:\n" + chaos.daemon.log()[-3000:]
                        )
                    time.sleep(0.2)
            wall = time.perf_counter() - t0
            chaos.daemon.catching(signal.SIGTERM)  # restarted a moment ago, perhaps
            chaos.daemon.signal(signal.SIGTERM)
            drained = chaos.daemon.wait(60)
            with status("reading the sinks and the broker's books"):
                jobs = [_evidence(chaos, request_id, sink) for request_id, sink in chaos.jobs]
            leftovers = sorted(chaos.marks() - {Path(s).name for _, s in chaos.jobs})
        finally:
            chaos.close()
    return {
        "cycles": cycles,
        "seed": seed,
        "broker_every": broker_every,
        "packets": packets,
        "rate_bps": chaos.rate_bps,
        "wall_s": wall,
        "drain_exit": drained,
        "leftovers": leftovers,
        "jobs": jobs,
        **counts,
    }


def _cycles(chaos: Chaos, rng: Random, cycles: int, broker_every: int, status) -> dict:
    """Kill and restart the daemon ``cycles`` times (and the broker every ``broker_every``);
    keep one job outstanding throughout."""
    recover: list[float] = []
    killed_before_recovery = killed_finishing = broker_restarts = 0
    chaos.request()
    chaos.daemon.start()
    started, before, measuring = time.monotonic(), set(), False  # a start, not a recovery
    for cycle in range(cycles):
        kill_at = started + rng.uniform(*KILL_AFTER_S)
        recovered = False
        with status(
            f"cycle {cycle + 1}/{cycles}: {len(chaos.jobs)} jobs, {broker_restarts} broker restarts"
        ):
            next_ask = 0.0
            while (now := time.monotonic()) < kill_at:
                if measuring and not recovered and chaos.marks() - before:
                    recover.append(now - started)
                    recovered = True
                if now >= next_ask:
                    next_ask = now + 0.25
                    if chaos.current_done():
                        chaos.request()
                time.sleep(0.01)
            if chaos.daemon.proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited by itself (status "
                    f"{chaos.daemon.proc.returncode}):\n" + chaos.daemon.log()[-3000:]
                )
            chaos.daemon.kill()
            if measuring and not recovered:
                killed_before_recovery += 1
            # The next recovery is measured when this kill cut a delivery: the current job's
            # output not there yet (with it there, the job was finishing: nothing to run again).
            measuring = not (chaos.m.files / chaos.current()[1]).exists()
            killed_finishing += not measuring
            before = chaos.marks()
            if broker_every and (cycle + 1) % broker_every == 0:
                chaos.broker.stop(signal.SIGKILL)
                chaos.broker.start()
                broker_restarts += 1
            chaos.daemon.start()
            started = time.monotonic()
    return {
        "broker_restarts": broker_restarts,
        "recover_s": recover,
        "killed_before_recovery": killed_before_recovery,
        "killed_finishing": killed_finishing,
    }


def _evidence(chaos: Chaos, request_id: int, sink: str) -> dict:
    """One job's evidence: its sink read with dpkt, the broker's usage answer, its reports and
    charges read from the broker's SQLite file, its transitions."""
    from benchmarks.node_world import read_packets

    m = chaos.m
    job = m.job_of(request_id)
    path = m.files / sink
    delivered = read_packets(path) if path.exists() else []
    usage = m.usage(job["id"])
    db = sqlite3.connect(f"file:{chaos.broker.folder / 'broker.sqlite3'}?mode=ro", uri=True)
    try:
        reports = db.execute(
            "SELECT sequence, packets_out, bytes_out FROM usage_reports WHERE job_id = ? "
            "ORDER BY sequence, id",
            (job["id"],),
        ).fetchall()
        charged = db.execute(
            "SELECT COALESCE(SUM(amount_minor), 0) FROM charges WHERE job_id = ? AND "
            "kind != 'price'",
            (job["id"],),
        ).fetchone()[0]
    finally:
        db.close()
    sequences = [r[0] for r in reports]
    repeated = sum(1 for a, b in pairwise(reports) if a[1:] == b[1:])
    events = [e["event"] for e in job["events"]]
    delivered_bytes = sum(map(len, delivered))
    return {
        "job_id": job["id"],
        "status": job["status"],
        "source_packets": len(m.packets),
        "delivered_packets": len(delivered),
        "delivered_bytes": delivered_bytes,
        **sink_faults(m.packets, delivered),
        "billed_packets": usage["packets_out"],
        "billed_bytes": usage["bytes_out"],
        "charged_minor": int(charged),
        "owed_minor": max(delivered_bytes - VOLUME_BYTES, 0),
        "reports": len(reports),
        "counted_twice": len(sequences) - len(set(sequences)) + repeated,
        "claims": events.count("claim"),
        "handbacks": events.count("handback"),
        "lapses": events.count("lapse"),
    }


def violations(r: dict) -> list[str]:
    """Every invariant the run broke, one line each (none: the run is clean)."""
    out = []
    for j in r["jobs"]:
        name = f"job {j['job_id']}"
        if j["status"] != "done":
            out.append(f"{name} is {j['status']}, not done")
        for fault in ("missing", "duplicates", "out_of_order"):
            if j[fault]:
                out.append(f"{name}: {j[fault]} packet(s) {fault.replace('_', ' ')} in the sink")
        if (j["billed_packets"], j["billed_bytes"]) != (
            j["delivered_packets"],
            j["delivered_bytes"],
        ):
            out.append(
                f"{name}: billed {j['billed_packets']} packets / {j['billed_bytes']} "
                f"bytes, delivered {j['delivered_packets']} / {j['delivered_bytes']}"
            )
        if j["charged_minor"] != j["owed_minor"]:
            out.append(
                f"{name}: charged {j['charged_minor']} minor units for "
                f"{j['owed_minor']} bytes past the volume"
            )
        if j["counted_twice"]:
            out.append(f"{name}: {j['counted_twice']} report(s) counted twice")
    if r["leftovers"]:
        out.append(f"left in the sink folder: {', '.join(r['leftovers'][:5])}")
    if r["drain_exit"] != 0:
        out.append(f"the daemon's drain at the end exited {r['drain_exit']}")
    return out


def run(
    packets: int = PACKETS,
    repeat: int = 1,
    stream_gb: float = 0.0,
    *,
    cycles: int = CYCLES,
    seed: int = SEED,
    broker_every: int = BROKER_EVERY,
    job_seconds: float = JOB_SECONDS,
    workdir: str | None = None,
    report: Report,
) -> int:
    """``pktx bench chaos`` (``repeat`` and ``stream_gb``, every table's, mean nothing here):
    0 when every invariant held, 1 otherwise."""
    report.expect_steps(3 + cycles)
    r = measure(cycles, seed, broker_every, packets, job_seconds, workdir, status=report.step)
    return fill(report, r)


def fill(report: Report, r: dict) -> int:
    """The table, the invariants met or broken; 1 when any was broken."""
    jobs = r["jobs"]

    def total(key):
        return sum(j[key] for j in jobs)

    rec = sorted(r["recover_s"])
    t = report.sheet(
        f"pktx bench chaos: {r['cycles']} SIGKILLs of pktx daemon at random "
        f"moments, the broker SIGKILLed every {r['broker_every']}, seed {r['seed']}; "
        f"jobs of {r['packets']:,} packets ({FLOWS} flows) file -> file at "
        f"{r['rate_bps'] / 1e6:.2f} Mbit/s",
        [WHAT, label("measured")],
    )

    def q(unit, *values, show="{:,}"):
        text = " / ".join(show.format(v) for v in values)
        return Quantity(values[0] if len(values) == 1 else values, unit, text)

    rec_s = (_quantile(rec, 0.5), _quantile(rec, 0.95), _quantile(rec, 1)) if rec else ()
    rows = [
        ("daemon SIGKILLed and restarted (cycles)", q("kills", r["cycles"], show="{}")),
        ("broker SIGKILLed and restarted", q("kills", r["broker_restarts"], show="{}")),
        (
            "jobs requested / done",
            q("jobs", len(jobs), sum(j["status"] == "done" for j in jobs), show="{}"),
        ),
        (
            "packets delivered (sinks, dpkt) / in the sources",
            q("packets", total("delivered_packets"), total("source_packets")),
        ),
        (
            "packets missing / duplicated / out of order in their flow",
            q(
                "packets",
                total("missing"),
                total("duplicates"),
                total("out_of_order"),
                show="{}",
            ),
        ),
        (
            "bytes billed (GET /usage) / delivered (sinks)",
            q("bytes", total("billed_bytes"), total("delivered_bytes")),
        ),
        (
            "packets billed / delivered",
            q("packets", total("billed_packets"), total("delivered_packets")),
        ),
        (
            "charged (broker's DB, minor units) / owed (delivered bytes past the volume)",
            q("minor units", total("charged_minor"), total("owed_minor")),
        ),
        (
            "usage reports stored / counted twice",
            q("reports", total("reports"), total("counted_twice"), show="{}"),
        ),
        (
            "jobs claimed again (lease lapsed) / handed back",
            Quantity(
                (sum(j["claims"] > 1 for j in jobs), total("lapses"), total("handbacks")),
                "jobs, lapses, jobs",
                f"{sum(j['claims'] > 1 for j in jobs)} ({total('lapses')} lapses) / "
                f"{total('handbacks')}",
            ),
        ),
        (
            "kills during a job's finish / before the daemon had recovered",
            q("kills", r["killed_finishing"], r["killed_before_recovery"], show="{}"),
        ),
        (
            "time to recover after a kill, median / p95 / max (s)",
            Quantity(
                rec_s,
                "s",
                " / ".join(f"{x:.2f}" for x in rec_s) + f" ({len(rec)} kills)"
                if rec
                else "none observed",
            ),
        ),
        ("wall time (s)", q("s", r["wall_s"], show="{:.1f}")),
    ]
    for row in rows:
        t.add_row(*row)
    broken = violations(r)
    for line in broken[:20]:
        report.note(f"  VIOLATION {line}", violation=line)
    for target, met in (
        (
            "every packet in the sink exactly once and in order per flow",
            not any(j["missing"] or j["duplicates"] or j["out_of_order"] for j in jobs),
        ),
        (
            "usage billed equals usage delivered (packets, bytes, charges)",
            all(
                (j["billed_packets"], j["billed_bytes"], j["charged_minor"])
                == (j["delivered_packets"], j["delivered_bytes"], j["owed_minor"])
                for j in jobs
            ),
        ),
        ("no report counted twice", not total("counted_twice")),
        (
            "every job done, nothing left behind, the daemon drained with 0",
            all(j["status"] == "done" for j in jobs)
            and not r["leftovers"]
            and r["drain_exit"] == 0,
        ),
    ):
        report.check(target, met)
    return 1 if broken else 0


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank)."""
    if q >= 1:
        return values[-1]
    if q == 0.5:
        return statistics.median(values)
    return values[min(len(values) - 1, int(q * len(values)))]
