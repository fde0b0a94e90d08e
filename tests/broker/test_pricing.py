"""List prices and concession curves."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marketplace import T0

from broker.catalog import SERVICE_NAMES, known_services, parse_chain
from broker.currency import Money
from broker.errors import InvalidInput
from broker.models import PricePolicy, ServiceRequest
from broker.pricing import buyer_offer, concession, list_price, reservation_price, seller_ask
from engine.services import available

POLICY = PricePolicy(
    currency="EUR",
    per_gb_minor=250,
    per_mbps_hour_minor=7,
    reservation_ppm=750_000,
    concession_beta_ppm=1_000_000,
)


def test_blocks_are_priced_per_mbit_per_hour_rounded_up():
    block = ServiceRequest(
        starts_at=T0, ends_at=T0 + timedelta(minutes=90), max_rate_bps=20_000_000, min_rate_bps=1
    )
    assert list_price(POLICY, block) == 210  # 20 Mbit/s * 1.5 h * 7
    block.ends_at = T0 + timedelta(seconds=1)
    assert list_price(POLICY, block) == 1  # 0.0389 rounds up to one minor unit
    assert reservation_price(POLICY, 210) == 158  # 157.5 up


def test_volumes_are_priced_per_gigabyte():
    assert list_price(POLICY, ServiceRequest(volume_bytes=4 * 10**9)) == 1000


def test_concession_curves_run_from_opening_to_limit():
    assert concession(0, 1_000_000) == 0 and concession(1, 300_000) == 1
    assert seller_ask(1000, 800, 0, 1_000_000) == 1000
    assert seller_ask(1000, 800, 1, 1_000_000) == 800
    assert seller_ask(1000, 800, 0.5, 1_000_000) == 900
    assert buyer_offer(400, 800, 0.5, 1_000_000) == 600
    assert buyer_offer(400, 800, 0.5, 500_000) == 500  # Boulware: 0.5 ** 2
    assert buyer_offer(400, 800, 0.25, 2_000_000) == 600  # Conceder: 0.25 ** 0.5


@given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 10_000_000))
def test_concessions_only_grow_with_time(a, b, beta):
    lo, hi = sorted((a, b))
    assert concession(lo, beta) <= concession(hi, beta)
    assert 800 <= seller_ask(1000, 800, hi, beta) <= seller_ask(1000, 800, lo, beta) <= 1000


def test_money_keeps_its_currency_and_exactness():
    assert str(Money(1999, "EUR")) == "19.99 EUR"
    assert str(Money(5, "JPY")) == "5 JPY"
    assert str(Money(1, "BHD")) == "0.001 BHD"
    assert Money(1, "EUR") + Money(2, "EUR") == Money(3, "EUR")
    with pytest.raises(InvalidInput):
        Money(1, "EUR") + Money(1, "USD")
    with pytest.raises(InvalidInput):
        Money(1.0, "EUR")
    with pytest.raises(InvalidInput):
        Money(1, "XXX")


def test_the_catalog_knows_the_engines_services():

    assert set(SERVICE_NAMES) <= set(available())
    assert set(available()) <= set(known_services())
    assert parse_chain(" anonymize , checksum ") == ("anonymize", "checksum")
