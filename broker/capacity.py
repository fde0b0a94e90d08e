"""Spare capacity: what a provider can still promise over a span of time.

A provider of capacity C has promised its active awards their rates over their blocks; over a
span ``[start, end)`` it has ``C - peak`` to spare, where ``peak`` is the highest sum of the
rates of the awards running at any one instant of the span (not the sum of every award that
touches the span: two awards one after the other never run together). A volume award has no
block: it runs until delivered, so it counts over every span.
"""

from __future__ import annotations

from datetime import datetime
from typing import overload

from sqlalchemy import Connection, bindparam, func, or_, select
from sqlalchemy.orm import Session

from broker.models import Award

_RATE = func.coalesce(Award.max_rate_bps, Award.min_rate_bps, 0)


def _overlapping(bounded: bool):
    conditions = [
        Award.provider_id == bindparam("provider"),
        Award.status == "active",
        or_(Award.ends_at.is_(None), Award.ends_at > bindparam("start")),
    ]
    if bounded:
        conditions.append(or_(Award.starts_at.is_(None), Award.starts_at < bindparam("end")))
    return select(_RATE, Award.starts_at, Award.ends_at).where(*conditions)


# Built once: eligibility is checked on every bid, the broker's most frequent write.
_OVERLAPPING = {False: _overlapping(False), True: _overlapping(True)}


def peak_of(intervals, start: datetime, end: datetime | None) -> int:
    """The highest sum of rates at one instant of ``[start, end)`` (``end`` None: unbounded),
    over ``(rate, starts_at, ends_at)`` intervals, each half-open (None: unbounded)."""
    events: list[tuple[int, int, datetime | None, int]] = []
    for rate, s, e in intervals:
        if not rate:
            continue
        s = start if s is None or s < start else s
        if end is not None and e is not None and e > end:
            e = end
        if e is not None and e <= s:
            continue
        # At one instant an interval ending sorts before one starting: half-open spans that
        # only touch never run together.
        events.append((0, 1, s, rate))
        if e is not None:
            events.append((0, 0, e, -rate))
    events.sort(key=lambda ev: (ev[2], ev[1]))
    load = peak = 0
    for _, _, _, delta in events:
        load += delta
        peak = max(peak, load)
    return peak


def committed_bps(
    session: Session | Connection,
    provider_id: int,
    starts_at: datetime | None,
    ends_at: datetime | None,
    now: datetime,
) -> int:
    """The peak rate a provider's active awards take at one instant of ``[starts_at, ends_at)``.

    A volume request (no block) runs from now until delivered: it overlaps everything that has
    not ended.
    """
    start = starts_at or now
    params = {"provider": provider_id, "start": start}
    if ends_at is not None:
        params["end"] = ends_at
    rows = session.execute(_OVERLAPPING[ends_at is not None], params).all()
    return peak_of(rows, start, ends_at)


@overload
def share_rate(rate: int, shares: int) -> int: ...
@overload
def share_rate(rate: None, shares: int) -> None: ...
def share_rate(rate: int | None, shares: int) -> int | None:
    """One of ``shares`` equal shares of ``rate`` bit/s, rounded up (None stays None)."""
    return None if rate is None else -(-rate // shares)
