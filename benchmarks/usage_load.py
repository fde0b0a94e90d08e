"""The usage rows of ``pktx bench broker``: delivery daemons reporting cumulative usage over
HTTP (``POST /v1/jobs/{id}/usage``), 32 concurrent reporters that resend every n-th report and
retry on any error; afterwards the reports are counted in the store and each job's charges are
checked against rating its final usage once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from benchmarks.http_load import REPLAY_EVERY, _Connection, cpu_seconds, running_server

REPORTERS = 32
JOBS_PER_REPORTER = 50
MB = 10**6
VOLUME = 10**9
TARGET_USAGE_RPS = 1000.0
RETRIES = 20
# A PostgreSQL server to measure the intake on as well (a database is made for the run and
# dropped after it), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres
ENV_PG = "PKTX_BENCH_PG_URL"
PG_WORKERS = 2


@dataclass
class UsageResult:
    requests: int
    seconds: float
    sent: int
    replays: int
    errors: int
    stored: int
    charged_right: bool
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    database: str = "SQLite"
    workers: int = 1

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def exact(self) -> bool:
        return self.stored == self.sent and self.charged_right


def usage_jobs(scene, reporters: int = REPORTERS, per: int = JOBS_PER_REPORTER) -> dict:
    """``per`` running delivery jobs (volume awards of 1 GB) for each of ``reporters``
    providers, each provider with a tariff for the chain: provider -> (token, job ids)."""
    from sqlalchemy import func, select

    from benchmarks.broker_table import SERVICES, _advance_sequences, _bulk
    from broker.actors import Actor
    from broker.models import Award, AwardPayer, DeliveryJob, ServiceRequest
    from broker.tariff_book import publish_tariff

    now = datetime.now(UTC)
    providers = scene.providers[:reporters]
    with scene.store.write() as s:
        for p in providers:
            publish_tariff(
                s,
                Actor("provider", p, provider_ids=frozenset({p})),
                p,
                {
                    "services": SERVICES.split(","),
                    "currency": "EUR",
                    "active_from": (now - timedelta(hours=1)).isoformat(),
                    "dimensions": {
                        "bytes": {
                            "rate_unit": MB,
                            "tiers": [
                                {"up_to": 10 * VOLUME, "price": "0.001"},
                                {"up_to": None, "price": "0.0005"},
                            ],
                        }
                    },
                },
                now=now,
            )
        request = ServiceRequest(
            user_id=scene.user_id,
            home_provider_id=scene.home_id,
            services=SERVICES,
            volume_bytes=VOLUME,
            currency="EUR",
            status="awarded",
            created_at=now,
        )
        s.add(request)
        s.flush()
        first = (s.scalar(select(func.max(Award.id))) or 0) + 1
        awards, payers, jobs, owned = [], [], [], {}
        for n, p in enumerate(providers):
            for k in range(per):
                award = first + n * per + k
                awards.append(
                    {
                        "id": award,
                        "request_id": request.id,
                        "provider_id": p,
                        "home_provider_id": scene.home_id,
                        "source": "negotiation",
                        "price_minor": 100,
                        "currency": "EUR",
                        "services": SERVICES,
                        "volume_bytes": VOLUME,
                        "status": "active",
                        "created_at": now,
                        "share": award - first,
                        "shares": len(providers) * per,
                    }
                )
                payers.append({"award_id": award, "user_id": scene.user_id, "share_minor": 100})
                jobs.append(
                    {
                        "id": award,
                        "award_id": award,
                        "provider_id": p,
                        "status": "running",
                        "spec": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                owned.setdefault(p, []).append(award)
        _bulk(s, Award, awards)
        _bulk(s, AwardPayer, payers)
        _bulk(s, DeliveryJob, jobs)
        _advance_sequences(s, "awards", "delivery_jobs")
    return {p: (scene.tokens[p], owned[p]) for p in providers}


async def _report(
    host: str, port: int, token: str, jobs: list[int], stop_at: float, counts: dict, finals: dict
) -> None:
    """One reporter: round-robin over its jobs, each report a new sequence with cumulative
    bytes 1 MB to 3 MB past the last; every n-th sent twice (a resend: 200, charged nothing
    again); any error or broken connection retried with the same body until it is taken."""
    import json

    conn = _Connection(host, port)
    headers = {"Authorization": f"Bearer {token}"}
    sequence = dict.fromkeys(jobs, 0)
    total = dict.fromkeys(jobs, VOLUME - 50 * MB)
    n = 0
    try:
        while time.perf_counter() < stop_at:
            for job in jobs:
                if time.perf_counter() >= stop_at:
                    break
                sequence[job] += 1
                total[job] += MB * (1 + n % 3)
                body = json.dumps(
                    {
                        "sequence": sequence[job],
                        "bytes_out": total[job],
                        "packets_in": total[job] // 1000,
                    }
                ).encode()
                times = 2 if n % REPLAY_EVERY == REPLAY_EVERY - 1 else 1
                n += 1
                for attempt in range(times):
                    for _try in range(RETRIES):
                        counts["requests"] += 1
                        try:
                            status, answer = await conn.post(f"/v1/jobs/{job}/usage", headers, body)
                        except ConnectionError:
                            counts["errors"] += 1
                            continue
                        if status in (200, 201) and json.loads(answer)["sequence"] == sequence[job]:
                            break
                        counts["errors"] += 1
                        counts.setdefault("first_error", answer.decode()[:300])
                    else:
                        raise RuntimeError(
                            f"job {job}: report {sequence[job]} not taken in "
                            f"after {RETRIES} tries: {counts['first_error']}"
                        )
                    if attempt:
                        counts["replays"] += 1
                counts["sent"] += 1
                finals[job] = total[job]
    finally:
        conn.close()


def usage_client_process(base: str, owned: list, seconds: float, ready, go, results) -> None:
    """A process of ``len(owned)`` reporters (one connection each, on one event loop)."""
    from urllib.parse import urlsplit

    url = urlsplit(base)
    ready.set()
    go.wait()
    stop_at = time.perf_counter() + seconds
    counts = dict.fromkeys(("sent", "replays", "errors", "requests"), 0)
    finals: dict = {}

    async def reporters() -> None:
        await asyncio.gather(
            *(
                _report(url.hostname, url.port, token, jobs, stop_at, counts, finals)
                for token, jobs in owned
            )
        )

    cpu0 = time.process_time()
    try:
        asyncio.run(reporters())
    finally:
        counts["cpu_s"] = time.process_time() - cpu0
        results.put((counts, finals))


def http_usage(
    scene,
    url: str,
    *,
    reporters: int = REPORTERS,
    seconds: float,
    processes: int = 2,
    workers: int = 1,
) -> UsageResult:
    """``reporters`` concurrent reporters for ``seconds`` against ``pktx broker serve``."""
    import multiprocessing

    from sqlalchemy import func, select

    from broker.models import Charge, UsageReport
    from broker.rating import rate
    from broker.tariff_book import active_tariff

    owned = list(usage_jobs(scene, reporters).values())
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    with running_server(url, workers=workers) as (base, pid):
        procs, readies = [], []
        for i in range(processes):
            ready = ctx.Event()
            procs.append(
                ctx.Process(
                    target=usage_client_process,
                    args=(base, owned[i::processes], seconds, ready, go, results),
                )
            )
            readies.append(ready)
        for p in procs:
            p.start()
        for ready in readies:
            ready.wait(60)
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        go.set()
        counts: dict = {}
        finals: dict = {}
        for _ in procs:
            c, f = results.get(timeout=seconds + 120)
            finals.update(f)
            for k, v in c.items():
                if k != "first_error":
                    counts[k] = counts.get(k, 0) + v
                elif "first_error" not in counts:
                    counts[k] = v
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(pid)
        for p in procs:
            p.join()
    jobs = [j for _, js in owned for j in js]
    with scene.store.read() as s:
        stored = s.scalar(
            select(func.count()).select_from(UsageReport).where(UsageReport.job_id.in_(jobs))
        )
        charged = dict(
            s.execute(
                select(Charge.job_id, func.sum(Charge.amount_minor))
                .where(Charge.job_id.in_(jobs), Charge.kind != "price")
                .group_by(Charge.job_id)
            ).all()
        )
        from broker.models import Award

        right = True
        for job, final in finals.items():
            _, tariff = active_tariff(s, s.get(Award, job), datetime.now(UTC))
            once = rate(tariff, {"bytes": max(final - VOLUME, 0)}).minor - rate(tariff, {}).minor
            right = right and int(charged.get(job, 0)) == once
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return UsageResult(
        counts.get("requests", 0),
        elapsed,
        counts.get("sent", 0),
        counts.get("replays", 0),
        counts.get("errors", 0),
        stored,
        right,
        server_cpu,
        counts.get("cpu_s"),
        workers=workers,
    )


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``, dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    base = make_url(server_url)
    name = f"pktx_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_usage(
    seconds: float, *, workers: int = PG_WORKERS, server_url: str | None = None
) -> UsageResult | None:
    """The usage rows on PostgreSQL with ``workers`` server processes (``$PKTX_BENCH_PG_URL``
    names the server; None when it does not)."""
    from benchmarks.broker_table import build_market

    server_url = server_url or os.environ.get(ENV_PG)
    if not server_url:
        return None
    with scratch_database(server_url) as url:
        scene = build_market(url, REPORTERS, tokens=True)
        try:
            result = http_usage(scene, url, seconds=seconds, workers=workers)
        finally:
            scene.store.dispose()
    result.database, result.workers = "PostgreSQL", workers
    return result
