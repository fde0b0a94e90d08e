"""Rating: the issue's examples, the rules as properties, and agreement with a naive rater."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rating_reference import reference_rate
from tariff_strategies import T0, report_series, tariffs, usages

from broker.bounds import INT64_MAX
from broker.currency import Money
from broker.errors import InvalidInput
from broker.rating import (
    charge_for_report,
    charged_units,
    charges_for_reports,
    rate,
    rate_columns,
    round_minor,
)
from broker.tariffs import MB, MINUTE, DimensionPrice, Tariff, Tier, active_version

SLOW = settings(max_examples=150, deadline=None)


def tariff(
    *dims: DimensionPrice, currency: str = "EUR", connect_fee: str = "0", rounding: str = "half-up"
) -> Tariff:
    return Tariff(
        provider_id=1,
        services=("compress",),
        version=1,
        active_from=T0,
        currency=currency,
        dimensions=dims,
        connect_fee=Decimal(connect_fee),
        rounding=rounding,
    )


def rated(t: Tariff, usage: dict[str, int]) -> int:
    """The total by `rate` and by `rate_columns`, which must agree."""
    minor = rate(t, usage).minor
    assert rate_columns(t, {name: [value] for name, value in usage.items()}).tolist() == [minor]
    return minor


# The example (a): 0.40 to connect, 0.20 per minute charged in whole minutes for the first
# minute, then 0.10 per minute charged per second.
CALL = tariff(
    DimensionPrice(
        "seconds",
        (Tier(60, Decimal("0.20")), Tier(None, Decimal("0.10"))),
        rate_unit=MINUTE,
        first_increment=60,
        increment=1,
    ),
    connect_fee="0.40",
)


def blocks(tiering: str) -> Tariff:
    """Example (b): blocks of 10 minutes at 1.00 up to 100 blocks, 0.50 beyond."""
    return tariff(
        DimensionPrice(
            "seconds",
            (Tier(100 * 600, Decimal("1.00")), Tier(None, Decimal("0.50"))),
            rate_unit=600,
            increment=600,
            tiering=tiering,
        )
    )


def test_example_a_a_two_minute_call_costs_exactly_0_70():
    call = rate(CALL, {"seconds": 120})
    assert call.money == Money(70, "EUR")
    assert [(ln.name, ln.minor) for ln in call.lines] == [("connect", 40), ("seconds", 30)]
    assert rated(CALL, {"seconds": 120}) == 70


def test_example_a_the_first_minute_is_charged_whole_and_then_per_second():
    assert charged_units(CALL.dimensions[0], 1) == 60
    assert rated(CALL, {"seconds": 1}) == 60  # 0.40 + a whole minute
    assert rated(CALL, {"seconds": 61}) == 60  # + 0.0016667, rounded once: 0
    assert rated(CALL, {"seconds": 69}) == 62  # + 9 s at 0.10/min = 0.015 -> 0.02
    assert rated(CALL, {"seconds": 0}) == 40  # connected, nothing used


@pytest.mark.parametrize(("tiering", "expected"), [("graduated", "125.00"), ("volume", "75.00")])
def test_example_b_1500_minutes_in_blocks_of_ten(tiering, expected):
    assert str(rate(blocks(tiering), {"seconds": 1500 * 60}).money) == f"{expected} EUR"
    assert rated(blocks(tiering), {"seconds": 1500 * 60}) == int(Decimal(expected) * 100)


def test_a_price_per_minute_charged_per_second_does_not_drift():
    # 0.10/min per second is 0.0016667 a second: rounded up each second, an hour would be 36.00
    per_second = tariff(
        DimensionPrice("seconds", (Tier(None, Decimal("0.10")),), rate_unit=MINUTE), rounding="up"
    )
    assert rated(per_second, {"seconds": 3600}) == 600
    assert rated(per_second, {"seconds": 1}) == 1  # up: the one rounding is upwards


def test_prices_finer_than_the_currency_are_exact_until_the_line_is_rounded():
    # a tenth of a cent per MB: 1,234 MB is 1.234 EUR -> 1.23 EUR
    per_mb = DimensionPrice("bytes", (Tier(None, Decimal("0.001")),), rate_unit=MB)
    assert rated(tariff(per_mb), {"bytes": 1234 * MB}) == 123
    assert rated(tariff(per_mb, rounding="up"), {"bytes": 1234 * MB}) == 124
    assert rated(tariff(per_mb, rounding="up"), {"bytes": 1}) == 1


@pytest.mark.parametrize(
    ("currency", "price", "minor"),
    [("JPY", "0.5", 617), ("EUR", "0.005", 617), ("KWD", "0.0005", 617)],
)
def test_currencies_of_0_2_and_3_decimals(currency, price, minor):
    # 1234 MB at half a minor unit per MB: 617 minor units in each currency
    dim = DimensionPrice("bytes", (Tier(None, Decimal(price)),), rate_unit=MB)
    assert rated(tariff(dim, currency=currency), {"bytes": 1234 * MB}) == minor
    assert rated(tariff(dim, currency=currency), {"bytes": 1235 * MB}) == 618  # 617.5, half-up
    assert rated(tariff(dim, currency=currency), {"bytes": 1233 * MB}) == 617  # 616.5, half-up
    half_even = tariff(dim, currency=currency, rounding="half-even")
    assert rated(half_even, {"bytes": 1235 * MB}) == 618  # 617.5 -> even
    assert rated(half_even, {"bytes": 1233 * MB}) == 616  # 616.5 -> even
    assert rated(tariff(dim, currency=currency, rounding="down"), {"bytes": 1235 * MB}) == 617


@pytest.mark.parametrize(
    ("value", "up", "down", "half_up", "half_even"),
    [
        (Fraction(5, 2), 3, 2, 3, 2),
        (Fraction(7, 2), 4, 3, 4, 4),
        (Fraction(7, 3), 3, 2, 2, 2),
        (Fraction(8, 3), 3, 2, 3, 3),
        (Fraction(4), 4, 4, 4, 4),
        (Fraction(1, 2), 1, 0, 1, 0),
    ],
)
def test_rounding_rules(value, up, down, half_up, half_even):
    assert [round_minor(value, r) for r in ("up", "down", "half-up", "half-even")] == [
        up,
        down,
        half_up,
        half_even,
    ]


def test_minimum_and_maximum_apply_to_a_line_with_usage_only():
    dim = DimensionPrice(
        "packets", (Tier(None, Decimal("0.01")),), minimum=Decimal("0.50"), maximum=Decimal("2.00")
    )
    t = tariff(dim)
    assert rated(t, {"packets": 0}) == 0
    assert rated(t, {"packets": 1}) == 50
    assert rated(t, {"packets": 120}) == 120
    assert rated(t, {"packets": 10**9}) == 200


def test_volume_tiers_can_credit_a_report_that_crosses_into_a_cheaper_tier():
    volume = blocks("volume")
    assert rated(volume, {"seconds": 60_000}) == 10_000  # 100 blocks at 1.00
    charge = charge_for_report(volume, {"seconds": 60_000}, {"seconds": 60_001})
    assert charge.minor == 5_050 - 10_000  # 101 blocks at 0.50
    assert charge.money == Money(-4_950, "EUR")


def test_the_connect_fee_is_charged_by_the_first_report_only():
    first = charge_for_report(CALL, None, {"seconds": 0})
    assert first.minor == 40 and dict(first.lines) == {"connect": 40, "seconds": 0}
    later = charge_for_report(CALL, {"seconds": 0}, {"seconds": 120})
    assert later.minor == 30 and dict(later.lines) == {"connect": 0, "seconds": 30}


@SLOW
@given(tariffs(), st.lists(usages(), min_size=1, max_size=4))
def test_scalar_and_columnar_agree_with_the_naive_rater(t, rows):
    expected = [reference_rate(t, row) for row in rows]
    assert [rate(t, row).minor for row in rows] == expected
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    assert rate_columns(t, columns).tolist() == expected


@SLOW
@given(st.data())
def test_however_usage_is_split_into_reports_the_total_is_the_same(data):
    t = data.draw(tariffs())
    usage = data.draw(usages())
    series = data.draw(report_series(usage))
    charges = [
        charge_for_report(t, before, after) for before, after in zip([None, *series[:-1]], series)
    ]
    assert sum(c.minor for c in charges) == rate(t, usage).minor == reference_rate(t, usage)
    before = {name: [0, *(s[name] for s in series[:-1])] for name in usage}
    after = {name: [s[name] for s in series] for name in usage}
    first = [True] + [False] * (len(series) - 1)
    columnar = charges_for_reports(t, before, after, first)
    assert columnar.tolist() == [c.minor for c in charges]


@SLOW
@given(tariffs(), usages(), usages())
def test_the_same_usage_rated_twice_is_charged_once(t, usage, other):
    assert charge_for_report(t, usage, usage).minor == 0
    assert rate(t, usage) == rate(t, usage)
    # a report repeated in a series adds nothing: the charges still add up to the total
    high = {name: max(usage[name], other[name]) for name in usage}
    series = [usage, usage, high, high]
    total = sum(charge_for_report(t, b, a).minor for b, a in zip([None, *series[:-1]], series))
    assert total == rate(t, high).minor


@SLOW
@given(tariffs(tiering="graduated") | tariffs(tiering="volume", rising=True), usages(), usages())
def test_the_charge_never_falls_as_usage_grows(t, usage, extra):
    # graduated tiers always; volume tiers when no later tier is cheaper (else see the credit
    # test above)
    more = {name: usage[name] + extra[name] for name in usage}
    assert rate(t, usage).minor <= rate(t, more).minor
    assert charge_for_report(t, usage, more).minor >= 0


@SLOW
@given(st.data())
def test_graduated_and_volume_order_by_whether_prices_fall_or_rise(data):
    rising = data.draw(st.booleans())
    t = data.draw(tariffs(tiering="graduated", rising=rising))
    usage = data.draw(usages())
    volume = replace(t, dimensions=tuple(replace(d, tiering="volume") for d in t.dimensions))
    graduated_minor, volume_minor = rate(t, usage).minor, rate(volume, usage).minor
    if rising:  # volume charges every unit at the dearest tier reached
        assert graduated_minor <= volume_minor
    else:  # volume charges every unit at the cheapest tier reached: a discount
        assert volume_minor <= graduated_minor


@SLOW
@given(tariffs(), usages())
def test_every_line_with_usage_is_within_its_minimum_and_maximum(t, usage):
    scale = 10**t.minor_digits
    for dim in t.dimensions:
        line = rate(t, usage).line(dim.name)
        if usage[dim.name]:
            assert dim.minimum * scale <= line.minor
            assert dim.maximum is None or line.minor <= dim.maximum * scale
        else:
            assert line.minor == 0


def test_split_invariance_holds_line_by_line_not_just_in_total():
    t = tariff(
        DimensionPrice("bytes", (Tier(None, Decimal("0.001")),), rate_unit=MB),
        DimensionPrice("seconds", (Tier(None, Decimal("0.10")),), rate_unit=MINUTE),
    )
    steps = [{"bytes": b * MB // 3, "seconds": s} for b, s in [(1, 1), (2, 7), (5, 7), (9, 61)]]
    per_line: dict[str, int] = {}
    for before, after in zip([None, *steps[:-1]], steps):
        for name, minor in charge_for_report(t, before, after).lines:
            per_line[name] = per_line.get(name, 0) + minor
    final = rate(t, steps[-1])
    assert per_line == {ln.name: ln.minor for ln in final.lines}


# ---- large numbers: the int64 kernel, the Python-int fallback and the scalar path agree ------


@SLOW
@given(
    tariffs(bounded=False),
    st.lists(st.integers(0, 2**62), min_size=1, max_size=5),
    st.sampled_from([1, MB, 10**9, 3_600_000_000]),
    st.integers(0, 12),
)
def test_large_usages_agree_between_columnar_and_scalar(t, values, rate_unit, decimals):
    # fine prices and large counts push some batches off int64 onto exact Python ints
    dims = tuple(
        replace(
            d,
            rate_unit=rate_unit,
            tiers=tuple(replace(tr, price=tr.price.scaleb(-decimals)) for tr in d.tiers),
        )
        for d in t.dimensions
    )
    t = replace(t, dimensions=dims)
    columns = {d.name: values for d in dims}
    try:
        expected = [rate(t, dict.fromkeys(columns, v)).minor for v in values]
    except InvalidInput:
        with pytest.raises(InvalidInput):
            rate_columns(t, columns)
        return
    assert rate_columns(t, columns).tolist() == expected


def test_a_batch_past_int64_in_the_middle_of_the_arithmetic_is_still_exact():
    # 0.123456789 per byte in KWD: 123456789 / 10**6 minor units a byte; 2**40 bytes
    dim = DimensionPrice("bytes", (Tier(None, Decimal("0.123456789")),))
    t = tariff(dim, currency="KWD", rounding="half-even")
    usage = 2**40
    expected = rate(t, {"bytes": usage}).minor
    assert expected == round(Fraction(123456789, 10**6) * usage)
    assert rate_columns(t, {"bytes": np.array([usage, 0, 1])}).tolist() == [expected, 0, 123]


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"seconds": -1}, "usage.seconds"),
        ({"seconds": 1.5}, "usage.seconds"),
        ({"seconds": "60"}, "usage.seconds"),
        ({"seconds": True}, "usage.seconds"),
        ({"seconds": 2**63}, "usage.seconds"),
        ({"minutes": 1}, "usage.minutes"),
        ([("seconds", 1)], "usage"),
    ],
)
def test_bad_usage_names_its_field(usage, field):
    with pytest.raises(InvalidInput) as err:
        rate(CALL, usage)
    assert err.value.field == field


def test_a_line_or_total_past_64_bits_names_the_usage():
    dear = tariff(DimensionPrice("bytes", (Tier(None, Decimal("1000")),)))
    with pytest.raises(InvalidInput) as err:
        rate(dear, {"bytes": 2**60})
    assert err.value.field == "usage.bytes"
    with pytest.raises(InvalidInput) as err:
        rate_columns(dear, {"bytes": [1, 2**60]})
    assert err.value.field == "usage.bytes[1]"
    two = tariff(
        DimensionPrice("bytes", (Tier(None, Decimal("0.01")),)),
        DimensionPrice("packets", (Tier(None, Decimal("0.01")),)),
    )
    with pytest.raises(InvalidInput) as err:
        rate(two, {"bytes": 2**62, "packets": 2**62})
    assert err.value.field == "usage"
    with pytest.raises(InvalidInput) as err:
        rate_columns(two, {"bytes": [0, 2**62], "packets": [0, 2**62]})
    assert err.value.field == "usage[1]"


def test_cumulative_usage_that_goes_down_is_refused():
    with pytest.raises(InvalidInput) as err:
        charge_for_report(CALL, {"seconds": 120}, {"seconds": 60})
    assert err.value.field == "after.seconds"
    with pytest.raises(InvalidInput) as err:
        charges_for_reports(CALL, {"seconds": [0, 120]}, {"seconds": [60, 60]})
    assert err.value.field == "after.seconds[1]"
    # a first report has no before: whatever stands there is not compared
    assert charges_for_reports(
        CALL, {"seconds": [0, 120]}, {"seconds": [60, 60]}, [False, True]
    ).tolist() == [20, 60]


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ([0, -1], "usage.seconds[1]"),
        (np.array([1.0, 2.0]), "usage.seconds"),
        ([True, False], "usage.seconds[0]"),
        (np.array([True]), "usage.seconds"),
        ([1, 2**63], "usage.seconds[1]"),
        ([1, 2.0], "usage.seconds[1]"),
        (np.array([2**63], dtype=np.uint64), "usage.seconds[0]"),
        ([[1, 2]], "usage.seconds[0]"),
        (np.array([[1, 2]]), "usage.seconds"),
        ([np.int64(-1)], "usage.seconds[0]"),
        ([1, 2**70], "usage.seconds[1]"),
        ([1, "2"], "usage.seconds[1]"),
    ],
)
def test_bad_usage_columns_name_the_row(column, field):
    with pytest.raises(InvalidInput) as err:
        rate_columns(CALL, {"seconds": column})
    assert err.value.field == field


def test_columns_of_different_lengths_or_none_at_all_are_refused():
    with pytest.raises(InvalidInput) as err:
        rate_columns(CALL, {"seconds": [1, 2], "bytes": [1]})
    assert err.value.field == "usage.bytes"
    with pytest.raises(InvalidInput) as err:
        rate_columns(CALL, {})
    assert err.value.field == "usage"
    with pytest.raises(InvalidInput) as err:
        charges_for_reports(CALL, {"seconds": [1]}, {"seconds": [1, 2]})
    assert err.value.field == "before"
    assert rate_columns(CALL, {"seconds": []}).tolist() == []


def test_a_dimension_the_tariff_does_not_price_is_free():
    assert rate(CALL, {"seconds": 120, "bytes": 10**12}).minor == 70
    assert rate_columns(CALL, {"bytes": [10**12, 0]}).tolist() == [40, 40]


def test_the_largest_usage_is_rated_exactly():
    expected = 40 + 20 + round(Fraction(INT64_MAX - 60, 60) * 10)
    assert rate(CALL, {"seconds": INT64_MAX}).minor == expected
    assert rate_columns(CALL, {"seconds": [INT64_MAX]}).tolist() == [expected]


def test_reports_are_rated_by_the_version_active_when_their_usage_happened():
    dearer = replace(
        CALL,
        version=2,
        active_from=T0 + timedelta(days=30),
        dimensions=(
            replace(
                CALL.dimensions[0], tiers=(Tier(60, Decimal("0.40")), Tier(None, Decimal("0.20")))
            ),
        ),
    )
    versions = [CALL, dearer]
    reports = [
        (T0 + timedelta(days=1), None, {"seconds": 120}),
        (T0 + timedelta(days=31), {"seconds": 120}, {"seconds": 180}),
    ]
    charges = [
        charge_for_report(active_version(versions, at), before, after).minor
        for at, before, after in reports
    ]
    # the first two minutes at the old prices (0.70 with the fee); the third at the new one
    assert charges == [70, 20]
    # the new version's connect fee is in both sides of the later report: not charged again
    assert charges_for_reports(dearer, {"seconds": [120]}, {"seconds": [180]}).tolist() == [20]


def test_charges_with_no_report_before_are_the_rated_totals():
    after = {"seconds": [0, 61, 120]}
    assert charges_for_reports(CALL, None, after).tolist() == rate_columns(CALL, after).tolist()


def test_lines_that_peak_in_different_rows_past_int64_together_still_rate_each_row():
    """Each dimension's line fits int64 and so does every row's total, but the sum of the
    lines' maxima does not: the rows are rated exactly, not cut to one number (a bug the type
    checker found: the first row's total came back as a plain int)."""
    t = tariff(
        DimensionPrice("bytes", (Tier(None, Decimal("1")),), rate_unit=1),
        DimensionPrice("seconds", (Tier(None, Decimal("1")),), rate_unit=1),
    )
    big = 6 * 10**18 // 100  # in minor units of EUR a unit costs 100
    columns = {"bytes": [big, 0, 1], "seconds": [0, big, 1]}
    expected = [
        rate(t, {"bytes": b, "seconds": s}).minor
        for b, s in zip(columns["bytes"], columns["seconds"], strict=True)
    ]
    assert expected == [big * 100, big * 100, 200]
    got = rate_columns(t, columns)
    assert isinstance(got, np.ndarray) and got.tolist() == expected
