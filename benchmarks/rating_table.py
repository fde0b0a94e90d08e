"""``pktx bench rating``: rating 1,000,000 usage reports under a tariff, columnar and one by one.

The reports: 100,000 jobs of 10 reports each, every report a job's cumulative usage on all four
dimensions (bytes, packets, seconds, reserved bit/s-seconds), rising by random steps. The tariff
prices all four with tiers (graduated and volume), 60/1-style increments, prices finer than the
currency, a minimum and a maximum per line and a connect fee; its integers fit int64 throughout.
A second tariff's prices (0.123456789 per GB on volumes up to a petabyte) take the exact
Python-int path instead, the worst case. One-by-one `charge_for_report` is timed on a sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np

from benchmarks.report import SECONDS, WHAT, Column, Report, main

REPORTS = 1_000_000
REPORTS_PER_JOB = 10
ONE_BY_ONE_SAMPLE = 20_000
TARGET_S = 10.0


def tariff(*, fine: bool = False):
    from broker.tariffs import GB, MB, MBPS_HOUR, MINUTE, DimensionPrice, Tariff, Tier

    d = Decimal
    if fine:
        bytes_price = DimensionPrice("bytes", (Tier(None, d("0.123456789")),), rate_unit=GB)
    else:
        bytes_price = DimensionPrice(
            "bytes",
            (Tier(10**12, d("0.001")), Tier(None, d("0.0005"))),
            rate_unit=MB,
            increment=MB,
            maximum=d("5000.00"),
        )
    dims = (
        bytes_price,
        DimensionPrice(
            "packets",
            (Tier(10**6, d("0.02")), Tier(None, d("0.01"))),
            rate_unit=1000,
            increment=1000,
            tiering="volume",
        ),
        DimensionPrice(
            "seconds",
            (Tier(60, d("0.20")), Tier(None, d("0.10"))),
            rate_unit=MINUTE,
            first_increment=60,
            increment=1,
            minimum=d("0.10"),
        ),
        DimensionPrice("reserved_bps_seconds", (Tier(None, d("0.0007")),), rate_unit=MBPS_HOUR),
    )
    return Tariff(
        provider_id=1,
        services=("compress",),
        version=1,
        active_from=datetime(2026, 1, 1, tzinfo=UTC),
        currency="EUR",
        dimensions=dims,
        connect_fee=d("0.40"),
        rounding="half-even",
    )


def reports(n: int = REPORTS, *, seed: int = 7, huge: bool = False):
    """(before, after, first): cumulative usage columns of ``n`` reports of jobs of ten."""
    rng = np.random.default_rng(seed)
    steps = {
        "bytes": rng.integers(0, 10**14 if huge else 10**9, n),
        "packets": rng.integers(0, 10**6, n),
        "seconds": rng.integers(0, 600, n),
        "reserved_bps_seconds": rng.integers(0, 10**10, n),
    }
    job_start = np.arange(n) % REPORTS_PER_JOB == 0
    after, before = {}, {}
    for name, step in steps.items():
        # each job's running total, job by job (n is a multiple of the job's reports)
        after[name] = np.cumsum(step.reshape(-1, REPORTS_PER_JOB), axis=1).ravel()
        before[name] = np.where(job_start, 0, after[name] - step)
    return before, after, job_start


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def columnar(t, data) -> np.ndarray:
    from broker.rating import charges_for_reports

    before, after, first = data
    return charges_for_reports(t, before, after, first)


def one_by_one(t, data, count: int) -> list[int]:
    from broker.rating import charge_for_report

    before, after, first = data
    names = list(after)
    out = []
    for i in range(count):
        b = None if first[i] else {k: int(before[k][i]) for k in names}
        out.append(charge_for_report(t, b, {k: int(after[k][i]) for k in names}).minor)
    return out


def run(packets: int = 0, repeat: int = 5, stream_gb: float = 0.0, *, report: Report) -> int:
    """Fill the report; ``packets`` and ``stream_gb`` (the engine tables' sizes) do not apply."""
    del packets, stream_gb
    report.expect_steps(5)
    plain, fine = tariff(), tariff(fine=True)
    with report.step("generating the reports"):
        data, huge = reports(), reports(huge=True)
    with report.step("checking columnar against one by one"):
        charges = columnar(plain, data)
        assert one_by_one(plain, data, 1000) == charges[:1000].tolist()
    with report.step("columnar, int64 kernel"):
        int64_s = best_of(lambda: columnar(plain, data), repeat)
    with report.step("columnar, exact Python ints"):
        python_s = best_of(lambda: columnar(fine, huge), max(1, repeat // 2))
    with report.step("one by one"):
        single_s = best_of(lambda: one_by_one(plain, data, ONE_BY_ONE_SAMPLE), 1)
    single_s *= REPORTS / ONE_BY_ONE_SAMPLE

    table = report.sheet(
        f"pktx bench rating: {REPORTS:,} reports (before and after rated, 4 "
        f"dimensions each), best of {repeat}",
        [
            WHAT,
            SECONDS,
            Column("reports_per_s", "reports/s", "reports/s", "{:,.0f}"),
            Column("target_s", "target", "s", "< {:g} s"),
        ],
    )
    table.add_row("columnar, int64 kernel", int64_s, REPORTS / int64_s, TARGET_S)
    table.add_row(
        "columnar, exact Python ints (fine prices, PB volumes)",
        python_s,
        REPORTS / python_s,
        None,
    )
    table.add_row(
        f"one by one (charge_for_report; {ONE_BY_ONE_SAMPLE:,} timed, scaled)",
        single_s,
        REPORTS / single_s,
        None,
    )
    report.check(f"{REPORTS:,} reports rated in < {TARGET_S:g} s", int64_s < TARGET_S)
    report.machine(numpy=np.__version__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main("rating", run))
