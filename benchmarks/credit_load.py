"""Credit: a store of many users' payment histories, bulk-inserted, to time retraining the
credit model and a credit check on a request (docs/billing.md, "Credit").

Every user of one home provider has a credit profile (an external score) and ``months``
finalized monthly statements, each of one charge; whether a statement was paid by its due date
is drawn from a known logistic model of the user's external score, tenure and how it paid
before (`TRUE`), so a refit on the store has something real to find.

``bench_credit`` is the benchmark: ``python -m benchmarks.credit_load [USERS]`` prints the
retrain time on USERS users (100,000 by default) and what a credit check adds to a request;
``python -m benchmarks.credit_load --url URL`` measures a store built before.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.bulk_rows import advance_sequences as _advance_sequences
from benchmarks.bulk_rows import bulk as _bulk

START = datetime(2025, 1, 1, tzinfo=UTC)
TERMS = timedelta(days=14)
# The generating model: log-odds of paying a statement on time.
TRUE = {"intercept": 2.6, "late_share": -2.0, "ext_score": 1.0, "tenure_years": 0.15}


@dataclass
class Population:
    url: str
    home_id: int
    first_user: int
    users: int
    statements: int
    late: int


def populate(url: str, users: int, months: int = 4, seed: int = 7) -> Population:
    """A store at ``url`` (migrated here) with ``users`` users of one home provider, each with
    a credit profile and ``months`` finalized statements from January 2025 on (one charge each:
    the first an award's price, the others usage of the same award), paid on time or not by
    `TRUE`; a late statement is paid 10 days late, one in five of them never."""
    from sqlalchemy import func, select

    from broker.actors import Actor
    from broker.directory import create_admin, create_network, create_provider
    from broker.models import (
        Award,
        AwardPayer,
        Charge,
        CreditProfile,
        DeliveryJob,
        ServiceRequest,
        Statement,
        StatementLine,
        UsageReport,
        User,
    )
    from broker.store import Store

    rng = np.random.default_rng(seed)
    store = Store(url)
    with store.write() as s:
        admin = Actor("admin", create_admin(s, "credit-admin").id)
        net = create_network(s, admin, "credit-net").id
        home = create_provider(
            s,
            admin,
            network_id=net,
            name="credit-home",
            services="identity",
            capacity_bps=10**12,
            currency="EUR",
            per_gb_minor=100,
            per_mbps_hour_minor=10,
        ).id
        first = (s.scalar(select(func.max(User.id))) or 0) + 1
        ids = {
            m: (s.scalar(select(func.max(m.id))) or 0) + 1
            for m in (
                ServiceRequest,
                Award,
                DeliveryJob,
                UsageReport,
                Charge,
                Statement,
                StatementLine,
            )
        }
        number = 1
    tenure0 = rng.uniform(0, 5, users)  # years before START
    ext = np.clip(rng.normal(650, 80, users), 300, 850).astype(int)
    rows = {
        m: []
        for m in (
            User,
            CreditProfile,
            ServiceRequest,
            Award,
            AwardPayer,
            DeliveryJob,
            UsageReport,
            Charge,
            Statement,
            StatementLine,
        )
    }
    for u in range(users):
        uid = first + u
        created = START - timedelta(days=float(tenure0[u]) * 365.25)
        rows[User].append(
            {"id": uid, "name": f"credit-user-{u}", "home_provider_id": home, "created_at": created}
        )
        rows[CreditProfile].append(
            {
                "user_id": uid,
                "external_score": int(ext[u]),
                "prior_limit_minor": 10_000,
                "currency": "EUR",
                "set_by": "admin",
                "updated_at": START,
            }
        )
    n_due = np.zeros(users)
    n_on_time = np.zeros(users)
    late = 0
    rid, aid, jid = ids[ServiceRequest], ids[Award], ids[DeliveryJob]
    for u in range(users):
        rows[ServiceRequest].append(
            {
                "id": rid + u,
                "user_id": first + u,
                "home_provider_id": home,
                "services": "identity",
                "volume_bytes": 10**9,
                "currency": "EUR",
                "status": "served",
                "reason": "",
                "created_at": START,
            }
        )
        rows[Award].append(
            {
                "id": aid + u,
                "request_id": rid + u,
                "provider_id": home,
                "home_provider_id": home,
                "source": "home",
                "share": 0,
                "shares": 1,
                "price_minor": 1000,
                "currency": "EUR",
                "services": "identity",
                "volume_bytes": 10**9,
                "status": "delivered",
                "created_at": START,
            }
        )
        rows[AwardPayer].append({"award_id": aid + u, "user_id": first + u, "share_minor": 1000})
        rows[DeliveryJob].append(
            {
                "id": jid + u,
                "award_id": aid + u,
                "provider_id": home,
                "status": "done",
                "spec": {},
                "created_at": START,
                "updated_at": START,
            }
        )
    rep, cid, sid, lid = (ids[UsageReport], ids[Charge], ids[Statement], ids[StatementLine])
    for m in range(months):
        period_start = _month(START, m)
        period_end = _month(START, m + 1)
        finalized = period_end + timedelta(hours=2)
        due = finalized + TERMS
        late_share = np.where(n_due > 0, 1 - n_on_time / np.maximum(n_due, 1), 0.0)
        tenure = tenure0 + (finalized - START).days / 365.25
        logit = (
            TRUE["intercept"]
            + TRUE["late_share"] * late_share
            + TRUE["ext_score"] * (ext - 650) / 100
            + TRUE["tenure_years"] * np.minimum(tenure, 10)
        )
        pays = rng.random(users) < 1 / (1 + np.exp(-logit))
        never = rng.random(users) < 0.2
        amounts = 500 + rng.integers(0, 1500, users)
        for u in range(users):
            uid, amount = first + u, int(amounts[u])
            at = period_start + timedelta(days=3)
            common = {
                "user_id": uid,
                "provider_id": home,
                "home_provider_id": home,
                "award_id": aid + u,
                "job_id": jid + u,
                "currency": "EUR",
                "minor_digits": 2,
                "tariff_id": None,
                "tariff_version": None,
                "amount_minor": amount,
                "rated_at": at,
            }
            if m == 0:
                rows[Charge].append({**common, "id": cid, "usage_report_id": None, "kind": "price"})
            else:
                rows[UsageReport].append(
                    {
                        "id": rep,
                        "job_id": jid + u,
                        "award_id": aid + u,
                        "sequence": m,
                        "usage_at": at,
                        "packets_in": 1,
                        "packets_out": 1,
                        "bytes_in": m,
                        "bytes_out": m,
                        "seconds": m,
                        "windows_met": 0,
                        "windows_missed": 0,
                        "service_counters": {},
                        "tariff_id": None,
                        "charged_minor": amount,
                        "currency": "EUR",
                        "created_at": at,
                    }
                )
                rows[Charge].append({**common, "id": cid, "usage_report_id": rep, "kind": "bytes"})
                rep += 1
            paid_at = (
                due - timedelta(days=2)
                if pays[u]
                else (None if never[u] else due + timedelta(days=10))
            )
            late += not pays[u]
            rows[Statement].append(
                {
                    "id": sid,
                    "home_provider_id": home,
                    "user_id": uid,
                    "period": period_start.strftime("%Y-%m"),
                    "period_start": period_start,
                    "period_end": period_end,
                    "status": "finalized",
                    "number": number,
                    "totals": {"EUR": amount},
                    "line_count": 1,
                    "content_sha256": "0" * 64,
                    "finalized_at": finalized,
                    "due_at": due,
                    "paid_minor": amount if paid_at is not None else 0,
                    "paid_at": paid_at,
                    "created_at": finalized,
                }
            )
            rows[StatementLine].append(
                {
                    "id": lid,
                    "statement_id": sid,
                    "position": 1,
                    "charge_id": cid,
                    "credit_note_id": None,
                    "kind": "price" if m == 0 else "bytes",
                    "amount_minor": amount,
                    "currency": "EUR",
                    "minor_digits": 2,
                    "at": at,
                    "attrs": {},
                }
            )
            cid, sid, lid, number = cid + 1, sid + 1, lid + 1, number + 1
        n_due += 1
        n_on_time += pays
    with store.write() as s:
        for model, batch in rows.items():
            _bulk(s, model, batch)
        _advance_sequences(
            s,
            "users",
            "service_requests",
            "awards",
            "award_payers",
            "delivery_jobs",
            "usage_reports",
            "charges",
            "statements",
            "statement_lines",
        )
        from broker.statements import billing_settings

        billing_settings(s, home).next_number = number
    if store.backend == "postgresql":
        # Fresh statistics, as autovacuum would gather them: the planner sees the bulk.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    store.dispose()
    return Population(url, home, first, users, users * months, late)


def _month(start: datetime, months: int) -> datetime:
    year, month = divmod(start.month - 1 + months, 12)
    return start.replace(year=start.year + year, month=month + 1)


def bench_credit(users: int = 100_000, url: str | None = None, checks: int = 200) -> dict:
    """Build ``users`` users' histories (in a temporary SQLite file unless ``url``), then
    `measure_credit` on them."""
    with tempfile.TemporaryDirectory() as tmp:
        url = url or f"sqlite:///{Path(tmp) / 'credit.sqlite3'}"
        started = time.perf_counter()
        pop = populate(url, users)
        built = time.perf_counter() - started
        return {
            "users": users,
            "statements": pop.statements,
            "build_s": round(built, 2),
            **measure_credit(url, checks),
        }


def measure_credit(url: str, checks: int = 200) -> dict:
    """On a store `populate` built: the time `retrain` takes (scikit-learn's import apart,
    it is paid once per process), and the median time of a request with a credit check (a
    user with a credit profile) against one without (the same request by a user without a
    profile), ``checks`` of each."""
    from sqlalchemy import select

    from broker.actors import Actor, actor_for
    from broker.credit import retrain
    from broker.directory import create_user
    from broker.models import Admin, Provider, User
    from broker.requests import submit_request
    from broker.store import Store

    started = time.perf_counter()
    import sklearn.linear_model
    import sklearn.metrics  # noqa: F401

    imported = time.perf_counter() - started
    store = Store(url)
    now = _month(START, 6)
    with store.write() as s:
        done = retrain(s, now=now)
    with store.write() as s:
        admin = Actor("admin", s.scalar(select(Admin.id).order_by(Admin.id).limit(1)))
        home = s.scalar(select(Provider.id).where(Provider.name == "credit-home"))
        first = s.scalar(select(User.id).where(User.name == "credit-user-0"))
        plain = (
            s.scalar(select(User.id).where(User.name == "no-profile"))
            or create_user(s, admin, name="no-profile", home_provider_id=home).id
        )

    def request_ms(user_id: int) -> float:
        with store.read() as s:
            user = actor_for(s, "user", user_id)
        times = []
        for i in range(checks):
            t = time.perf_counter()
            with store.write() as s:
                submit_request(s, user, services="identity", volume_bytes=1000 + i, now=now)
            times.append((time.perf_counter() - t) * 1000)
        return float(np.median(times))

    request_ms(first)  # warm: the queries are built and cached once per process
    checked, unchecked = request_ms(first), request_ms(plain)
    store.dispose()
    return {
        "outcomes": done.outcomes,
        "sklearn_import_s": round(imported, 2),
        "retrain_s": round(done.seconds, 3),
        "model": done.model.kind,
        "auc": round(done.auc or math.nan, 4),
        "fitted": done.fitted,
        "request_ms_checked": round(checked, 3),
        "request_ms_unchecked": round(unchecked, 3),
        "credit_check_ms": round(checked - unchecked, 3),
    }


# -- the credit check's cost in ``pktx bench broker`` -----------------------------------------

CHECK_USERS = 2_000  # the population whose histories the checks read
CHECKS = 200  # requests of each kind (with a check, without), in process and over HTTP
TARGET_CHECK_MS = 5.0  # issue 10: a credit check adds under 5 ms to a request


@dataclass
class CheckCost:
    """What a credit check adds to a request: the median time of a request by a user with a
    credit profile (checked) and by one without (not checked), both with the same kind of
    history, in process (`submit_request` in its own committed transaction) and over HTTP
    (``POST /v1/requests``, one client, one request at a time)."""

    database: str
    users: int
    checks: int
    checked_ms: float
    unchecked_ms: float
    http_checked_ms: float | None = None
    http_unchecked_ms: float | None = None
    stored: int = 0  # requests in the store afterwards, of ...
    sent: int = 0  # ... the ones timed
    decided: int = 0  # checked users with a credit decision, of ...
    timed_users: int = 0  # ... the checked users timed
    undecided_right: bool = True  # no unchecked user has a decision

    @property
    def added_ms(self) -> float:
        return self.checked_ms - self.unchecked_ms

    @property
    def http_added_ms(self) -> float | None:
        if self.http_checked_ms is None or self.http_unchecked_ms is None:
            return None
        return self.http_checked_ms - self.http_unchecked_ms

    @property
    def exact(self) -> bool:
        """Every timed request stored, and only the checked users decided."""
        return (
            self.stored == self.sent and self.decided == self.timed_users and self.undecided_right
        )


def check_cost(
    url: str,
    *,
    users: int = CHECK_USERS,
    checks: int = CHECKS,
    http: bool = True,
    database: str = "SQLite",
) -> CheckCost:
    """On a new store at ``url``: `populate` ``users`` users' histories, retrain the model on
    them, then take the credit profile away from every other user (the same histories, with
    and without a credit check) and time ``checks`` requests of each kind, alternating, each
    by another user (in process, then over HTTP against ``pktx broker serve``). A user refused
    by its check (past its credit) is left out before timing: a refusal skips the serving."""
    from sqlalchemy import delete, func, select

    from broker.actors import Actor, actor_for, issue_key
    from broker.credit import CreditLimitExceeded, retrain
    from broker.models import Admin, CreditDecision, CreditProfile, ServiceRequest
    from broker.requests import submit_request
    from broker.store import Store

    pop = populate(url, users)
    store = Store(url)
    try:
        with store.write() as s:
            retrain(s)
            s.execute(
                delete(CreditProfile).where(
                    CreditProfile.user_id >= pop.first_user,
                    (CreditProfile.user_id - pop.first_user) % 2 == 1,
                )
            )
        candidates = list(range(pop.first_user, pop.first_user + users))
        checked_pool, unchecked_pool = candidates[0::2], candidates[1::2]

        def request(user_id: int, actor=None) -> float:
            with store.read() as s:
                actor = actor or actor_for(s, "user", user_id)
            t = time.perf_counter()
            with store.write() as s:
                submit_request(s, actor, services="identity", volume_bytes=1000)
            return (time.perf_counter() - t) * 1000

        # Warm-up, and the users the timing takes: the first ``checks`` of each kind whose
        # request passes (one request each: their exposure grows by it, as any user's would).
        checked, unchecked = [], []
        for pool, chosen in ((checked_pool, checked), (unchecked_pool, unchecked)):
            for uid in pool:
                if len(chosen) == checks:
                    break
                try:
                    request(uid)
                except CreditLimitExceeded:
                    continue
                chosen.append(uid)
        with store.read() as s:
            first_id = s.scalar(select(func.max(ServiceRequest.id)))
        times: dict[bool, list[float]] = {True: [], False: []}
        for a, b in zip(checked, unchecked, strict=False):
            times[True].append(request(a))
            times[False].append(request(b))
        sent = 2 * len(times[True])
        http_times: dict[bool, list[float]] = {True: [], False: []}
        if http:
            with store.write() as s:
                admin = Actor("admin", s.scalar(select(Admin.id).order_by(Admin.id).limit(1)))
                tokens = {
                    uid: issue_key(s, admin, "user", uid, "bench")[1] for uid in checked + unchecked
                }
            http_times, warm = _http_requests(url, checked, unchecked, tokens)
            sent += sum(len(v) for v in http_times.values()) + warm
        with store.read() as s:
            stored = s.scalar(
                select(func.count()).select_from(ServiceRequest).where(ServiceRequest.id > first_id)
            )
            decided = s.scalar(
                select(func.count(func.distinct(CreditDecision.user_id))).where(
                    CreditDecision.user_id.in_(checked)
                )
            )
            wrong = s.scalar(
                select(func.count())
                .select_from(CreditDecision)
                .where(CreditDecision.user_id.in_(unchecked))
            )
    finally:
        store.dispose()
    return CheckCost(
        database,
        users,
        len(times[True]),
        _median(times[True]),
        _median(times[False]),
        _median(http_times[True]) if http else None,
        _median(http_times[False]) if http else None,
        stored,
        sent,
        decided,
        len(checked),
        wrong == 0,
    )


def _median(times: list[float]) -> float:
    return float(np.median(times)) if times else math.nan


def _http_requests(
    url: str, checked: list[int], unchecked: list[int], tokens: dict[int, str]
) -> tuple[dict[bool, list[float]], int]:
    """One client's ``POST /v1/requests``, alternating a checked user's and an unchecked
    one's, against ``pktx broker serve`` on ``url``: each round trip's time (ms), and how
    many requests warmed the server up (not timed)."""
    import httpx

    from benchmarks.http_load import running_server

    times: dict[bool, list[float]] = {True: [], False: []}
    with running_server(url) as (base, _pid), httpx.Client(base_url=base, timeout=30) as web:

        def post(uid: int, n: int) -> float:
            t = time.perf_counter()
            r = web.post(
                "/v1/requests",
                json={"services": ["identity"], "volume_bytes": 1000 + n},
                headers={
                    "Authorization": f"Bearer {tokens[uid]}",
                    "Idempotency-Key": f"bench-credit-{uid}-{n}",
                },
            )
            elapsed = (time.perf_counter() - t) * 1000
            if r.status_code != 201:
                raise RuntimeError(f"POST /v1/requests as user {uid}: {r.status_code} {r.text}")
            return elapsed

        warm = list(zip(checked[:4], unchecked[:4], strict=False))
        for n, (a, b) in enumerate(warm):
            post(a, -1 - n)  # the server's first requests build its caches
            post(b, -1 - n)
        for n, (a, b) in enumerate(zip(checked, unchecked, strict=False)):
            times[True].append(post(a, n))
            times[False].append(post(b, n))
    return times, 2 * len(warm)


if __name__ == "__main__":
    import json

    if sys.argv[1:2] == ["--url"]:
        result = measure_credit(sys.argv[2])
    else:
        result = bench_credit(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print(json.dumps(result, indent=2, default=str))
