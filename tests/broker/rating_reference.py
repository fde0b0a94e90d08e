"""A slow, obviously correct rater: the oracle `broker.rating` is tested against.

Written differently from the module on purpose: usage is charged increment by increment in a
loop, each charged unit is priced one at a time at its tier's price, min/max clamp the exact
amount (the module clamps after rounding), and the one rounding is `Decimal.quantize` with the
standard library's rounding modes (the module divides integers). Small usages only.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Decimal,
    localcontext,
)
from fractions import Fraction

from broker.tariffs import DimensionPrice, Tariff

MODES = {
    "up": ROUND_CEILING,
    "down": ROUND_FLOOR,
    "half-up": ROUND_HALF_UP,
    "half-even": ROUND_HALF_EVEN,
}


def units_charged(dim: DimensionPrice, used: int) -> int:
    charged, step = 0, dim.first_increment
    while charged < used:
        charged += step
        step = dim.increment
    return charged


def price_of_unit(dim: DimensionPrice, k: int) -> Fraction:
    """The price per rate unit of the k-th charged unit (counting from 1)."""
    for tier in dim.tiers:
        if tier.up_to is None or k <= tier.up_to:
            return Fraction(tier.price)
    raise AssertionError("the last tier is open-ended")


def exact_line(dim: DimensionPrice, used: int) -> Fraction:
    """Major units, before min/max and rounding."""
    charged = units_charged(dim, used)
    if dim.tiering == "graduated":
        total = sum((price_of_unit(dim, k) for k in range(1, charged + 1)), Fraction(0))
    else:
        total = charged * price_of_unit(dim, charged) if charged else Fraction(0)
    return total / dim.rate_unit


def round_to_minor(amount: Fraction, digits: int, rule: str) -> int:
    with localcontext() as ctx:
        ctx.prec = 200
        value = Decimal(amount.numerator) / Decimal(amount.denominator)
        return int(value.quantize(Decimal(1).scaleb(-digits), rounding=MODES[rule]).scaleb(digits))


def reference_line(tariff: Tariff, dim: DimensionPrice, used: int) -> int:
    if used == 0:
        return 0
    amount = max(exact_line(dim, used), Fraction(dim.minimum))
    if dim.maximum is not None:
        amount = min(amount, Fraction(dim.maximum))
    return round_to_minor(amount, tariff.minor_digits, tariff.rounding)


def reference_rate(tariff: Tariff, usage: dict[str, int]) -> int:
    """The rated total of a cumulative usage in minor units, connect fee included."""
    total = round_to_minor(Fraction(tariff.connect_fee), tariff.minor_digits, tariff.rounding)
    for dim in tariff.dimensions:
        total += reference_line(tariff, dim, usage.get(dim.name, 0))
    return total
