"""The measured delivery record: each finished job judged against its award, and per provider.

A daemon finishing a job sends what it measured (bytes, packets, min-rate windows and how many
it met, when delivery started and ended, errors). The job is judged against its award:

- **windows met**: the share of min-rate windows at or above the award's min rate (a job
  without windows, e.g. no min rate, meets all of none: share 1);
- **block honoured**: for a block of time, delivery started no later than ``starts_at +
  GRACE`` and ended no earlier than ``ends_at`` or delivered the volume (``volume_bytes``, else
  ``data_cap_bytes``); for a volume, the volume was delivered; a failed job never honoured it;
- **score**: the job's evidence in millionths, the windows-met share, halved when the block
  was not honoured, 0 for a failed job.

Per provider the record is the count of measured jobs, the windows-met share over all their
windows, the honoured share and the failed share; the auction's close adds the jobs' scores to
the ratings' Beta evidence at `ReputationPolicy.measured_weight` (docs/daemon.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Integer, Select, case, func, select
from sqlalchemy.orm import Session

from broker.bounds import check_int
from broker.clock import as_utc
from broker.errors import InvalidInput
from broker.models import Award, JobMeasurement

PPM = 1_000_000
# How late after its block's start a delivery may begin and still honour the block.
GRACE = timedelta(seconds=30)
MEASURED = ("bytes", "packets", "windows", "windows_met", "errors")


def judge(award: Award, measured: Mapping, *, outcome: str) -> dict:
    """The columns of a `JobMeasurement` (but the job's ids) for ``measured`` of ``award``."""
    counts = {c: check_int(measured.get(c, 0), field=f"measured.{c}") for c in MEASURED}
    if counts["windows_met"] > counts["windows"]:
        raise InvalidInput(
            f"{counts['windows_met']} windows met of {counts['windows']}",
            field="measured.windows_met",
        )
    started, ended = (
        None if measured.get(k) is None else as_utc(measured[k], field=f"measured.{k}")
        for k in ("started_at", "ended_at")
    )
    if started is not None and ended is not None and ended < started:
        raise InvalidInput(
            f"{ended.isoformat()} is before started_at {started.isoformat()}",
            field="measured.ended_at",
        )
    volume = award.volume_bytes if award.volume_bytes is not None else award.data_cap_bytes
    delivered = volume is not None and counts["bytes"] >= volume
    if outcome == "failed":
        honoured = False
    elif award.starts_at is not None:
        on_time = started is not None and started <= award.starts_at + GRACE
        assert award.ends_at is not None  # a block has both ends
        honoured = on_time and (delivered or (ended is not None and ended >= award.ends_at))
    else:
        honoured = delivered or volume is None
    windows, met = counts["windows"], counts["windows_met"]
    score = 0 if outcome == "failed" else (met * PPM // windows if windows else PPM)
    if not honoured:
        score //= 2
    return {
        **counts,
        "outcome": outcome,
        "started_at": started,
        "ended_at": ended,
        "honoured": honoured,
        "score_ppm": score,
    }


def measurement_view(row: JobMeasurement | None, award: Award | None = None) -> dict | None:
    if row is None:
        return None
    volume = (
        None
        if award is None
        else (award.volume_bytes if award.volume_bytes is not None else award.data_cap_bytes)
    )
    return {
        "outcome": row.outcome,
        "token": row.token,
        "bytes": row.bytes,
        "packets": row.packets,
        "windows": row.windows,
        "windows_met": row.windows_met,
        "windows_met_share": _share(row.windows_met, row.windows),
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "errors": row.errors,
        "error": row.error,
        "block_honoured": row.honoured,
        "volume_share": None if not volume else min(1.0, row.bytes / volume),
        "score": row.score_ppm / PPM,
    }


def _share(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 6)


@dataclass(frozen=True)
class DeliveryRecord:
    """A provider's measured jobs: how many, their windows, honoured blocks, failures."""

    jobs: int = 0
    windows: int = 0
    windows_met: int = 0
    honoured: int = 0
    failed: int = 0
    score_ppm_sum: int = 0

    @property
    def summary(self) -> str:
        if not self.jobs:
            return "no measured deliveries yet"
        jobs = f"{self.jobs} job{'s' if self.jobs != 1 else ''}"
        if self.windows:
            said = (
                f"met its minimum rate in {100 * self.windows_met / self.windows:.1f}% of "
                f"windows over {jobs}"
            )
        else:
            said = f"{jobs} measured without min-rate windows"
        said += f"; honoured the block in {100 * self.honoured / self.jobs:.1f}%"
        return said + (f"; {self.failed} failed" if self.failed else "")

    def as_dict(self) -> dict:
        return {
            "jobs": self.jobs,
            "windows": self.windows,
            "windows_met": self.windows_met,
            "windows_met_share": _share(self.windows_met, self.windows),
            "block_honoured_share": _share(self.honoured, self.jobs),
            "failed_share": _share(self.failed, self.jobs),
            "summary": self.summary,
        }


_AGGREGATE = (
    JobMeasurement.provider_id,
    func.count(),
    func.sum(JobMeasurement.windows),
    func.sum(JobMeasurement.windows_met),
    func.sum(case((JobMeasurement.honoured, 1), else_=0).cast(Integer)),
    func.sum(case((JobMeasurement.outcome == "failed", 1), else_=0).cast(Integer)),
    func.sum(JobMeasurement.score_ppm),
)


def delivery_records(
    session: Session, provider_ids: Iterable[int] | Select
) -> dict[int, DeliveryRecord]:
    """Each provider's record (an empty one for a provider without measured jobs); one query.
    ``provider_ids`` may be a SELECT of ids, run inside the query."""
    session.flush()
    if isinstance(provider_ids, Select):
        wanted = session.execute(provider_ids).scalars().all()
        where = JobMeasurement.provider_id.in_(provider_ids.scalar_subquery())
    else:
        wanted = list(provider_ids)
        where = JobMeasurement.provider_id.in_(wanted)
    records = {p: DeliveryRecord() for p in wanted}
    for provider, *sums in session.execute(
        select(*_AGGREGATE).where(where).group_by(JobMeasurement.provider_id)
    ):
        records[provider] = DeliveryRecord(*(int(v or 0) for v in sums))
    return records


def measured_evidence(
    session: Session, providers: np.ndarray, weight: float, ids_query: Select | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The measured record of ``providers`` (sorted ids; ``ids_query`` a SELECT of the same,
    run inside the query instead of a long IN list) as Beta evidence at ``weight`` per job:
    (positive, negative) arrays, the jobs' scores and their complements."""
    positive = np.zeros(len(providers), dtype=np.float64)
    negative = np.zeros(len(providers), dtype=np.float64)
    if not weight or not len(providers):
        return positive, negative
    records = delivery_records(session, providers.tolist() if ids_query is None else ids_query)
    for i, provider in enumerate(providers.tolist()):
        record = records.get(provider)
        if record is not None and record.jobs:
            positive[i] = weight * record.score_ppm_sum / PPM
            negative[i] = weight * (record.jobs - record.score_ppm_sum / PPM)
    return positive, negative


def weekly_records(
    session: Session, provider_id: int, *, now: datetime, weeks: int
) -> list[tuple[int, DeliveryRecord]]:
    """``provider_id``'s record week by week: (weeks back from ``now``, 0 the week ending now,
    the record of the jobs judged in that week), oldest first; a week without jobs has an
    empty record. A job counts in the week the broker judged it (its measurement's time)."""
    start = now - timedelta(weeks=weeks + 1)
    sums: dict[int, list[int]] = {back: [0] * 6 for back in range(weeks, -1, -1)}
    rows = session.execute(
        select(
            JobMeasurement.created_at,
            JobMeasurement.windows,
            JobMeasurement.windows_met,
            JobMeasurement.honoured,
            JobMeasurement.outcome,
            JobMeasurement.score_ppm,
        ).where(
            JobMeasurement.provider_id == provider_id,
            JobMeasurement.created_at > start,
            JobMeasurement.created_at <= now,
        )
    )
    for at, windows, met, honoured, outcome, score in rows:
        back = (now - as_utc(at)) // timedelta(weeks=1)
        if back in sums:
            for i, value in enumerate(
                (1, windows, met, int(honoured), int(outcome == "failed"), score)
            ):
                sums[back][i] += value
    return [(back, DeliveryRecord(*sums[back])) for back in sums]
