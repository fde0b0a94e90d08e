"""Timezone-aware UTC time: the only kind of datetime the broker stores or compares."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.errors import InvalidInput


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime, *, field: str = "time") -> datetime:
    """Return ``value`` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"expected a datetime, got {value!r}", field=field)
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidInput(
            f"{value.isoformat()} has no time zone; give one, e.g. '{value.isoformat()}Z'",
            field=field,
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise InvalidInput(
            f"{value.isoformat()} is outside the calendar once put in UTC (years 1..9999)",
            field=field,
        ) from None


def resolve_now(now: datetime | None) -> datetime:
    """The time an operation happens at: the caller's (tests, replays) or the clock's."""
    return utcnow() if now is None else as_utc(now, field="now")
