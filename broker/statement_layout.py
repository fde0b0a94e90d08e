"""Lay a statement out by a segmentation profile: nested groups, subtotals per currency, order.

`layout(statement, profile)` is pure: it takes the statement as a dict (its lines included) and
returns a frozen `Layout`. Every line lands in exactly one leaf group (a line is never split:
its service chain and its recipients group as a whole); subtotals are per currency, a group's
being the sum of its lines; the grand totals are the sum of all lines and must equal the
statement's own totals. The profile only decides the presentation, never an amount, so any two
profiles give the same totals to the minor unit. `broker.rendering` renders a layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_skeleton

from broker.currency import MINOR_DIGITS
from broker.errors import InvalidInput
from broker.profiles import DETAIL, KINDS, Profile
from broker.statement_words import words

CHAIN_JOIN = " > "  # a service chain, in its order: "anonymize > encrypt"
RECIPIENTS_JOIN = ", "  # a line's recipients, distinct and sorted by code point
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class Group:
    """One group at one level: its value of the grouping key, its subtotals per currency, and
    either sub-groups (every level but the last) or its lines (the last level)."""

    key: str  # the grouping key: "provider", "month", ...
    value: object  # str, tuple of str, date, or None (no device, no phone...)
    label: str  # as shown in the profile's language
    level: int  # 0 for the outermost groups
    expanded: bool  # detail: its contents are shown; summary: its subtotal only
    subtotals: Mapping[str, int]  # currency -> minor units, by currency code
    groups: tuple[Group, ...] = ()
    lines: tuple[Mapping, ...] = ()

    def iter_lines(self) -> Iterator[Mapping]:
        """Every line in this group, in the layout's order."""
        return _iter_lines(self.groups, self.lines)


@dataclass(frozen=True, slots=True)
class Layout:
    statement: Mapping  # the statement as given (header fields, lines)
    profile: Profile
    groups: tuple[Group, ...]  # empty when the profile groups by nothing
    lines: tuple[Mapping, ...]  # the sorted lines when ungrouped, else empty
    totals: Mapping[str, int]  # currency -> minor units, by currency code
    minor_digits: Mapping[str, int]  # currency -> the digits its lines were rated with

    def iter_lines(self) -> Iterator[Mapping]:
        """Every line of the statement, in the layout's order."""
        return _iter_lines(self.groups, self.lines)


def _iter_lines(groups: tuple[Group, ...], lines: tuple[Mapping, ...]) -> Iterator[Mapping]:
    if not groups:
        yield from lines
    for group in groups:
        yield from _iter_lines(group.groups, group.lines)


def layout(statement: Mapping, profile: Profile) -> Layout:
    """Group, total and order ``statement``'s lines as ``profile`` says."""
    lines = _checked_lines(statement)
    digits = _minor_digits(lines, statement)
    summed = _sum(lines)
    _check_totals(statement, summed)
    for code in statement.get("totals") or {}:
        summed.setdefault(code, 0)
    totals = _frozen(summed)
    ordered = _sorted_lines(lines, profile)
    if not profile.group_by:
        return Layout(statement, profile, (), tuple(ordered), totals, digits)
    zone = profile.zone
    keyers = [_GROUP_VALUE[key] for key in profile.group_by]
    values = [[keyer(line, zone) for keyer in keyers] for line in ordered]
    labeller = _Labeller(profile)
    currencies = tuple(sorted(totals))
    groups = _build(ordered, values, 0, profile, labeller, currencies, True)
    return Layout(statement, profile, groups, (), totals, digits)


# -- checks -------------------------------------------------------------------------------


def _checked_lines(statement: Mapping) -> list[Mapping]:
    if not isinstance(statement, Mapping):
        raise InvalidInput("a statement is a mapping", field="statement")
    lines = statement.get("lines")
    if not isinstance(lines, Sequence):
        raise InvalidInput("must be a list of lines", field="lines")
    seen: set[int] = set()
    for i, line in enumerate(lines):
        where = f"lines[{i}]"
        if not isinstance(line, Mapping):
            raise InvalidInput("a line is a mapping", field=where)
        for name in ("id", "amount_minor", "minor_digits"):
            value = line.get(name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"must be an int, got {value!r}", field=f"{where}.{name}")
        if line["id"] in seen:
            raise InvalidInput(f"line id {line['id']} is given twice", field=f"{where}.id")
        seen.add(line["id"])
        if not 0 <= line["minor_digits"] <= 18:
            raise InvalidInput(
                f"must be 0 to 18, got {line['minor_digits']}", field=f"{where}.minor_digits"
            )
        if not isinstance(line.get("currency"), str):
            raise InvalidInput("must be a currency code", field=f"{where}.currency")
        at = line.get("at")
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise InvalidInput(
                f"must be a timezone-aware datetime, got {at!r}", field=f"{where}.at"
            )
    return list(lines)


def _minor_digits(lines: list[Mapping], statement: Mapping) -> Mapping[str, int]:
    digits: dict[str, int] = {}
    for i, line in enumerate(lines):
        known = digits.setdefault(line["currency"], line["minor_digits"])
        if known != line["minor_digits"]:
            raise InvalidInput(
                f"{line['currency']} lines disagree on minor digits "
                f"({known} and {line['minor_digits']}): their minor units cannot "
                f"be added",
                field=f"lines[{i}].minor_digits",
            )
    for code in statement.get("totals") or {}:  # a total without lines: ISO's digits
        digits.setdefault(code, MINOR_DIGITS.get(code, 2))
    return _frozen(digits)


def _check_totals(statement: Mapping, totals: Mapping[str, int]) -> None:
    given = statement.get("totals") or {}
    for code in sorted(set(given) | set(totals)):
        if given.get(code, 0) != totals.get(code, 0):
            raise InvalidInput(
                f"the statement's total {given.get(code, 0)} is not the sum of "
                f"its {code} lines ({totals.get(code, 0)})",
                field=f"totals.{code}",
            )


def _sum(lines: Sequence[Mapping]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for line in lines:
        sums[line["currency"]] = sums.get(line["currency"], 0) + line["amount_minor"]
    return sums


def _frozen(sums: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(sums.items())))


# -- grouping ------------------------------------------------------------------------------


def recipients(line: Mapping) -> tuple[str, ...] | None:
    """A line's recipients as one value: distinct, sorted by code point (None when none)."""
    found = tuple(sorted({str(r) for r in line.get("recipients") or ()}))
    return found or None


def chain(line: Mapping) -> tuple[str, ...] | None:
    """A line's service chain, in its order (None when it names none)."""
    return tuple(line.get("services") or ()) or None


def _local_date(line: Mapping, zone: ZoneInfo) -> date:
    return line["at"].astimezone(zone).date()


def _week(line: Mapping, zone: ZoneInfo) -> date:
    year, week, _ = _local_date(line, zone).isocalendar()
    return date.fromisocalendar(year, week, 1)  # the Monday that starts the ISO week


def _month(line: Mapping, zone: ZoneInfo) -> date:
    return _local_date(line, zone).replace(day=1)


# A line's value for each grouping key; None groups as "(none)".
_GROUP_VALUE: dict[str, Callable[[Mapping, ZoneInfo], object]] = {
    "provider": lambda line, _zone: line.get("provider"),
    "network": lambda line, _zone: line.get("network"),
    "service": lambda line, _zone: chain(line),
    "device": lambda line, _zone: line.get("device"),
    "phone": lambda line, _zone: line.get("phone"),
    "recipient": lambda line, _zone: recipients(line),
    "kind": lambda line, _zone: line.get("kind"),
    "day": _local_date,
    "week": _week,
    "month": _month,
}


def _natural(key: str, value: Any) -> tuple:
    """The default order of groups: by value, kinds in their own order, "(none)" last."""
    if value is None:
        return (1,)
    if key == "kind":
        return (0, _KIND_ORDER.get(value, len(_KIND_ORDER)), str(value))
    return (0, value)


class _Labeller:
    """Group labels in the profile's language, made once per distinct value."""

    def __init__(self, profile: Profile) -> None:
        self.locale = profile.babel_locale
        self.words = words(self.locale.language)
        self.cache: dict[tuple[str, object], str] = {}

    def __call__(self, key: str, value: object) -> str:
        found = self.cache.get((key, value))
        if found is None:
            found = self.cache[(key, value)] = self._make(key, value)
        return found

    def _make(self, key: str, value: Any) -> str:  # its type follows from the key
        if value is None:
            return self.words["none"]
        if key == "service":
            return CHAIN_JOIN.join(value)
        if key == "recipient":
            return RECIPIENTS_JOIN.join(value)
        if key == "day":
            return format_date(value, "medium", locale=self.locale)
        if key == "week":
            year, week, _ = value.isocalendar()
            return self.words["week"].format(week=week, year=year)
        if key == "month":
            return format_skeleton("yMMMM", value, locale=self.locale)
        return str(value)


def _build(
    lines: list[Mapping],
    values: list[list[object]],
    level: int,
    profile: Profile,
    labeller: _Labeller,
    currencies: tuple[str, ...],
    parent_expanded: bool,
) -> tuple[Group, ...]:
    key = profile.group_by[level]
    buckets: dict[object, tuple[list[Mapping], list[list[object]]]] = {}
    for line, row in zip(lines, values):
        bucket = buckets.get(row[level])
        if bucket is None:
            bucket = buckets[row[level]] = ([], [])
        bucket[0].append(line)
        bucket[1].append(row)
    expanded = parent_expanded and profile.detail[level] == DETAIL
    last = level == len(profile.group_by) - 1
    groups = []
    for value, (members, rows) in buckets.items():
        if last:
            subtotals = _frozen(_sum(members))
            group = Group(
                key, value, labeller(key, value), level, expanded, subtotals, lines=tuple(members)
            )
        else:
            children = _build(members, rows, level + 1, profile, labeller, currencies, expanded)
            sums: dict[str, int] = {}
            for child in children:
                for code, minor in child.subtotals.items():
                    sums[code] = sums.get(code, 0) + minor
            group = Group(
                key, value, labeller(key, value), level, expanded, _frozen(sums), groups=children
            )
        groups.append(group)
    return tuple(_sorted_groups(groups, key, profile, currencies))


# -- order -------------------------------------------------------------------------------


def _amount(line: Mapping) -> Decimal:
    return Decimal(line["amount_minor"]).scaleb(-line["minor_digits"])


# A line's value for each sort key; None sorts last whatever the order.
_SORT_VALUE: dict[str, Callable[[Mapping], object]] = {
    "date": lambda line: line["at"],
    "provider": lambda line: line.get("provider"),
    "network": lambda line: line.get("network"),
    "service": chain,
    "device": lambda line: line.get("device"),
    "phone": lambda line: line.get("phone"),
    "recipient": recipients,
    "kind": lambda line: _natural("kind", line.get("kind")),
    "quantity": lambda line: line.get("quantity"),
    "amount": _amount,
    "description": lambda line: line.get("description"),
}


def _sorted_lines(lines: list[Mapping], profile: Profile) -> list[Mapping]:
    """Sorted by the profile's keys, ties by line id: one stable sort per key, last key first
    (Python's sort is stable in both directions)."""
    ordered = sorted(lines, key=lambda line: line["id"])
    for sort in reversed(profile.sort):
        value = _SORT_VALUE[sort.key]
        if sort.descending:
            ordered.sort(key=partial(_sort_key, _none_first, value), reverse=True)
        else:
            ordered.sort(key=partial(_sort_key, _none_last, value))
    return ordered


def _sort_key(
    wrap: Callable[[object], tuple], value: Callable[[Mapping], object], line: Mapping
) -> tuple:
    return wrap(value(line))


def _none_last(value: object) -> tuple:
    return (1,) if value is None else (0, value)


def _none_first(value: object) -> tuple:  # reversed, it puts None last
    return (0,) if value is None else (1, value)


def _sorted_groups(
    groups: list[Group], key: str, profile: Profile, currencies: tuple[str, ...]
) -> list[Group]:
    """Groups in their natural order, then by the sort keys that apply to a group: `amount`
    (its subtotals, currency by currency in code order, 0 where it has none) and its own key
    (`date` for day, week and month)."""
    ordered = sorted(groups, key=lambda g: _natural(key, g.value))
    for sort in reversed(profile.sort):
        if sort.key == "amount":

            def value(g: Group) -> tuple:
                return tuple(g.subtotals.get(code, 0) for code in currencies)
        elif sort.key == key or (sort.key == "date" and key in ("day", "week", "month")):

            def value(g: Group) -> tuple:
                return _natural(key, g.value)
        else:
            continue
        ordered.sort(key=value, reverse=sort.descending)
        if sort.descending and sort.key != "amount":
            # "(none)" stays last in either direction
            ordered.sort(key=lambda g: g.value is None)
    return ordered
