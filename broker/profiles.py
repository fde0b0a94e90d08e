"""A user's segmentation profile (claim c12): how the charges of a statement are presented.

A profile is a JSON document validated into a frozen `Profile`: the grouping keys (nested, at
most `MAX_LEVELS`), detail or summary per level, the columns of a line, the sort order, and the
locale and time zone that numbers, money and dates are shown in. `broker.statement_layout` lays
a statement out by one; `broker.rendering` turns the layout into JSON, text, HTML or PDF. A
profile never changes an amount: any two profiles give the same totals to the minor unit.

Every fault raises `InvalidInput` naming the field by its dotted path in the JSON form
(``group_by[2]``, ``sort[0].order``, ``locale``). docs/billing.md ("Profiles") is the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from broker.errors import InvalidInput

# What a line can be grouped by. `day`, `week` (ISO 8601) and `month` are of the line's time in
# the profile's time zone; the others are fields of the line (`service` is the whole chain,
# `recipient` all of a line's recipients together: a line is never split between groups).
GROUP_KEYS: tuple[str, ...] = (
    "provider",
    "network",
    "service",
    "device",
    "phone",
    "recipient",
    "kind",
    "day",
    "week",
    "month",
)
# What a line row can show; `amount` is always one of them (subtotals and totals need it).
COLUMNS: tuple[str, ...] = (
    "date",
    "provider",
    "network",
    "service",
    "device",
    "phone",
    "recipient",
    "kind",
    "quantity",
    "amount",
    "description",
)
SORT_KEYS: tuple[str, ...] = COLUMNS
# The kinds of a statement line, in the order their groups are shown by default.
KINDS: tuple[str, ...] = (
    "price",
    "void",
    "connect",
    "bytes",
    "seconds",
    "packets",
    "reserved_bps_seconds",
    "credit",
)
DETAIL, SUMMARY = "detail", "summary"
ASC, DESC = "asc", "desc"

DEFAULT_COLUMNS: tuple[str, ...] = ("date", "provider", "service", "kind", "quantity", "amount")

MAX_LEVELS = 8
MAX_NAME = 100
_FIELDS = ("name", "group_by", "detail", "columns", "sort", "locale", "timezone")


@dataclass(frozen=True, slots=True)
class SortKey:
    key: str
    order: str = ASC

    @property
    def descending(self) -> bool:
        return self.order == DESC


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated segmentation profile; build one with `Profile.from_json` (or the
    constructor, which checks the same way and takes sort entries as `SortKey` or dicts)."""

    name: str
    group_by: tuple[str, ...] = ("provider",)
    detail: tuple[str, ...] | str = DETAIL  # normalized to one per level of group_by
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    sort: tuple[SortKey, ...] = (SortKey("date"),)
    locale: str = "en_US"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        raw = {name: getattr(self, name) for name in _FIELDS}
        raw["sort"] = [
            {"key": s.key, "order": s.order} if isinstance(s, SortKey) else s for s in self.sort
        ]
        checked = _check(raw)
        for name in _FIELDS:  # normalized forms: a detail string per level, locale "de_DE"
            object.__setattr__(self, name, getattr(checked, name))

    @classmethod
    def from_json(cls, doc: object) -> Profile:
        """Validate the JSON form; `InvalidInput` names the faulty field."""
        return _check(doc)

    def to_json(self) -> dict:
        """The JSON form with plain types; ``from_json(p.to_json()) == p``."""
        detail = self.detail if isinstance(self.detail, str) else list(self.detail)
        return {
            "name": self.name,
            "group_by": list(self.group_by),
            "detail": detail,
            "columns": list(self.columns),
            "sort": [{"key": s.key, "order": s.order} for s in self.sort],
            "locale": self.locale,
            "timezone": self.timezone,
        }

    @property
    def babel_locale(self) -> Locale:
        return _locale(self.locale)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _check(doc: object) -> Profile:
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"a profile is a JSON object, got {type(doc).__name__}", field="profile")
    for name in doc:
        if name not in _FIELDS:
            raise InvalidInput(
                f"unknown field; a profile has {', '.join(_FIELDS)}", field=str(name)
            )
    if "name" not in doc:
        raise InvalidInput("a profile needs a name", field="name")
    name = _name(doc["name"])
    group_by = _names(
        doc.get("group_by", ["provider"]),
        GROUP_KEYS,
        "group_by",
        low=0,
        high=MAX_LEVELS,
        what="grouping key",
    )
    detail = _detail(doc.get("detail", DETAIL), len(group_by))
    columns = _names(
        doc.get("columns", list(DEFAULT_COLUMNS)),
        COLUMNS,
        "columns",
        low=1,
        high=len(COLUMNS),
        what="column",
    )
    if "amount" not in columns:
        raise InvalidInput(
            "the columns must include amount (subtotals and totals are shown in it)",
            field="columns",
        )
    sort = _sort(doc.get("sort", [{"key": "date"}]))
    locale = _locale_name(doc.get("locale", "en_US"))
    timezone = _timezone(doc.get("timezone", "UTC"))
    profile = object.__new__(Profile)
    for key, value in (
        ("name", name),
        ("group_by", group_by),
        ("detail", detail),
        ("columns", columns),
        ("sort", sort),
        ("locale", locale),
        ("timezone", timezone),
    ):
        object.__setattr__(profile, key, value)
    return profile


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"must be a non-empty string, got {value!r}", field="name")
    value = value.strip()
    if len(value) > MAX_NAME:
        raise InvalidInput(f"must be at most {MAX_NAME} characters, got {len(value)}", field="name")
    if any(not ch.isprintable() for ch in value):
        raise InvalidInput("must not contain control characters", field="name")
    return value


def _names(
    value: object, allowed: Sequence[str], field: str, *, low: int, high: int, what: str
) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInput(f"must be a list of {what}s, got {value!r}", field=field)
    if not low <= len(value) <= high:
        raise InvalidInput(f"must have {low} to {high} entries, got {len(value)}", field=field)
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in allowed:
            raise InvalidInput(
                f"unknown {what} {item!r}; known: {', '.join(allowed)}", field=f"{field}[{i}]"
            )
        if item in seen:
            raise InvalidInput(f"{item!r} is given twice", field=f"{field}[{i}]")
        seen.add(item)
    return tuple(value)


def _detail(value: object, levels: int) -> tuple[str, ...]:
    if isinstance(value, str):
        if value not in (DETAIL, SUMMARY):
            raise InvalidInput(
                f"must be 'detail' or 'summary' (or a list of them, one per "
                f"level of group_by), got {value!r}",
                field="detail",
            )
        return (value,) * levels
    if not isinstance(value, Sequence):
        raise InvalidInput(
            f"must be 'detail', 'summary' or a list of them, got {value!r}", field="detail"
        )
    if len(value) != levels:
        raise InvalidInput(
            f"needs one entry per level of group_by ({levels}), got {len(value)}", field="detail"
        )
    for i, item in enumerate(value):
        if item not in (DETAIL, SUMMARY):
            raise InvalidInput(f"must be 'detail' or 'summary', got {item!r}", field=f"detail[{i}]")
    return tuple(value)


def _sort(value: object) -> tuple[SortKey, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidInput(
            f"must be a list of {{'key': ..., 'order': 'asc'|'desc'}}, got {value!r}", field="sort"
        )
    if len(value) > len(SORT_KEYS):
        raise InvalidInput(
            f"must have at most {len(SORT_KEYS)} entries, got {len(value)}", field="sort"
        )
    keys: list[SortKey] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InvalidInput(
                f"must be an object {{'key': ..., 'order': ...}}, got {item!r}", field=f"sort[{i}]"
            )
        for extra in item:
            if extra not in ("key", "order"):
                raise InvalidInput(
                    "unknown field; a sort entry has key and order", field=f"sort[{i}].{extra}"
                )
        key, order = item.get("key"), item.get("order", ASC)
        if not isinstance(key, str) or key not in SORT_KEYS:
            raise InvalidInput(
                f"unknown sort key {key!r}; known: {', '.join(SORT_KEYS)}", field=f"sort[{i}].key"
            )
        if any(k.key == key for k in keys):
            raise InvalidInput(f"{key!r} is sorted by twice", field=f"sort[{i}].key")
        if order not in (ASC, DESC):
            raise InvalidInput(f"must be 'asc' or 'desc', got {order!r}", field=f"sort[{i}].order")
        keys.append(SortKey(key, order))
    return tuple(keys)


@lru_cache(maxsize=256)
def _locale(name: str) -> Locale:
    return Locale.parse(name, sep="-" if "-" in name else "_")


def _locale_name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 50:
        raise InvalidInput(
            f"must be a locale identifier such as 'de_DE', got {value!r}", field="locale"
        )
    try:
        return str(_locale(value))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"unknown locale {value!r} ({exc}); give one such as 'de_DE'", field="locale"
        ) from None


def _timezone(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 100:
        raise InvalidInput(
            f"must be an IANA time zone such as 'Europe/Berlin', got {value!r}", field="timezone"
        )
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise InvalidInput(
            f"unknown time zone {value!r}; give one such as 'Europe/Berlin'", field="timezone"
        ) from None
    return value


# The profile a statement is shown with when its user saved none: by delivering provider,
# every line, US English, UTC.
DEFAULT_PROFILE = Profile.from_json(
    {
        "name": "default",
        "group_by": ["provider"],
        "detail": DETAIL,
        "locale": "en_US",
        "timezone": "UTC",
    }
)
