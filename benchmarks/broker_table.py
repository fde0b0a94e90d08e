"""``pktx bench broker``: the broker's speed targets, measured on a market built for the purpose.

Three numbers, each against the target the issue sets: closing a sealed-bid auction of 10,000
bids (scoring with every bidder's reputation, second-price payments, every bid's outcome written,
the award made, committed); bid submission over HTTP to a real ``uvicorn`` server on a SQLite
file from concurrent clients, each bid one idempotent POST, with the bids counted in the store
afterwards; and the auction view of 1,000 bidders with each one's reputation (score and count).

The market: a home network with one user, and a second network of providers that offer every
service, most of them rated before (1 to 5 earlier awards each, rated over the past year), so that
the reputations are computed from real rows. Directory rows are bulk-inserted (building 10,000
providers one API call at a time would measure the directory, not the auction); what is measured
runs through the broker's own functions and HTTP API.

What a credit check adds to a request (`benchmarks.credit_load.check_cost`): a population of
users' payment histories of its own, half of them with a credit profile, requests timed
alternately by users with and without one, in process and over HTTP, on SQLite (and on
PostgreSQL when ``$PKTX_BENCH_PG_URL`` names a server).

The HTTP clients (keep-alive connections on an event loop in each of two processes, a lean
load generator in the manner of wrk) share the machine with the server; on a small machine they
still take some of its CPU. So the table also shows the server's CPU time per POST (from /proc,
where there is one) and the rate one core would sustain at that cost, and the clients' own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from benchmarks.bulk_rows import advance_sequences as _advance_sequences
from benchmarks.bulk_rows import bulk as _bulk
from benchmarks.credit_load import CHECK_USERS, CHECKS, TARGET_CHECK_MS
from benchmarks.http_load import client_process, cpu_seconds, running_server
from benchmarks.report import WHAT, Quantity, Report, label
from benchmarks.statement_load import TARGET_CLOSE_S as TARGET_PERIOD_CLOSE_S
from benchmarks.statement_load import CloseTimes
from benchmarks.statement_load import time_close as time_period_close
from benchmarks.usage_load import (
    ENV_PG,
    PG_WORKERS,
    REPORTERS,
    TARGET_USAGE_RPS,
    UsageResult,
    http_usage,
    postgres_usage,
)

CLOSE_BIDS = 10_000
CLOSE_USERS, CLOSE_LINES = 10_000, 20  # a billing period: users x statement lines each
VIEW_BIDDERS = 1_000
HTTP_CLIENTS = 16
HTTP_SECONDS = 10.0

TARGET_CLOSE_S = 0.200
TARGET_HTTP_RPS = 300.0
TARGET_VIEW_S = 0.050

SERVICES = "anonymize,checksum"  # the home provider lacks anonymize: the request is brokered


@dataclass
class Scene:
    """Ids (and, for HTTP, API tokens) of the market built by `build_market`."""

    store: object
    admin_id: int
    home_id: int
    user_id: int
    device_id: int
    providers: list[int]
    tokens: dict[int, str] = field(default_factory=dict)


def build_market(
    url: str, providers: int, *, tokens: bool = False, seed: int = 7, now: datetime | None = None
) -> Scene:
    """A store at ``url`` with ``providers`` bidders (and their API keys when ``tokens``)."""
    from sqlalchemy import select

    from broker.actors import Actor
    from broker.directory import (
        add_device,
        create_admin,
        create_network,
        create_provider,
        create_user,
    )
    from broker.models import ApiKey, Award, PricePolicy, Provider, ProviderService, Rating
    from broker.requests import submit_request
    from broker.store import Store

    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    store = Store(url)
    with store.write() as s:
        admin = Actor("admin", create_admin(s, "bench-admin").id)
        home_net = create_network(s, admin, "home-net").id
        home = create_provider(
            s,
            admin,
            network_id=home_net,
            name="home",
            services="identity,checksum",
            capacity_bps=10**12,
            currency="EUR",
            per_gb_minor=100,
            per_mbps_hour_minor=10,
        ).id
        user = create_user(s, admin, name="alice", home_provider_id=home).id
        device = add_device(s, admin, user_id=user, name="alice-phone").id
        far = create_network(s, admin, "far-net").id
        first = (s.scalar(select(Provider.id).order_by(Provider.id.desc()).limit(1)) or 0) + 1
        ids = list(range(first, first + providers))
        created = now - timedelta(days=400)
        _bulk(
            s,
            Provider,
            [
                {
                    "id": i,
                    "network_id": far,
                    "name": f"bidder-{i}",
                    "capacity_bps": 10**12,
                    "created_at": created,
                }
                for i in ids
            ],
        )
        _bulk(
            s,
            ProviderService,
            [
                {"provider_id": i, "service": name}
                for i in ids
                for name in ("identity", "checksum", "anonymize")
            ],
        )
        _bulk(
            s,
            PricePolicy,
            [
                {
                    "provider_id": i,
                    "currency": "EUR",
                    "per_gb_minor": 100,
                    "per_mbps_hour_minor": 10,
                    "reservation_ppm": 800_000,
                    "concession_beta_ppm": 1_000_000,
                    "mode": "policy",
                }
                for i in ids
            ],
        )
        _advance_sequences(s, "providers")
    device_actor = Actor("device", device, user_id=user, device_id=device)
    with store.write() as s:
        past = submit_request(
            s, device_actor, services=SERVICES, volume_bytes=10**9, now=now - timedelta(days=366)
        ).id
        awards, ratings = [], []
        for i in ids:
            if rng.random() < 0.1:  # one in ten is a newcomer
                continue
            for _ in range(rng.randint(1, 5)):
                at = now - timedelta(seconds=rng.randint(3600, 365 * 86400))
                awards.append(
                    {
                        "id": len(awards) + 1,
                        "request_id": past,
                        "provider_id": i,
                        "home_provider_id": home,
                        "source": "auction",
                        "price_minor": 100,
                        "currency": "EUR",
                        "services": SERVICES,
                        "volume_bytes": 10**9,
                        "status": "delivered",
                        "created_at": at,
                    }
                )
                ratings.append(
                    {
                        "award_id": len(awards),
                        "direction": "service",
                        "user_id": user,
                        "provider_id": i,
                        "score": rng.choice((100, 100, 90, 80, 60, 20, 0)),
                        "comment": "",
                        "rated_at": at,
                        "created_at": at,
                    }
                )
        first_award = (s.scalar(select(Award.id).order_by(Award.id.desc()).limit(1)) or 0) + 1
        for award in awards:
            award["id"] += first_award - 1
            # History as the shares of one past request: a request has one award per share.
            award["share"], award["shares"] = award["id"] - first_award, len(awards)
        for rating in ratings:
            rating["award_id"] += first_award - 1
        _bulk(s, Award, awards)
        _bulk(s, Rating, ratings)
        _advance_sequences(s, "awards")
    scene = Scene(store, admin.id, home, user, device, ids)
    if tokens:
        rows = []
        for i in ids:
            prefix = secrets.token_hex(6)
            token = f"pktx_{prefix}_{secrets.token_urlsafe(32)}"
            scene.tokens[i] = token
            rows.append(
                {
                    "prefix": prefix,
                    "secret_sha256": hashlib.sha256(token.encode()).hexdigest(),
                    "label": "bench",
                    "provider_id": i,
                    "created_at": now,
                }
            )
        with store.write() as s:
            _bulk(s, ApiKey, rows)
    return scene


def new_auction(scene: Scene, *, opens_at: datetime, closes_at: datetime, quantity: int = 1) -> int:
    """A brokered one-hour block of anonymize,checksum, auctioned by alice; its id."""
    from broker.actors import Actor
    from broker.auctions import open_auction
    from broker.requests import submit_request

    alice = Actor("device", scene.device_id, user_id=scene.user_id, device_id=scene.device_id)
    with scene.store.write() as s:
        starts = closes_at + timedelta(days=1)
        r = submit_request(
            s,
            alice,
            services=SERVICES,
            starts_at=starts,
            ends_at=starts + timedelta(hours=1),
            max_rate_bps=10_000_000,
            now=opens_at,
        )
        return open_auction(
            s,
            alice,
            r.id,
            closes_at=closes_at,
            reserve_price_minor=100_000,
            quantity=quantity,
            now=opens_at,
        ).id


def fill_bids(
    scene: Scene, auction_id: int, providers: list[int], at: datetime, seed: int = 11
) -> None:
    """One sealed bid per provider, inserted in bulk (the close is what is measured)."""
    from broker.models import Bid

    rng = random.Random(seed)
    with scene.store.write() as s:
        _bulk(
            s,
            Bid,
            [
                {
                    "auction_id": auction_id,
                    "provider_id": p,
                    "price_minor": rng.randint(10_000, 100_000),
                    "revision": 1,
                    "created_at": at,
                    "updated_at": at,
                }
                for p in providers
            ],
        )


# -- what is measured --------------------------------------------------------------------------
def auction_to_close(scene: Scene, bids: int, n: int = 0) -> tuple[int, datetime]:
    """A fresh auction (the ``n``-th) with ``bids`` sealed bids, due to close; id and time."""
    opens = datetime.now(UTC) + timedelta(days=n)
    closes = opens + timedelta(hours=1)
    auction = new_auction(scene, opens_at=opens, closes_at=closes)
    fill_bids(scene, auction, scene.providers[:bids], opens + timedelta(minutes=1), seed=n)
    return auction, closes


def close(scene: Scene, auction: int, closes: datetime) -> str:
    """What is timed: `close_auction` in its own transaction, committed; the status."""
    from broker.actors import Actor
    from broker.auctions import close_auction

    alice = Actor("user", scene.user_id, user_id=scene.user_id)
    with scene.store.write() as s:
        return close_auction(s, alice, auction, now=closes).status


def time_close(scene: Scene, bids: int, repeat: int) -> tuple[float, str]:
    """Best time (s) to close an auction of ``bids`` bids, one fresh auction per run."""
    best, status = float("inf"), ""
    for n in range(repeat):
        auction, closes = auction_to_close(scene, bids, n)
        t0 = time.perf_counter()
        status = close(scene, auction, closes)
        best = min(best, time.perf_counter() - t0)
    return best, status


def closed_auction(scene: Scene, bidders: int) -> tuple[int, datetime]:
    """An auction ``bidders`` providers bid in, closed; its id and closing time."""
    from broker.actors import Actor
    from broker.auctions import close_auction

    opens = datetime.now(UTC) + timedelta(days=1000 + bidders)
    closes = opens + timedelta(hours=1)
    auction = new_auction(scene, opens_at=opens, closes_at=closes)
    fill_bids(scene, auction, scene.providers[:bidders], opens + timedelta(minutes=1))
    with scene.store.write() as s:
        close_auction(s, Actor("user", scene.user_id, user_id=scene.user_id), auction, now=closes)
    return auction, closes


def view_lookups(scene: Scene, auction: int, closes: datetime) -> int:
    """What an auction view looks up: every bidder's reputation (score and count)."""
    from sqlalchemy import select

    from broker.models import Bid
    from broker.reputation import provider_reputations

    with scene.store.read() as s:
        return len(
            provider_reputations(
                s, select(Bid.provider_id).where(Bid.auction_id == auction), now=closes
            )
        )


def whole_view(scene: Scene, auction: int, closes: datetime) -> int:
    """The auction view as the buyer gets it: every bid with reputation, rank, score."""
    from broker.actors import Actor
    from broker.views import auction_view

    alice = Actor("user", scene.user_id, user_id=scene.user_id)
    with scene.store.read() as s:
        return len(auction_view(s, alice, auction, now=closes)["bids"])


def time_view(scene: Scene, bidders: int, repeat: int) -> tuple[float, float]:
    """Best times (s) of an auction view's reputation lookups for ``bidders`` providers, and
    of the whole view (every bid of a closed auction with its bidder's reputation, rank,
    score and payment)."""
    auction, closes = closed_auction(scene, bidders)
    lookups = view = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        assert view_lookups(scene, auction, closes) == bidders
        lookups = min(lookups, time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert whole_view(scene, auction, closes) == bidders
        view = min(view, time.perf_counter() - t0)
    return lookups, view


# -- bids over HTTP ----------------------------------------------------------------------------


@dataclass
class HttpResult:
    requests: int
    seconds: float
    bids_sent: int
    replays: int
    errors: int
    stored: int
    revisions_above_one: int
    distinct_providers: int
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def server_cpu_per_request(self) -> float | None:
        return None if self.server_cpu_s is None else self.server_cpu_s / self.requests

    @property
    def exact(self) -> bool:
        return (
            self.errors == 0
            and self.stored == self.bids_sent == self.distinct_providers
            and self.revisions_above_one == 0
        )


def http_bids(
    scene: Scene, url: str, *, clients: int, seconds: float, processes: int = 2, workers: int = 1
) -> HttpResult:
    """``clients`` concurrent clients (connections spread over ``processes`` processes, so
    that the clients' own CPU is not one interpreter's) POST one bid per provider for ``seconds``
    against ``pktx broker serve``; then the bids are counted in the store."""
    import multiprocessing

    from sqlalchemy import func, select

    from broker.models import Bid

    now = datetime.now(UTC)
    auction = new_auction(
        scene, opens_at=now - timedelta(seconds=1), closes_at=now + timedelta(hours=1)
    )
    rng = random.Random(5)
    jobs = [(p, scene.tokens[p], rng.randint(10_000, 100_000)) for p in scene.providers]
    shares = [jobs[i::clients] for i in range(clients)]
    processes = max(1, min(processes, clients))
    ctx = multiprocessing.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    with running_server(url, workers=workers) as (base, pid):
        procs, readies = [], []
        for i in range(processes):
            ready = ctx.Event()
            procs.append(
                ctx.Process(
                    target=client_process,
                    args=(base, auction, shares[i::processes], seconds, ready, go, results),
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
        for _ in procs:
            for k, v in results.get(timeout=seconds + 120).items():
                counts[k] = counts.get(k, 0) + v
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(pid)
        for p in procs:
            p.join()
    with scene.store.read() as s:
        stored = s.scalar(select(func.count()).select_from(Bid).where(Bid.auction_id == auction))
        distinct = s.scalar(
            select(func.count(func.distinct(Bid.provider_id))).where(Bid.auction_id == auction)
        )
        revised = s.scalar(
            select(func.count()).select_from(Bid).where(Bid.auction_id == auction, Bid.revision > 1)
        )
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return HttpResult(
        counts.get("requests", 0),
        elapsed,
        counts.get("sent", 0),
        counts.get("replays", 0),
        counts.get("errors", 0),
        stored,
        revised,
        distinct,
        server_cpu,
        counts.get("cpu_s"),
    )


@dataclass
class Measured:
    close_s: float
    close_status: str
    lookups_s: float
    view_s: float
    http: HttpResult
    usage: UsageResult | None = None
    usage_pg: UsageResult | None = None
    period_close: CloseTimes | None = None
    credit: list = field(default_factory=list)  # `credit_load.CheckCost`, per database


def measure(
    repeat: int = 5,
    *,
    http_seconds: float = HTTP_SECONDS,
    http_clients: int = HTTP_CLIENTS,
    workers: int = 1,
    status=None,
    workdir: str | None = None,
) -> Measured:
    """Build the market in a temporary SQLite file and take every number of the table
    (``status(what)``: a context around each step)."""
    status = status or (lambda _msg: contextlib.nullcontext())
    with tempfile.TemporaryDirectory(prefix="pktx-bench-broker-", dir=workdir) as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'broker.sqlite3')}"
        with status(f"building a market of {CLOSE_BIDS:,} providers"):
            scene = build_market(url, CLOSE_BIDS, tokens=True)
        try:
            with status(f"closing auctions of {CLOSE_BIDS:,} bids"):
                close_s, close_status = time_close(scene, CLOSE_BIDS, repeat)
            with status(f"auction views of {VIEW_BIDDERS:,} bids"):
                lookups_s, view_s = time_view(scene, VIEW_BIDDERS, repeat)
            with status(f"bids over HTTP: {http_clients} clients for {http_seconds:g} s"):
                http = http_bids(
                    scene, url, clients=http_clients, seconds=http_seconds, workers=workers
                )
            with status(f"usage reports over HTTP: {REPORTERS} reporters for {http_seconds:g} s"):
                usage = http_usage(scene, url, seconds=http_seconds, workers=workers)
        finally:
            scene.store.dispose()
    usage_pg = None
    if os.environ.get(ENV_PG):
        with status(f"usage reports over HTTP on PostgreSQL, {PG_WORKERS} server workers"):
            usage_pg = postgres_usage(http_seconds)
    with status(
        f"closing a billing period of {CLOSE_USERS:,} users x {CLOSE_LINES} lines, "
        f"in process and as pktx broker billing close"
    ):
        period_close = time_period_close(CLOSE_USERS, CLOSE_LINES)
    with status(
        f"credit checks: {CHECKS} requests with and {CHECKS} without, in process and over HTTP"
    ):
        credit = credit_costs(workdir=workdir)
    return Measured(
        close_s, close_status, lookups_s, view_s, http, usage, usage_pg, period_close, credit
    )


def credit_costs(
    *,
    users: int = CHECK_USERS,
    checks: int = CHECKS,
    workdir: str | None = None,
    pg_url: str | None = None,
) -> list:
    """What a credit check adds to a request (`credit_load.check_cost`): on a SQLite file,
    and on PostgreSQL when ``pg_url`` (else ``$PKTX_BENCH_PG_URL``) names a server."""
    from benchmarks.credit_load import check_cost
    from benchmarks.usage_load import scratch_database

    with tempfile.TemporaryDirectory(prefix="pktx-bench-credit-", dir=workdir) as tmp:
        out = [
            check_cost(
                f"sqlite:///{os.path.join(tmp, 'credit.sqlite3')}", users=users, checks=checks
            )
        ]
    pg_url = pg_url or os.environ.get(ENV_PG)
    if pg_url:
        with scratch_database(pg_url) as url:
            out.append(check_cost(url, users=users, checks=checks, database="PostgreSQL"))
    return out


def checks(m: Measured) -> list[tuple[str, bool]]:
    """The issue's targets, each met or not."""
    return [
        (
            f"closing an auction of {CLOSE_BIDS:,} bids < {TARGET_CLOSE_S * 1e3:.0f} ms",
            m.close_s < TARGET_CLOSE_S,
        ),
        (
            f"bid submission over HTTP >= {TARGET_HTTP_RPS:.0f} requests/s sustained (SQLite, "
            f"concurrent clients)",
            m.http.rps >= TARGET_HTTP_RPS,
        ),
        ("no bid lost or duplicated (counted in the store)", m.http.exact),
        (
            f"reputation lookups for {VIEW_BIDDERS:,} providers in one auction view "
            f"< {TARGET_VIEW_S * 1e3:.0f} ms",
            m.lookups_s < TARGET_VIEW_S,
        ),
        *(
            []
            if m.period_close is None
            else [
                (
                    f"closing a period of {m.period_close.users:,} users x {CLOSE_LINES} lines "
                    f"< {TARGET_PERIOD_CLOSE_S:.0f} s, as a whole process",
                    m.period_close.whole_process_s < TARGET_PERIOD_CLOSE_S,
                ),
                (
                    "every charge on exactly one statement line, the statements adding up to what "
                    "was charged",
                    m.period_close.exact,
                ),
            ]
        ),
        *(
            check
            for u in (m.usage, m.usage_pg)
            if u is not None
            for check in [
                (
                    f"usage reports over HTTP >= {TARGET_USAGE_RPS:.0f} requests/s ({REPORTERS} "
                    f"reporters, retrying; {u.database}, {u.workers} server worker(s))",
                    u.rps >= TARGET_USAGE_RPS,
                ),
                (
                    f"no usage report lost or duplicated, each job charged its final usage once "
                    f"({u.database})",
                    u.exact,
                ),
            ]
        ),
        *(
            check
            for c in m.credit
            for check in [
                (
                    f"a credit check adds < {TARGET_CHECK_MS:g} ms to a request ({c.database}, in "
                    f"process)",
                    c.added_ms < TARGET_CHECK_MS,
                ),
                *(
                    []
                    if c.http_added_ms is None
                    else [
                        (
                            f"a credit check adds < {TARGET_CHECK_MS:g} ms to a request "
                            f"({c.database}, over HTTP)",
                            c.http_added_ms < TARGET_CHECK_MS,
                        )
                    ]
                ),
                (
                    f"every timed request stored, the checked users decided, the others not "
                    f"({c.database})",
                    c.exact,
                ),
            ]
        ),
    ]


def run(
    packets: int = 0,
    repeat: int = 5,
    stream_gb: float = 0.0,
    *,
    report: Report,
    http_seconds: float = HTTP_SECONDS,
    http_clients: int = HTTP_CLIENTS,
    workers: int = 1,
    workdir: str | None = None,
) -> int:
    """Fill the report; ``packets`` and ``stream_gb`` (the engine tables' sizes) do not apply."""
    del packets, stream_gb
    import sqlite3

    import sqlalchemy

    m = measure(
        repeat,
        http_seconds=http_seconds,
        http_clients=http_clients,
        workers=workers,
        status=report.step,
        workdir=workdir,
    )
    h = m.http
    table = report.sheet(
        f"pktx bench broker: SQLite file, best of {repeat}; {http_clients} HTTP "
        f"clients for {http_seconds:g} s, {workers} server worker(s)",
        [WHAT, label("measured"), label("target")],
    )

    def ms(*values: float, show: str = "{:.2f}") -> Quantity:
        text = " / ".join(show.format(v) for v in values) + " ms"
        return Quantity(values[0] if len(values) == 1 else values, "ms", text)

    def per_s(value: float) -> Quantity:
        return Quantity(value, "requests/s", f"{value:,.0f} /s")

    def counts(*values: int, unit: str) -> Quantity:
        return Quantity(values, unit, " / ".join(f"{v:,}" for v in values))

    table.add_row(
        f"close {CLOSE_BIDS:,} bids ({m.close_status}, committed)",
        ms(m.close_s * 1e3, show="{:.0f}"),
        f"< {TARGET_CLOSE_S * 1e3:.0f} ms",
    )
    table.add_row(
        f"bid POSTs ({h.requests:,}; {h.replays:,} retries)",
        per_s(h.rps),
        f">= {TARGET_HTTP_RPS:.0f} /s",
    )
    if h.server_cpu_per_request:
        table.add_row(
            "  server CPU per POST",
            ms(h.server_cpu_per_request * 1e3),
            f"1 core: {1 / h.server_cpu_per_request:,.0f} /s",
        )
    if h.client_cpu_s:
        table.add_row("  clients' CPU per POST", ms(h.client_cpu_s / h.requests * 1e3), "")
    table.add_row(
        "bids stored / sent / failed",
        counts(h.stored, h.bids_sent, h.errors, unit="bids"),
        "equal, 0",
    )
    table.add_row(
        f"reputations of {VIEW_BIDDERS:,} bidders",
        ms(m.lookups_s * 1e3, show="{:.1f}"),
        f"< {TARGET_VIEW_S * 1e3:.0f} ms",
    )
    table.add_row(f"whole view of {VIEW_BIDDERS:,} bids", ms(m.view_s * 1e3, show="{:.1f}"), "")
    for u in (m.usage, m.usage_pg):
        if u is None:
            continue
        table.add_row(
            f"usage report POSTs, {u.database}, {u.workers} worker(s) "
            f"({u.requests:,}; {u.replays:,} resent)",
            per_s(u.rps),
            f">= {TARGET_USAGE_RPS:.0f} /s",
        )
        if u.server_cpu_s:
            per = u.server_cpu_s / u.requests
            table.add_row("  server CPU per report", ms(per * 1e3), f"1 core: {1 / per:,.0f} /s")
        if u.client_cpu_s:
            table.add_row(
                "  clients' CPU per report (same cores)",
                ms(u.client_cpu_s / u.requests * 1e3),
                "",
            )
        table.add_row(
            "usage reports stored / sent / failed",
            counts(u.stored, u.sent, u.errors, unit="reports"),
            "equal, 0",
        )
    c = m.period_close
    if c is not None:
        table.add_row(
            f"close a billing period: {c.users:,} users, {c.lines:,} lines, in process",
            Quantity(c.in_process_s, "s", f"{c.in_process_s:.1f} s"),
            "",
        )
        table.add_row(
            "  the same as `pktx broker billing close` (start-up included)",
            Quantity(c.whole_process_s, "s", f"{c.whole_process_s:.1f} s"),
            f"< {TARGET_PERIOD_CLOSE_S:.0f} s",
        )
    for cc in m.credit:
        table.add_row(
            f"request with / without a credit check, {cc.database}, in process "
            f"(median of {cc.checks}; {cc.users:,} users' histories)",
            ms(cc.checked_ms, cc.unchecked_ms),
            "",
        )
        table.add_row("  added by the credit check", ms(cc.added_ms), f"< {TARGET_CHECK_MS:g} ms")
        if cc.http_added_ms is not None:
            table.add_row(
                f"POST /v1/requests with / without a credit check, {cc.database} (one client)",
                ms(cc.http_checked_ms, cc.http_unchecked_ms),
                "",
            )
            table.add_row(
                "  added by the credit check",
                ms(cc.http_added_ms),
                f"< {TARGET_CHECK_MS:g} ms",
            )
    for target, met in checks(m):
        report.check(target, met)
    report.machine(sqlalchemy=sqlalchemy.__version__, sqlite=sqlite3.sqlite_version)
    return 0
