"""A billing period to close: many users of one home provider, each with charges from several
delivering providers (award prices and usage past the awards' volume), bulk-inserted into a
store so that what is measured is the close, not building the market one call at a time.

Used by ``pktx bench broker`` (closing a period of 10,000 users of 20 lines each, in process
and as ``pktx broker billing close`` from the command line) and by the test that kills a close
midway (`tests/broker/test_billing_cli.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from benchmarks.bulk_rows import advance_sequences, bulk

PERIOD = "2025-01"
PERIOD_START = datetime(2025, 1, 1, tzinfo=UTC)
DELIVERING = 5
VOLUME = 10**9


@dataclass
class Billed:
    url: str
    home_id: int
    users: int
    lines: int
    charged_minor: int  # the sum of every charge: the statements must add up to it


def populate(url: str, users: int, lines_per_user: int = 20) -> Billed:
    """A store at ``url`` (migrated here) whose home provider's ``users`` each have
    ``lines_per_user`` charges in January 2025 (half award prices, half usage past the
    award's volume, from five delivering providers of another network)."""
    from broker.actors import Actor
    from broker.directory import add_device, create_admin, create_network, create_provider
    from broker.models import (
        Award,
        AwardPayer,
        Charge,
        DeliveryJob,
        Device,
        ServiceRequest,
        UsageReport,
        User,
    )
    from broker.store import Store

    store = Store(url)
    awards_per_user = max(lines_per_user // 2, 1)
    with store.write() as s:
        admin = Actor("admin", create_admin(s, "bench-admin").id)
        home_net = create_network(s, admin, "home-net").id
        home = create_provider(
            s,
            admin,
            network_id=home_net,
            name="home",
            services="identity",
            capacity_bps=10**12,
            currency="EUR",
            per_gb_minor=100,
            per_mbps_hour_minor=10,
        ).id
        far_net = create_network(s, admin, "far-net").id
        far = [
            create_provider(
                s,
                admin,
                network_id=far_net,
                name=f"far-{i}",
                services="identity,anonymize",
                capacity_bps=10**12,
                currency="EUR",
                per_gb_minor=100,
                per_mbps_hour_minor=10,
            ).id
            for i in range(DELIVERING)
        ]
        first_user = _next_id(s, User)
        bulk(
            s,
            User,
            [
                {
                    "id": first_user + i,
                    "name": f"user-{i}",
                    "home_provider_id": home,
                    "created_at": PERIOD_START,
                }
                for i in range(users)
            ],
        )
        advance_sequences(s, "users")
        add_device(s, admin, user_id=first_user, name="probe")  # the sequences work
        first_device = _next_id(s, Device)
        bulk(
            s,
            Device,
            [
                {
                    "id": first_device + i,
                    "user_id": first_user + i,
                    "name": f"phone-{i}",
                    "created_at": PERIOD_START,
                }
                for i in range(users)
            ],
        )
        advance_sequences(s, "devices")
    requests, awards, payers, jobs, reports, charges = [], [], [], [], [], []
    with store.write() as s:
        rid, aid, jid, uid, cid = (
            _next_id(s, m) for m in (ServiceRequest, Award, DeliveryJob, UsageReport, Charge)
        )
    total = 0
    for u in range(users):
        user = first_user + u
        for k in range(awards_per_user):
            at = PERIOD_START + timedelta(days=1 + (u + k) % 28, seconds=k)
            provider = far[(u + k) % DELIVERING]
            price = 100 + (u * 7 + k * 13) % 900
            usage = 1 + (u * 11 + k * 17) % 5000
            requests.append(
                {
                    "id": rid,
                    "user_id": user,
                    "device_id": first_device + u,
                    "home_provider_id": home,
                    "services": "anonymize",
                    "volume_bytes": VOLUME,
                    "currency": "EUR",
                    "status": "awarded",
                    "reason": "",
                    "created_at": at,
                }
            )
            awards.append(
                {
                    "id": aid,
                    "request_id": rid,
                    "provider_id": provider,
                    "home_provider_id": home,
                    "source": "auction",
                    "share": 0,
                    "shares": 1,
                    "price_minor": price,
                    "currency": "EUR",
                    "services": "anonymize",
                    "volume_bytes": VOLUME,
                    "status": "delivered",
                    "created_at": at,
                }
            )
            payers.append({"award_id": aid, "user_id": user, "share_minor": price})
            jobs.append(
                {
                    "id": jid,
                    "award_id": aid,
                    "provider_id": provider,
                    "status": "done",
                    "spec": {},
                    "created_at": at,
                    "updated_at": at,
                }
            )
            reports.append(
                {
                    "id": uid,
                    "job_id": jid,
                    "award_id": aid,
                    "sequence": 1,
                    "usage_at": at,
                    "packets_in": 10,
                    "packets_out": 10,
                    "bytes_in": VOLUME + usage * 1000,
                    "bytes_out": VOLUME + usage * 1000,
                    "seconds": 60,
                    "windows_met": 0,
                    "windows_missed": 0,
                    "service_counters": {},
                    "tariff_id": None,
                    "charged_minor": usage,
                    "currency": "EUR",
                    "created_at": at,
                }
            )
            common = {
                "user_id": user,
                "provider_id": provider,
                "home_provider_id": home,
                "award_id": aid,
                "job_id": jid,
                "currency": "EUR",
                "minor_digits": 2,
                "tariff_id": None,
                "tariff_version": None,
            }
            charges.append(
                {
                    **common,
                    "id": cid,
                    "usage_report_id": None,
                    "kind": "price",
                    "amount_minor": price,
                    "rated_at": at,
                }
            )
            charges.append(
                {
                    **common,
                    "id": cid + 1,
                    "usage_report_id": uid,
                    "kind": "bytes",
                    "amount_minor": usage,
                    "rated_at": at + timedelta(hours=1),
                }
            )
            total += price + usage
            rid, aid, jid, uid, cid = rid + 1, aid + 1, jid + 1, uid + 1, cid + 2
    with store.write() as s:
        for model, rows in (
            (ServiceRequest, requests),
            (Award, awards),
            (AwardPayer, payers),
            (DeliveryJob, jobs),
            (UsageReport, reports),
            (Charge, charges),
        ):
            bulk(s, model, rows)
        advance_sequences(
            s,
            "service_requests",
            "awards",
            "award_payers",
            "delivery_jobs",
            "usage_reports",
            "charges",
        )
    store.dispose()
    return Billed(url, home, users, len(charges), total)


def _next_id(session, model) -> int:
    from sqlalchemy import func, select

    return (session.scalar(select(func.max(model.id))) or 0) + 1


TARGET_CLOSE_S = 30.0


@dataclass
class CloseTimes:
    users: int
    lines: int
    in_process_s: float
    whole_process_s: float
    statements: int
    exact: bool  # every charge on one line, the lines adding up to what was charged


def time_close(users: int = 10_000, lines_per_user: int = 20) -> CloseTimes:
    """Close one period of ``users`` x ``lines_per_user`` lines twice on copies of one SQLite
    file: in process (`close_period`) and as a user runs it (``pktx broker billing close``,
    start-up included)."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from sqlalchemy import func, select

    from broker.actors import Actor
    from broker.models import StatementLine
    from broker.statements import close_period
    from broker.store import Store

    with tempfile.TemporaryDirectory(prefix="pktx-bench-close-") as tmp:
        template = Path(tmp) / "template.sqlite3"
        billed = populate(f"sqlite:///{template}", users, lines_per_user)
        first, second = Path(tmp) / "a.sqlite3", Path(tmp) / "b.sqlite3"
        shutil.copyfile(template, first)
        shutil.copyfile(template, second)
        store = Store(f"sqlite:///{first}", migrate=False)
        started = time.perf_counter()
        summary = close_period(store.write, Actor("admin", 1), billed.home_id, PERIOD)
        in_process = time.perf_counter() - started
        with store.read() as s:
            on_lines = s.scalar(select(func.count()).select_from(StatementLine))
            total = s.scalar(select(func.sum(StatementLine.amount_minor)))
        store.dispose()
        started = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "broker",
                "billing",
                "close",
                "--db",
                f"sqlite:///{second}",
                "--period",
                PERIOD,
            ],
            capture_output=True,
            check=True,
        )
        whole = time.perf_counter() - started
        cli = json.loads(out.stdout)["providers"][0]
    exact = (
        on_lines == billed.lines
        and total == billed.charged_minor
        and cli["lines"] == billed.lines
        and cli["totals"] == {"EUR": billed.charged_minor}
    )
    return CloseTimes(users, billed.lines, in_process, whole, summary["statements"], exact)
