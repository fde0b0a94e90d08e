"""Charges from usage reports, in the domain: split invariance over however the reports come
(lost, resent, late), the version active when the usage happened, and the payers' split."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marketplace import T0
from sqlalchemy import func, select
from tariff_strategies import SMALL, tariffs

from broker.charging import allocate, billable
from broker.models import Charge, UsageReport
from broker.rating import CONNECT, rate
from broker.requests import submit_request
from broker.tariff_book import publish_tariff
from broker.usage import prefetch, report_usage

VOLUME = 1000


@given(st.integers(-(10**20), 10**20), st.lists(st.integers(0, 10**12), min_size=1, max_size=9))
def test_allocation_neither_loses_nor_invents_a_minor_unit(amount, weights):
    parts = allocate(amount, weights)
    assert sum(parts) == amount
    total = sum(weights) or len(weights)
    for part, w in zip(parts, weights if sum(weights) else [1] * len(weights), strict=True):
        exact = abs(amount) * w / total
        assert abs(abs(part) - exact) < 1 + 1e-9 * abs(amount)  # within one unit of its share
        assert part * amount >= 0  # a credit splits as credits
    assert allocate(-amount, weights) == [-p for p in parts]


def test_allocation_by_largest_remainder():
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(10, [0, 0]) == [5, 5]
    assert allocate(7, [5, 0, 2]) == [5, 0, 2]
    assert allocate(1, [1, 2]) == [0, 1]


def test_billable_is_what_passes_the_terms():
    volume = {"volume_bytes": 100, "data_cap_bytes": None, "starts_at": None, "ends_at": None}
    counters = {"bytes_out": 150, "seconds": 10**6}
    assert billable(volume, counters) == {"bytes": 50, "seconds": 0}
    block = {
        "volume_bytes": None,
        "data_cap_bytes": None,
        "starts_at": T0,
        "ends_at": T0 + timedelta(hours=1),
    }
    assert billable(block, {"bytes_out": 10**12, "seconds": 3601}) == {"bytes": 0, "seconds": 1}
    assert billable({**block, "data_cap_bytes": 10}, {"bytes_out": 11, "seconds": 0}) == {
        "bytes": 1,
        "seconds": 0,
    }


class Clock:
    """Each example's own stretch of time, later than the one before (versions only move on)."""

    def __init__(self) -> None:
        self.t = T0

    def next(self):
        self.t += timedelta(days=1)
        return self.t


def new_job(store, world, now) -> int:
    alice = world.m.actor("user", world.alice)
    with store.write() as s:
        r = submit_request(s, alice, services=["identity"], volume_bytes=VOLUME, now=now)
        s.flush()
        return r.id


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), tariff=tariffs())
def test_however_usage_is_split_into_reports_it_is_charged_once(store, world, data, tariff):
    """Reports lost, resent, arriving out of order: the charges add up to rating the final
    cumulative usage (past the award's volume) once, the connect fee aside (the price
    covers it)."""
    clock = getattr(store, "_clock", None) or Clock()
    store._clock = clock
    start = clock.next()
    home = world.m.actor("provider", world.home)
    doc = {k: v for k, v in tariff.to_json().items() if k not in ("provider_id", "version")}
    doc.update(services=["identity"], active_from=(start - timedelta(minutes=1)).isoformat())
    with store.write() as s:
        version = publish_tariff(s, home, world.home, doc, now=start)
    new_job(store, world, start)
    with store.read() as s:
        from broker.models import DeliveryJob

        job = s.scalars(select(DeliveryJob).order_by(DeliveryJob.id.desc())).first().id
    final = data.draw(st.integers(0, VOLUME + SMALL), label="final bytes")
    steps = sorted(data.draw(st.lists(st.integers(0, final), max_size=6), label="steps"))
    series = [*steps, final]  # cumulative bytes_out, sequence 1..n
    order = data.draw(st.permutations(range(len(series))), label="arrival")
    sent = [i for i in order if i == len(series) - 1 or data.draw(st.booleans(), label="sent")]
    resent = data.draw(st.lists(st.sampled_from(sent), max_size=3), label="resent")
    for i in [*sent, *resent]:
        with store.write() as s:
            report_usage(
                s,
                home,
                job,
                i + 1,
                {"bytes_out": series[i], "packets_in": i},
                at=start + timedelta(seconds=i),
                now=start + timedelta(seconds=99),
            )
    expected = sum(
        ln.minor
        for ln in rate(tariff, {"bytes": max(final - VOLUME, 0)}).lines
        if ln.name != CONNECT
    )
    with store.read() as s:
        charged = s.scalar(
            select(func.coalesce(func.sum(Charge.amount_minor), 0)).where(
                Charge.job_id == job, Charge.kind != "price"
            )
        )
        reported = s.scalar(
            select(func.coalesce(func.sum(UsageReport.charged_minor), 0)).where(
                UsageReport.job_id == job
            )
        )
        reports = s.scalar(
            select(func.count()).select_from(UsageReport).where(UsageReport.job_id == job)
        )
        tariff_ids = set(
            s.scalars(select(Charge.tariff_id).where(Charge.job_id == job, Charge.kind != "price"))
        )
    assert charged == reported == expected
    assert reports == len(set(sent))
    assert tariff_ids <= {version.id}


def test_a_report_is_rated_by_the_version_active_when_its_usage_happened(store, world):
    home = world.m.actor("provider", world.home)
    per_mb = {"rate_unit": 1, "tiers": [{"up_to": None, "price": "0.01"}]}
    with store.write() as s:
        for n, hours in ((1, 0), (2, 10)):
            publish_tariff(
                s,
                home,
                world.home,
                {
                    "services": ["identity"],
                    "currency": "EUR",
                    "active_from": (T0 + timedelta(hours=hours)).isoformat(),
                    "dimensions": {
                        "bytes": {**per_mb, "tiers": [{"up_to": None, "price": f"0.0{n}"}]}
                    },
                },
                now=T0,
            )
    new_job(store, world, T0)
    from broker.models import DeliveryJob

    with store.read() as s:
        job = s.scalars(select(DeliveryJob)).one().id
    with store.write() as s:
        first, _ = report_usage(
            s,
            home,
            job,
            1,
            {"bytes_out": VOLUME + 100},
            at=T0 + timedelta(hours=5),
            now=T0 + timedelta(hours=20),
        )
        second, _ = report_usage(
            s,
            home,
            job,
            2,
            {"bytes_out": VOLUME + 300},
            at=T0 + timedelta(hours=11),
            now=T0 + timedelta(hours=20),
        )
    assert (first["tariff_version"], first["charged_minor"]) == (1, 100)
    assert (second["tariff_version"], second["charged_minor"]) == (2, 400)  # 200 B at 0.02


def test_the_domain_checks_counters_itself(store, world):
    import pytest

    from broker.errors import InvalidInput

    home = world.m.actor("provider", world.home)
    new_job(store, world, T0)
    from broker.models import DeliveryJob

    with store.read() as s:
        job = s.scalars(select(DeliveryJob)).one().id
    for counters, services, field in (
        ({"bytes_out": -1}, None, "bytes_out"),
        ({"seconds": True}, None, "seconds"),
        ({"bytes_out": 2**63}, None, "bytes_out"),
        ({"frames": 1}, None, "frames"),
        ({}, {"identity": {"bytes": 1.0}}, "services.identity.bytes"),
    ):
        with pytest.raises(InvalidInput) as caught, store.write() as s:
            report_usage(s, home, job, 1, counters, services=services, now=T0)
        assert caught.value.field == field
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(UsageReport)) == 0


def test_one_jobs_reports_in_one_group_commit_batch_end_as_one_transaction_each(store, world):
    """In a group commit's batch the jobs and their latest reports are read for all reports at
    once and a report's inserts wait for the batch's end (one statement for all); a later
    report of the same job writes the waiting ones first and reads afresh, so resends, late
    reports, conflicts and counters going backwards come out as they do one by one."""
    import threading

    from broker.errors import BrokerError
    from broker.groupcommit import GroupCommit
    from broker.models import DeliveryJob

    home = world.m.actor("provider", world.home)
    with store.write() as s:
        publish_tariff(
            s,
            home,
            world.home,
            {
                "services": ["identity"],
                "currency": "EUR",
                "active_from": (T0 - timedelta(hours=1)).isoformat(),
                "dimensions": {
                    "bytes": {"rate_unit": 1, "tiers": [{"up_to": None, "price": "0.01"}]}
                },
            },
            now=T0,
        )
    jobs = []
    for _ in range(3):
        new_job(store, world, T0)
        with store.read() as s:
            jobs.append(s.scalars(select(DeliveryJob.id).order_by(DeliveryJob.id.desc())).first())
    first, second, alone = jobs  # the first two's reports interleaved in one batch
    # (sequence, bytes past the volume): a resend, late ones, a conflict, one going backwards.
    arrivals = [
        (3, 300),
        (1, 100),
        (2, 200),
        (3, 300),
        (5, 500),
        (4, 400),
        (5, 500),
        (2, 999),
        (6, 450),
        (7, 700),
    ]
    now = T0 + timedelta(minutes=5)

    def take(job, sequence, extra):
        def fn(s):
            view, new = report_usage(s, home, job, sequence, {"bytes_out": VOLUME + extra}, now=now)
            return new, view["charged_minor"]

        return fn

    def outcome(fn, run):
        try:
            return ("ok", *run(fn))
        except BrokerError as exc:
            return ("refused", type(exc).__name__)

    def one_transaction(fn):
        with store.write() as s:
            return fn(s)

    gc = GroupCommit(store)

    def one_batch(arrivals) -> list:
        entered, release = threading.Event(), threading.Event()
        holder = threading.Thread(
            target=gc.call, args=(lambda _s: (entered.set(), release.wait(30)),)
        )
        holder.start()
        assert entered.wait(30)
        calls = [(job, q, x) for q, x in arrivals for job in (first, second)]
        got: list = [None] * len(calls)

        def send(i, job, fn):  # with the batch's reads done at once before it runs
            got[i] = outcome(
                fn, lambda f: gc.call(f, checks_first=True, prefetch=prefetch(job, None, now))
            )

        threads = []
        for i, (job, q, x) in enumerate(calls):  # queued in this order, behind the holder
            threads.append(threading.Thread(target=send, args=(i, job, take(job, q, x))))
            threads[-1].start()
            for _ in range(3000):
                if gc._queue.qsize() > i:
                    break
                threading.Event().wait(0.01)
        batches = gc.batches
        release.set()
        holder.join(30)
        for t in threads:
            t.join(30)
        assert gc.batches == batches + 2 and gc.redone == 0  # the holder's, then one batch
        return got

    try:
        # The second batch finds reports stored: the latest read for all, then used or not.
        for batch, kinds in (
            (arrivals, ["ok"] * 7 + ["refused"] * 2 + ["ok"]),
            ([(8, 800), (6, 500), (9, 900), (8, 800), (10, 850)], ["ok"] * 4 + ["refused"]),
        ):
            expected = [outcome(take(alone, q, x), one_transaction) for q, x in batch]
            got = one_batch(batch)
            assert got[0::2] == got[1::2] == expected
            assert [r[0] for r in expected] == kinds
    finally:
        gc.stop()
    with store.read() as s:

        def stored(job):
            return (
                s.execute(
                    select(UsageReport.sequence, UsageReport.charged_minor)
                    .where(UsageReport.job_id == job)
                    .order_by(UsageReport.sequence)
                ).all(),
                s.scalar(
                    select(func.sum(Charge.amount_minor)).where(
                        Charge.job_id == job, Charge.kind != "price"
                    )
                ),
            )

        assert stored(first) == stored(second) == stored(alone)
        assert stored(first)[1] == 900


def test_a_batch_read_at_its_latest_time_does_not_rate_an_earlier_report_by_a_later_version(
    store, world
):
    """A batch reads the jobs' tariff versions at its latest report's time; a report of an
    earlier time, before a version that began in between, is rated by its own time's."""
    import threading

    from broker.groupcommit import GroupCommit
    from broker.models import DeliveryJob

    home = world.m.actor("provider", world.home)
    now = T0 + timedelta(hours=2)
    versions = []
    with store.write() as s:
        for minutes_ago, price in ((60, "0.01"), (5, "0.02")):
            versions.append(
                publish_tariff(
                    s,
                    home,
                    world.home,
                    {
                        "services": ["identity"],
                        "currency": "EUR",
                        "active_from": (now - timedelta(minutes=minutes_ago)).isoformat(),
                        "dimensions": {
                            "bytes": {"rate_unit": 1, "tiers": [{"up_to": None, "price": price}]}
                        },
                    },
                    now=T0,
                ).id
            )
    jobs = []
    for _ in range(2):
        new_job(store, world, T0)
        with store.read() as s:
            jobs.append(s.scalars(select(DeliveryJob.id).order_by(DeliveryJob.id.desc())).first())
    reports = [(jobs[0], now - timedelta(minutes=10)), (jobs[1], None)]
    gc = GroupCommit(store)
    try:
        entered, release = threading.Event(), threading.Event()
        holder = threading.Thread(
            target=gc.call, args=(lambda _s: (entered.set(), release.wait(30)),)
        )
        holder.start()
        assert entered.wait(30)
        threads = []
        for i, (job, at) in enumerate(reports):

            def fn(s, job=job, at=at):
                return report_usage(s, home, job, 1, {"bytes_out": VOLUME + 100}, at=at, now=now)

            threads.append(
                threading.Thread(
                    target=gc.call,
                    args=(fn,),
                    kwargs={"checks_first": True, "prefetch": prefetch(job, at, now)},
                )
            )
            threads[-1].start()
            for _ in range(3000):
                if gc._queue.qsize() > i:
                    break
                threading.Event().wait(0.01)
        release.set()
        holder.join(30)
        for t in threads:
            t.join(30)
    finally:
        gc.stop()
    with store.read() as s:
        rated = dict(
            s.execute(
                select(UsageReport.job_id, UsageReport.tariff_id).where(
                    UsageReport.job_id.in_(jobs)
                )
            ).all()
        )
        charged = dict(
            s.execute(
                select(Charge.job_id, func.sum(Charge.amount_minor))
                .where(Charge.job_id.in_(jobs), Charge.kind != "price")
                .group_by(Charge.job_id)
            ).all()
        )
    assert rated == {jobs[0]: versions[0], jobs[1]: versions[1]}
    assert charged == {jobs[0]: 100, jobs[1]: 200}
