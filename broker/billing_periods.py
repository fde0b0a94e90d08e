"""Billing periods: named by the month they start in, ``period_months`` long, starting on the
home provider's cut-off day at midnight in its time zone (docs/billing.md, "Periods")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from broker.errors import InvalidInput

PERIOD_MONTHS = (1, 2, 3, 4, 6, 12)
_NAME = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class Period:
    name: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInput(f"not an IANA time zone: {name!r}", field=field) from None


def check_settings(period_months: int, cutoff_day: int, timezone: str) -> None:
    if period_months not in PERIOD_MONTHS:
        raise InvalidInput(f"a period is one of {PERIOD_MONTHS} months", field="period_months")
    if not 1 <= cutoff_day <= 28:
        raise InvalidInput("the cut-off day is 1..28 (every month has it)", field="cutoff_day")
    zone(timezone)


def _month_start(year: int, month: int, cutoff_day: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, cutoff_day, tzinfo=tz).astimezone(UTC)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def period_named(
    name: str, *, period_months: int = 1, cutoff_day: int = 1, timezone: str = "UTC"
) -> Period:
    """The period called ``name`` (``YYYY-MM``, the month it starts in)."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise InvalidInput(f"a period is named YYYY-MM, not {name!r}", field="period")
    year, month = int(match[1]), int(match[2])
    if not (1 <= month <= 12 and 1970 <= year <= 9998):
        raise InvalidInput(f"no such month: {name}", field="period")
    if (month - 1) % period_months:
        starts = ", ".join(f"{m:02d}" for m in range(1, 13, period_months))
        raise InvalidInput(
            f"periods of {period_months} months start in months {starts}", field="period"
        )
    tz = zone(timezone)
    start = _month_start(year, month, cutoff_day, tz)
    end = _month_start(*_add_months(year, month, period_months), cutoff_day, tz)
    return Period(name, start, end)


def period_containing(
    at: datetime, *, period_months: int = 1, cutoff_day: int = 1, timezone: str = "UTC"
) -> Period:
    """The period that ``at`` (aware) falls in."""
    local = at.astimezone(zone(timezone))
    year, month = local.year, local.month
    if local.day < cutoff_day:
        year, month = _add_months(year, month, -1)
    year, month = _add_months(year, month, -((month - 1) % period_months))
    period = period_named(
        f"{year:04d}-{month:02d}",
        period_months=period_months,
        cutoff_day=cutoff_day,
        timezone=timezone,
    )
    assert period.start <= at < period.end, (at, period)
    return period
