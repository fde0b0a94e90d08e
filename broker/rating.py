"""Rating: what cumulative usage costs under a tariff, exact until each line is rounded once.

A job's usage is reported as running totals. Each total is rated whole (`rate`): one line per
priced dimension plus the connect fee, each line computed with `Fraction` s and rounded once to
the currency's minor unit. A report is charged the rated total after it minus the rated total
before it (`charge_for_report`), so however usage is split into reports the charges add up to
the rating of the final total, and a report repeated is charged nothing the second time.
`rate_columns` and `charges_for_reports` do the same for many totals at once on numpy arrays.
The rules are in docs/billing.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import cast

import numpy as np

from broker.bounds import INT64_MAX, check_int, check_product
from broker.currency import Money
from broker.errors import InvalidInput
from broker.tariffs import DIMENSIONS, GRADUATED, DimensionPrice, Tariff

CONNECT = "connect"

Usage = Mapping[str, int]


@dataclass(frozen=True)
class Line:
    """One line of a rating: the connect fee or one dimension's charge."""

    name: str
    usage: int  # the cumulative usage rated (0 for the connect fee)
    units: int  # usage rounded up to whole increments
    exact_minor: Fraction  # the price before min/max and rounding, in minor units
    minor: int  # what is charged: clamped to min/max, rounded once


@dataclass(frozen=True)
class Rated:
    """A cumulative usage rated under one tariff version."""

    currency: str
    version: int
    lines: tuple[Line, ...]

    @property
    def minor(self) -> int:
        return sum(line.minor for line in self.lines)

    @property
    def money(self) -> Money:
        return Money(self.minor, self.currency)

    def line(self, name: str) -> Line | None:
        return next((ln for ln in self.lines if ln.name == name), None)


@dataclass(frozen=True)
class Charge:
    """What one report adds: per line, and in all (negative only under volume tiers)."""

    currency: str
    lines: tuple[tuple[str, int], ...]
    minor: int

    @property
    def money(self) -> Money:
        return Money(self.minor, self.currency)


def round_minor(value: Fraction, rule: str) -> int:
    """``value`` (minor units, not negative) to a whole minor unit by ``rule``."""
    q, r = divmod(value.numerator, value.denominator)
    d = value.denominator
    if rule == "down" or r == 0:
        return q
    if rule == "up":
        return q + 1
    if rule == "half-up":
        return q + (2 * r >= d)
    if rule == "half-even":
        return q + (2 * r > d or (2 * r == d and q % 2 == 1))
    raise InvalidInput(f"unknown rounding rule {rule!r}", field="rounding")


def charged_units(dim: DimensionPrice, usage: int) -> int:
    """``usage`` rounded up: nothing stays nothing; else at least the first increment, and
    whole increments after it."""
    if usage == 0:
        return 0
    first = dim.first_increment
    assert first is not None  # DimensionPrice sets it (to the increment when not given)
    over = max(usage - first, 0)
    return first + -(-over // dim.increment) * dim.increment


def _exact_minor(dim: DimensionPrice, units: int, digits: int) -> Fraction:
    per_unit = Fraction(10**digits, dim.rate_unit)
    if dim.tiering == GRADUATED:
        total, low = Fraction(0), 0
        for tier in dim.tiers:
            high = units if tier.up_to is None else min(units, tier.up_to)
            if high > low:
                total += (high - low) * Fraction(tier.price)
            low = high if tier.up_to is None else tier.up_to
        return total * per_unit
    reached = next(t for t in dim.tiers if t.up_to is None or units <= t.up_to)
    return units * Fraction(reached.price) * per_unit


def _minor_bounds(tariff: Tariff, dim: DimensionPrice) -> tuple[int, int | None]:
    scale = 10**tariff.minor_digits
    low = int(dim.minimum * scale)
    return low, None if dim.maximum is None else int(dim.maximum * scale)


def check_usage(usage: object, *, field: str = "usage") -> dict[str, int]:
    """A cumulative usage: dimension name -> whole base units in 0..2**63-1 (missing: 0)."""
    if not isinstance(usage, Mapping):
        raise InvalidInput(f"must be an object of dimension -> count, got {usage!r}", field=field)
    checked = dict.fromkeys(DIMENSIONS, 0)
    for name, value in usage.items():
        if name not in DIMENSIONS:
            raise InvalidInput(
                f"unknown dimension; known: {', '.join(DIMENSIONS)}", field=f"{field}.{name}"
            )
        checked[name] = check_int(value, field=f"{field}.{name}")
    return checked


def rate(tariff: Tariff, usage: Usage, *, field: str = "usage") -> Rated:
    """Rate a cumulative usage: the connect fee, then one line per dimension the tariff prices.

    A dimension with no usage has a line of 0 (its minimum applies only to some usage). A line
    or total past 64 bits of minor units is an `InvalidInput` naming the usage that drives it.
    """
    usage = check_usage(usage, field=field)
    digits = tariff.minor_digits
    fee = int(tariff.connect_fee.scaleb(digits))
    lines = [Line(CONNECT, 0, 0, Fraction(fee), fee)]
    for dim in tariff.dimensions:
        used = usage[dim.name]
        units = charged_units(dim, used)
        exact = _exact_minor(dim, units, digits)
        minor = 0
        if used:
            low, high = _minor_bounds(tariff, dim)
            # min and max are whole minor units, so clamping after the rounding is the same as
            # clamping before it (rounding is monotone and leaves whole units alone)
            minor = max(round_minor(exact, tariff.rounding), low)
            minor = minor if high is None else min(minor, high)
        check_product(minor, field=f"{field}.{dim.name}", what=f"the {dim.name} line")
        lines.append(Line(dim.name, used, units, exact, minor))
    rated = Rated(tariff.currency, tariff.version, tuple(lines))
    check_product(rated.minor, field=field, what="the rated total")
    return rated


def charge_for_report(tariff: Tariff, before: Usage | None, after: Usage) -> Charge:
    """The charge of a report that brings a job's cumulative usage from ``before`` (None: no
    report before it, so the connect fee is charged now) to ``after``: rated(after) -
    rated(before), line by line. Cumulative usage never goes down."""
    rated_after = rate(tariff, after, field="after")
    if before is None:
        return Charge(
            tariff.currency,
            tuple((ln.name, ln.minor) for ln in rated_after.lines),
            rated_after.minor,
        )
    rated_before = rate(tariff, before, field="before")
    previous, current = check_usage(before, field="before"), check_usage(after, field="after")
    for name in DIMENSIONS:
        if current[name] < previous[name]:
            raise InvalidInput(
                f"cumulative usage went down from {previous[name]} to {current[name]}",
                field=f"after.{name}",
            )
    # the connect fee is in both totals, so its line comes to 0: it was charged once, before
    lines = tuple(
        (a.name, a.minor - b.minor)
        for a, b in zip(rated_after.lines, rated_before.lines, strict=True)
    )
    return Charge(tariff.currency, lines, sum(minor for _, minor in lines))


# ---- many usages at once ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """One dimension compiled to integers: minor units * ``denominator`` per base unit."""

    name: str
    first: int
    increment: int
    graduated: bool
    lows: tuple[int, ...]
    highs: tuple[int | None, ...]
    coefficients: tuple[int, ...]
    denominator: int
    minimum: int
    maximum: int | None


@lru_cache(maxsize=1024)  # a server rates under few tariffs at a time
def _plans(tariff: Tariff) -> tuple[_Plan, ...]:
    plans = []
    for dim in tariff.dimensions:
        per_unit = [Fraction(t.price) * 10**tariff.minor_digits / dim.rate_unit for t in dim.tiers]
        denominator = math.lcm(*(c.denominator for c in per_unit))
        highs = tuple(t.up_to for t in dim.tiers)
        assert dim.first_increment is not None  # DimensionPrice sets it
        plans.append(
            _Plan(
                dim.name,
                dim.first_increment,
                dim.increment,
                dim.tiering == GRADUATED,
                (0, *dim.bounds),
                highs,
                tuple(c.numerator * (denominator // c.denominator) for c in per_unit),
                denominator,
                *_minor_bounds(tariff, dim),
            )
        )
    return tuple(plans)


def _fits_int64(plan: _Plan, largest_usage: int) -> bool:
    """Whether every intermediate of `_line_kernel` stays within int64 for usages up to this."""
    units = largest_usage + max(plan.first, plan.increment)
    return (
        units <= INT64_MAX
        and units * max(plan.coefficients) <= INT64_MAX
        and 2 * plan.denominator <= INT64_MAX
    )


def _line_kernel(plan: _Plan, usage: np.ndarray, rounding: str) -> np.ndarray:
    """Minor units of one dimension's line for every usage; int64 or object (Python int)
    arrays alike, so a batch too large for int64 takes the same steps exactly."""
    over = np.maximum(usage - plan.first, 0)
    units = np.where(usage == 0, 0, plan.first + -(-over // plan.increment) * plan.increment)
    if plan.graduated:
        scaled = np.zeros_like(units)
        for low, high, coefficient in zip(plan.lows, plan.highs, plan.coefficients):
            in_tier = units - low
            in_tier = (
                np.clip(in_tier, 0, high - low) if high is not None else np.maximum(in_tier, 0)
            )
            scaled += in_tier * coefficient
    else:
        # the price of the tier reached, from the last tier down to the first
        scaled = units * plan.coefficients[-1]
        for high, coefficient in zip(plan.highs[-2::-1], plan.coefficients[-2::-1]):
            scaled = np.where(units <= high, units * coefficient, scaled)
    q = scaled // plan.denominator
    r = scaled - q * plan.denominator  # np.divmod has no loop for Python ints
    twice, d = 2 * r, plan.denominator
    if rounding == "up":
        q = q + (r > 0)
    elif rounding == "half-up":
        q = q + (twice >= d)
    elif rounding == "half-even":
        q = q + ((twice > d) | ((twice == d) & (q % 2 == 1)))
    q = np.maximum(q, plan.minimum)
    if plan.maximum is not None:
        q = np.minimum(q, plan.maximum)
    return np.where(usage == 0, 0, q)


def usage_columns(columns: object, *, field: str = "usage") -> tuple[dict[str, np.ndarray], int]:
    """Validate columns of cumulative usage (dimension -> ints, one per report) into int64
    arrays of one length; a bad value names its dimension and row."""
    if not isinstance(columns, Mapping) or not columns:
        raise InvalidInput("give at least one column: dimension -> list of counts", field=field)
    arrays: dict[str, np.ndarray] = {}
    length: int | None = None
    for name, values in columns.items():
        where = f"{field}.{name}"
        if name not in DIMENSIONS:
            raise InvalidInput(f"unknown dimension; known: {', '.join(DIMENSIONS)}", field=where)
        array = _int64_column(values, field=where)
        if length is not None and len(array) != length:
            raise InvalidInput(f"has {len(array)} rows, the other columns {length}", field=where)
        arrays[name], length = array, len(array)
    assert length is not None  # at least one column (above)
    return arrays, length


def _int64_column(values: object, *, field: str) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        # numpy would turn [1, 2**63] into floats and [True] into 1: check Python values first
        # Anything else is taken as an iterable (list() says TypeError if it is not one).
        values = values if isinstance(values, list | tuple) else list(cast(Iterable, values))
        for row, value in enumerate(values):
            if type(value) is not int or not 0 <= value <= INT64_MAX:
                good = isinstance(value, np.integer) and 0 <= value <= INT64_MAX
                if not good:
                    check_int(value, field=f"{field}[{row}]")
        return np.array(values, dtype=np.int64)
    if values.ndim != 1:
        raise InvalidInput(f"must be one-dimensional, got shape {values.shape}", field=field)
    if values.dtype.kind not in "iu":
        raise InvalidInput(f"must be whole numbers, got {values.dtype} values", field=field)
    if values.dtype.kind == "u" and len(values) and values.max() > INT64_MAX:
        row = int(np.argmax(values > INT64_MAX))
        raise InvalidInput(
            f"must be at most {INT64_MAX}, got {values[row]}", field=f"{field}[{row}]"
        )
    array = values.astype(np.int64, copy=False)
    if len(array) and array.min() < 0:
        row = int(np.argmax(array < 0))
        raise InvalidInput(f"must not be negative, got {array[row]}", field=f"{field}[{row}]")
    return array


def _rate_arrays(
    tariff: Tariff, arrays: dict[str, np.ndarray], length: int, field: str
) -> np.ndarray:
    fee = int(tariff.connect_fee.scaleb(tariff.minor_digits))
    lines = []
    for plan in _plans(tariff):
        usage = arrays.get(plan.name)
        if usage is None or not length:
            continue
        if _fits_int64(plan, int(usage.max())):
            lines.append(_line_kernel(plan, usage, tariff.rounding))
            continue
        line = _line_kernel(plan, usage.astype(object), tariff.rounding)
        if line.max() > INT64_MAX:
            row = int(np.argmax(line > INT64_MAX))
            check_product(
                line[row], field=f"{field}.{plan.name}[{row}]", what=f"the {plan.name} line"
            )
        lines.append(line.astype(np.int64))
    if fee + sum(int(line.max()) for line in lines) <= INT64_MAX:
        return sum(lines, np.full(length, fee, dtype=np.int64))
    total = sum((line.astype(object) for line in lines), np.full(length, fee, dtype=object))
    over = total > INT64_MAX
    if not over.any():  # the lines peak in different rows: every row's total fits
        return total.astype(np.int64)
    row = int(np.argmax(over))
    check_product(total[row], field=f"{field}[{row}]", what="the rated total")
    raise AssertionError("check_product passed a total past int64")


def rate_columns(tariff: Tariff, usage: Mapping[str, object]) -> np.ndarray:
    """`rate` for many cumulative usages: the total in minor units of each row, int64.

    ``usage`` maps dimension names to equal-length columns (numpy integer arrays or lists of
    ints); a dimension left out is 0 in every row. Rows agree with `rate` to the minor unit.
    """
    arrays, length = usage_columns(usage)
    return _rate_arrays(tariff, arrays, length, "usage")


def charges_for_reports(
    tariff: Tariff,
    before: Mapping[str, object] | None,
    after: Mapping[str, object],
    first: object = None,
) -> np.ndarray:
    """`charge_for_report` for many reports: rated(after) - rated(before) per row, int64.

    ``before`` None: no row has a report before it. ``first`` (booleans, one per row) marks
    the rows that have none, whatever ``before`` holds for them; their charge includes the
    connect fee. Cumulative usage never goes down.
    """
    after_arrays, length = usage_columns(after, field="after")
    charged = _rate_arrays(tariff, after_arrays, length, "after")
    if before is None:
        return charged
    before_arrays, before_length = usage_columns(before, field="before")
    if before_length != length:
        raise InvalidInput(f"has {before_length} rows, after has {length}", field="before")
    is_first = np.zeros(length, dtype=bool) if first is None else np.asarray(first, dtype=bool)
    if is_first.shape != (length,):
        raise InvalidInput(f"must have one boolean per row ({length})", field="first")
    zeros = np.zeros(length, dtype=np.int64)
    for name in DIMENSIONS:
        now, then = after_arrays.get(name, zeros), before_arrays.get(name, zeros)
        went_down = ~is_first & (now < then)
        if went_down.any():
            row = int(np.argmax(went_down))
            raise InvalidInput(
                f"cumulative usage went down from {then[row]} to {now[row]}",
                field=f"after.{name}[{row}]",
            )
    earlier = _rate_arrays(tariff, before_arrays, length, "before")
    return charged - np.where(is_first, 0, earlier)
