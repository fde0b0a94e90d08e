"""Hypothesis strategies for tariffs and usages small enough for the reference rater."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import strategies as st

from broker.currency import MINOR_DIGITS
from broker.tariffs import DIMENSIONS, ROUNDINGS, DimensionPrice, Tariff, Tier

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CURRENCIES = ("JPY", "EUR", "KWD", "USD", "BHD", "CLF")  # 0, 2, 3, 2, 3 and 4 decimals
SMALL = 3000  # usages and tier bounds stay under this, so the reference can count unit by unit


def prices(max_decimals: int = 6) -> st.SearchStrategy[Decimal]:
    return st.builds(
        lambda n, k: Decimal(n).scaleb(-k), st.integers(0, 10**6), st.integers(0, max_decimals)
    )


def amounts(currency: str, most: int) -> st.SearchStrategy[Decimal]:
    """A whole number of minor units, as a Decimal of major units."""
    return st.integers(0, most).map(lambda n: Decimal(n).scaleb(-MINOR_DIGITS[currency]))


@st.composite
def dimension_prices(
    draw,
    name: str,
    currency: str,
    *,
    tiering: str | None = None,
    rising: bool | None = None,
    bounded: bool = True,
) -> DimensionPrice:
    bounds = sorted(draw(st.sets(st.integers(1, SMALL), max_size=3)))
    tier_prices = draw(st.lists(prices(), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if rising is not None:
        tier_prices.sort(reverse=not rising)
    tiers = tuple(Tier(up_to, price) for up_to, price in zip([*bounds, None], tier_prices))
    minimum = draw(amounts(currency, 500)) if bounded else Decimal(0)
    maximum = None
    if bounded and draw(st.booleans()):
        maximum = minimum + draw(amounts(currency, 50_000))
    return DimensionPrice(
        name=name,
        tiers=tiers,
        rate_unit=draw(st.sampled_from([1, 7, 60, 1000])),
        increment=draw(st.integers(1, 100)),
        first_increment=draw(st.none() | st.integers(1, 200)),
        tiering=tiering or draw(st.sampled_from(["graduated", "volume"])),
        minimum=minimum,
        maximum=maximum,
    )


@st.composite
def tariffs(
    draw,
    *,
    tiering: str | None = None,
    rising: bool | None = None,
    bounded: bool = True,
    currency: str | None = None,
) -> Tariff:
    currency = currency or draw(st.sampled_from(CURRENCIES))
    names = draw(st.lists(st.sampled_from(DIMENSIONS), min_size=1, max_size=4, unique=True))
    dims = tuple(
        draw(dimension_prices(n, currency, tiering=tiering, rising=rising, bounded=bounded))
        for n in names
    )
    return Tariff(
        provider_id=1,
        services=("compress",),
        version=1,
        active_from=T0,
        currency=currency,
        dimensions=dims,
        connect_fee=draw(amounts(currency, 1000)),
        rounding=draw(st.sampled_from(ROUNDINGS)),
    )


def usages(most: int = SMALL) -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries({name: st.integers(0, most) for name in DIMENSIONS})


@st.composite
def report_series(draw, usage: dict[str, int]) -> list[dict[str, int]]:
    """Cumulative usages of successive reports rising to ``usage`` (repeats allowed)."""
    count = draw(st.integers(0, 6))
    columns = {
        name: sorted(draw(st.lists(st.integers(0, total), min_size=count, max_size=count)))
        for name, total in usage.items()
    }
    return [{name: columns[name][i] for name in usage} for i in range(count)] + [dict(usage)]
