"""pytest-benchmark layer over `benchmarks.broker_table` (not in the default test run).

    python -m pytest benchmarks/test_bench_broker.py --benchmark-only

The issue's targets ride along in ``extra_info``; they are measured here, not asserted: a
benchmark, not a timed test. What is asserted is what must hold at any speed: the close
closes, the view shows every bid, and no bid sent over HTTP is lost or duplicated.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks import broker_table as bt


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('bench-broker') / 'broker.sqlite3'}"
    scene = bt.build_market(url, bt.CLOSE_BIDS, tokens=True)
    scene.url = url
    yield scene
    scene.store.dispose()


def test_close_an_auction_of_10000_bids(benchmark, market):
    rounds = itertools.count()

    def fresh():
        return bt.auction_to_close(market, bt.CLOSE_BIDS, next(rounds)), {}

    benchmark.extra_info["target_s"] = bt.TARGET_CLOSE_S
    status = benchmark.pedantic(
        lambda auction, closes: bt.close(market, auction, closes),
        setup=fresh,
        rounds=5,
        iterations=1,
    )
    assert status == "closed"


@pytest.fixture(scope="module")
def viewed(market):
    return bt.closed_auction(market, bt.VIEW_BIDDERS)


def test_reputations_of_1000_bidders_in_an_auction_view(benchmark, market, viewed):
    benchmark.extra_info["target_s"] = bt.TARGET_VIEW_S
    assert benchmark(bt.view_lookups, market, *viewed) == bt.VIEW_BIDDERS


def test_the_whole_view_of_an_auction_of_1000_bids(benchmark, market, viewed):
    assert benchmark(bt.whole_view, market, *viewed) == bt.VIEW_BIDDERS


@pytest.fixture(scope="module")
def server(market):
    with bt.running_server(market.url) as (base, _pid):
        yield base


def test_one_bid_over_http(benchmark, market, server):
    """One client's round trip: authenticate, check, store the bid, answer."""
    import httpx

    now = datetime.now(UTC)
    auction = bt.new_auction(
        market, opens_at=now - timedelta(seconds=1), closes_at=now + timedelta(hours=1)
    )
    providers = iter(market.providers)
    with httpx.Client(base_url=server, timeout=30) as http:

        def post(provider):
            return http.post(
                f"/v1/auctions/{auction}/bids",
                json={"provider_id": provider, "price_minor": 50_000},
                headers={
                    "Authorization": f"Bearer {market.tokens[provider]}",
                    "Idempotency-Key": f"one-{provider}",
                },
            ).status_code

        codes = []
        benchmark.pedantic(
            lambda provider: codes.append(post(provider)),
            setup=lambda: ((next(providers),), {}),
            rounds=300,
            iterations=1,
        )
    assert set(codes) == {201}


def test_bids_over_http_from_concurrent_clients(benchmark, market):
    """Sustained POSTs from 16 clients against a server of its own; then the count."""
    result = benchmark.pedantic(
        bt.http_bids,
        args=(market, market.url),
        kwargs={"clients": bt.HTTP_CLIENTS, "seconds": 5.0},
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(
        requests_per_s=round(result.rps),
        target=bt.TARGET_HTTP_RPS,
        requests=result.requests,
        stored=result.stored,
    )
    assert result.exact, result


def test_what_a_credit_check_adds_to_a_request(benchmark, tmp_path):
    """A small `pktx bench broker` credit row: requests by users with a credit profile and
    without, in process and over HTTP (and on PostgreSQL when $PKTX_TEST_PG_URL or
    $PKTX_BENCH_PG_URL names a server); every timed request stored, the checked users
    decided, the unchecked ones not."""
    costs = benchmark.pedantic(
        bt.credit_costs,
        kwargs={
            "users": 60,
            "checks": 10,
            "workdir": str(tmp_path),
            "pg_url": os.environ.get("PKTX_TEST_PG_URL"),
        },
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(
        target_ms=bt.TARGET_CHECK_MS,
        **{f"{c.database}_added_ms": round(c.added_ms, 3) for c in costs},
        **{f"{c.database}_http_added_ms": round(c.http_added_ms, 3) for c in costs},
    )
    assert costs[0].database == "SQLite"
    for c in costs:
        assert c.exact, c
        assert c.checks == 10 and c.http_added_ms is not None, c
    rows = [
        name
        for name, _ in bt.checks(
            bt.Measured(
                0.0, "closed", 0.0, 0.0, bt.HttpResult(1, 1.0, 1, 0, 0, 1, 0, 1), credit=costs
            )
        )
    ]
    assert sum("credit check adds" in name for name in rows) == 2 * len(costs)
