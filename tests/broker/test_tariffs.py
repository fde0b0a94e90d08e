"""Tariffs: the JSON form, every refusal naming its field, the version active at a time, and
the currency list they are checked against."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from tariff_strategies import T0, tariffs

from broker.currency import MINOR_DIGITS, Money, check_currency
from broker.errors import InvalidInput
from broker.tariffs import DimensionPrice, Tariff, Tier, active_version

DOC = {
    "provider_id": 7,
    "services": ["anonymize", "checksum"],
    "version": 2,
    "active_from": "2026-02-01T00:00:00Z",
    "currency": "EUR",
    "connect_fee": "0.40",
    "rounding": "half-even",
    "dimensions": {
        "bytes": {
            "rate_unit": 1_000_000,
            "increment": 1_000_000,
            "tiering": "graduated",
            "tiers": [{"up_to": 10**9, "price": "0.001"}, {"up_to": None, "price": "0.0005"}],
            "minimum": "0.10",
            "maximum": "50.00",
        },
        "seconds": {
            "rate_unit": 60,
            "first_increment": 60,
            "increment": 1,
            "tiers": [{"up_to": 60, "price": "0.20"}, {"price": "0.10"}],
        },
    },
}


def doc_with(path: str, value: object) -> dict:
    """DOC with the value at a dotted path (``dimensions.bytes.tiers[1].up_to``) replaced;
    a value of `...` deletes the key."""
    doc = copy.deepcopy(DOC)
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def test_the_json_form_round_trips_with_prices_as_strings():
    tariff = Tariff.from_json(DOC)
    again = tariff.to_json()
    assert Tariff.from_json(json.loads(json.dumps(again))) == tariff
    assert again["dimensions"]["bytes"]["tiers"][0] == {"up_to": 10**9, "price": "0.001"}
    assert again["connect_fee"] == "0.40" and again["active_from"] == "2026-02-01T00:00:00Z"
    assert tariff.dimension("seconds").first_increment == 60
    assert tariff.dimension("bytes").first_increment == 1_000_000  # defaults to the increment
    assert tariff.services == ("anonymize", "checksum")
    assert tariff.key == (7, ("anonymize", "checksum"))


@settings(max_examples=100, deadline=None)
@given(tariffs())
def test_every_tariff_round_trips_through_json(tariff):
    doc = tariff.to_json()
    amounts = [doc["connect_fee"]]
    for dim in doc["dimensions"].values():
        amounts += [dim["minimum"], *(t["price"] for t in dim["tiers"])]
        amounts += [dim["maximum"]] if dim["maximum"] is not None else []
    assert all(re.fullmatch(r"\d+(\.\d+)?", a) for a in amounts), amounts
    assert Tariff.from_json(json.loads(json.dumps(doc))) == tariff


def test_prices_keep_their_decimals_and_never_use_exponents():
    tariff = Tariff.from_json(doc_with("dimensions.bytes.tiers[1].price", "0.000000000001"))
    assert tariff.to_json()["dimensions"]["bytes"]["tiers"][1]["price"] == "0.000000000001"
    tariff = Tariff.from_json(doc_with("connect_fee", "1E+2"))
    assert tariff.to_json()["connect_fee"] == "100"
    tariff = Tariff.from_json(doc_with("dimensions.bytes.tiers[0].price", "-0E-999"))
    assert tariff.to_json()["dimensions"]["bytes"]["tiers"][0]["price"] == "0"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        # overlapping, unordered and unbounded tiers
        ("dimensions.bytes.tiers[1].up_to", 10**9, "dimensions.bytes.tiers[1].up_to"),
        (
            "dimensions.bytes.tiers",
            [{"up_to": 5, "price": "1"}, {"up_to": 3, "price": "1"}, {"price": "1"}],
            "dimensions.bytes.tiers[1].up_to",
        ),
        ("dimensions.bytes.tiers[0].up_to", None, "dimensions.bytes.tiers[0].up_to"),
        ("dimensions.bytes.tiers[1].up_to", 2 * 10**9, "dimensions.bytes.tiers[1].up_to"),
        ("dimensions.bytes.tiers", [], "dimensions.bytes.tiers"),
        ("dimensions.bytes.tiers", "cheap", "dimensions.bytes.tiers"),
        ("dimensions.bytes.tiers[0].up_to", 0, "dimensions.bytes.tiers[0].up_to"),
        ("dimensions.bytes.tiers[0].up_to", 2**63, "dimensions.bytes.tiers[0].up_to"),
        ("dimensions.bytes.tiers[0].up_to", 1.5, "dimensions.bytes.tiers[0].up_to"),
        ("dimensions.bytes.tiers[0].upto", 5, "dimensions.bytes.tiers[0].upto"),
        ("dimensions.bytes.tiers[0].price", ..., "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0]", "0.10", "dimensions.bytes.tiers[0]"),
        # increments and rate units
        ("dimensions.seconds.increment", 0, "dimensions.seconds.increment"),
        ("dimensions.seconds.first_increment", 0, "dimensions.seconds.first_increment"),
        ("dimensions.seconds.rate_unit", 0, "dimensions.seconds.rate_unit"),
        ("dimensions.seconds.increment", -60, "dimensions.seconds.increment"),
        ("dimensions.seconds.increment", 2**63, "dimensions.seconds.increment"),
        ("dimensions.seconds.rate_unit", "60", "dimensions.seconds.rate_unit"),
        ("dimensions.seconds.increment", True, "dimensions.seconds.increment"),
        # prices: decimal strings, not floats, not negative, finite, within 64 bits of minor units
        ("dimensions.bytes.tiers[0].price", 0.001, "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", "-0.001", "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", "NaN", "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", "Infinity", "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", "ten", "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", "1e-19", "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", "1e17", "dimensions.bytes.tiers[0].price"),
        ("dimensions.bytes.tiers[0].price", None, "dimensions.bytes.tiers[0].price"),
        # fees and line bounds: whole minor units
        ("connect_fee", "0.405", "connect_fee"),
        ("connect_fee", 0.4, "connect_fee"),
        ("connect_fee", "-1", "connect_fee"),
        ("dimensions.bytes.minimum", "0.001", "dimensions.bytes.minimum"),
        ("dimensions.bytes.maximum", "0.05", "dimensions.bytes.maximum"),
        ("dimensions.bytes.maximum", "92233720368547758.08", "dimensions.bytes.maximum"),
        # names
        ("currency", "XYZ", "currency"),
        ("currency", "eur", "currency"),
        ("currency", "XAU", "currency"),
        ("currency", None, "currency"),
        ("rounding", "nearest", "rounding"),
        ("dimensions.bytes.tiering", "stepped", "dimensions.bytes.tiering"),
        ("dimensions.frames", {"tiers": [{"price": "1"}]}, "dimensions.frames"),
        ("dimensions.bytes.colour", "red", "dimensions.bytes.colour"),
        ("dimensions", [], "dimensions"),
        ("services", [], "services"),
        ("services", ["teleport"], "services"),
        # identity and time
        ("provider_id", 0, "provider_id"),
        ("provider_id", 2**63, "provider_id"),
        ("version", 0, "version"),
        ("version", "2", "version"),
        ("active_from", "2026-02-01T00:00:00", "active_from"),
        ("active_from", "tomorrow", "active_from"),
        ("active_from", 0, "active_from"),
        ("currency", ..., "currency"),
        ("discount", "5%", "discount"),
    ],
)
def test_bad_tariffs_name_the_field(path, value, field):
    with pytest.raises(InvalidInput) as err:
        Tariff.from_json(doc_with(path, value))
    assert err.value.field == field, err.value


def test_a_tariff_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidInput):
        Tariff.from_json([DOC])


def test_tariffs_built_in_code_are_checked_too():
    with pytest.raises(InvalidInput) as err:
        DimensionPrice("bytes", (Tier(100, Decimal(1)), Tier(100, Decimal(1)), Tier(None, 1)))
    assert err.value.field == "tiers[1].up_to"
    with pytest.raises(InvalidInput) as err:
        Tier(None, 0.5)
    assert err.value.field == "price"
    dim = DimensionPrice("bytes", (Tier(None, "0.001"),), minimum="0.5")
    with pytest.raises(InvalidInput) as err:  # half a yen is no amount
        Tariff(1, ("compress",), 1, T0, "JPY", (dim,))
    assert err.value.field == "dimensions.bytes.minimum"
    with pytest.raises(InvalidInput) as err:
        Tariff(1, ("compress",), 1, T0, "EUR", (dim, dim))
    assert err.value.field == "dimensions.bytes"
    with pytest.raises(InvalidInput) as err:
        DimensionPrice("bytes", (Tier(None, 1),), minimum="2", maximum="1")
    assert err.value.field == "maximum"


def test_dimensions_are_kept_in_one_order_so_equal_tariffs_are_equal():
    a = DimensionPrice("bytes", (Tier(None, 1),))
    b = DimensionPrice("seconds", (Tier(None, 1),))
    one = Tariff(1, ("compress",), 1, T0, "EUR", (b, a))
    assert one == Tariff(1, ("compress",), 1, T0, "EUR", (a, b))
    assert [d.name for d in one.dimensions] == ["bytes", "seconds"]
    assert hash(one) == hash(Tariff(1, ("compress",), 1, T0, "EUR", (a, b)))


# ---- the version active at a time ----------------------------------------------------------


def versions() -> list[Tariff]:
    base = Tariff.from_json(DOC)
    return [replace(base, version=n, active_from=T0 + timedelta(days=30 * n)) for n in (3, 1, 2)]


@pytest.mark.parametrize(
    ("days", "expected"), [(30, 1), (45, 1), (60, 2), (89, 2), (90, 3), (10_000, 3)]
)
def test_usage_is_rated_by_the_version_active_when_it_happened(days, expected):
    assert active_version(versions(), T0 + timedelta(days=days)).version == expected


def test_the_version_boundary_is_exact_to_the_microsecond():
    at = T0 + timedelta(days=60)
    assert active_version(versions(), at - timedelta(microseconds=1)).version == 1
    other_zone = at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert active_version(versions(), other_zone).version == 2


def test_choosing_a_version_refuses_what_it_cannot_decide():
    with pytest.raises(InvalidInput) as err:
        active_version(versions(), T0)
    assert err.value.field == "at"
    with pytest.raises(InvalidInput) as err:
        active_version(versions(), datetime(2026, 6, 1))
    assert err.value.field == "at"
    with pytest.raises(InvalidInput) as err:
        active_version([], T0)
    assert err.value.field == "versions"
    clash = versions()
    clash.append(replace(clash[0], version=9))
    with pytest.raises(InvalidInput) as err:
        active_version(clash, T0 + timedelta(days=400))
    assert err.value.field == "versions"
    mixed = [*versions(), replace(versions()[0], provider_id=8, active_from=T0)]
    with pytest.raises(InvalidInput) as err:
        active_version(mixed, T0 + timedelta(days=400))
    assert err.value.field == "versions"


# ---- the currency list ---------------------------------------------------------------------


def test_the_currency_list_is_iso_4217_with_its_minor_units():
    assert (MINOR_DIGITS["JPY"], MINOR_DIGITS["EUR"], MINOR_DIGITS["KWD"]) == (0, 2, 3)
    assert (MINOR_DIGITS["IQD"], MINOR_DIGITS["CLF"], MINOR_DIGITS["HUF"]) == (3, 4, 2)
    assert len(MINOR_DIGITS) > 150
    for code in ("XAU", "XTS", "XXX", "XDR", "EURO", "", 978):
        with pytest.raises(InvalidInput):
            check_currency(code)
    assert str(Money(1999, "EUR")) == "19.99 EUR"
    assert str(Money(1999, "JPY")) == "1999 JPY"
    assert str(Money(1999, "KWD")) == "1.999 KWD"
