"""An open auction's bidders arrive live over server-sent events, with reputations and measured
records and never a price (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from console_client import Browser

from broker.api import create_app
from broker.auctions import open_auction, submit_bid
from broker.requests import submit_request


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=3.0, event_poll_seconds=0.05)


def _open_auction(world) -> int:
    m, now = world.m, datetime.now(UTC)
    buyer = m.actor("user", world.alice)
    with m.store.write() as s:
        r = submit_request(
            s,
            buyer,
            services="anonymize",
            starts_at=now + timedelta(hours=1),
            ends_at=now + timedelta(hours=2),
            max_rate_bps=10_000_000,
        )
        return open_auction(
            s, buyer, r.id, closes_at=now + timedelta(minutes=30), reserve_price_minor=2000
        ).id


def _bid(world, provider: int, auction: int, price: int) -> None:
    with world.m.store.write() as s:
        submit_bid(
            s, world.m.actor("provider", provider), auction, provider_id=provider, price_minor=price
        )


def test_bidders_arrive_live_with_reputation_and_no_price(app, keys, world):
    auction = _open_auction(world)
    _bid(world, world.north, auction, 1234)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get(f"/auctions/{auction}").text
    assert 'data-live-rows="bidders"' in page
    events = []
    with alice.http.stream("GET", f"/auctions/{auction}/events") as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            events.append(json.loads(line.removeprefix("data:")))
            if len(events) == 1:
                _bid(world, world.south, auction, 987)  # arrives while the page listens
            else:
                break
    first, second = events
    assert [b["provider_id"] for b in first["bidders"]] == [world.north]
    assert {b["provider_id"] for b in second["bidders"]} == {world.north, world.south}
    assert second["bid_count"] == 2
    for b in second["bidders"]:
        assert set(b) == {"provider_id", "provider", "score", "ratings", "delivery"}
        assert 0 <= b["score"] <= 1 and isinstance(b["ratings"], int) and b["delivery"]
    raw = json.dumps(events)
    assert "1234" not in raw and "987" not in raw and "price" not in raw


def test_a_provider_that_cannot_see_the_auction_gets_no_stream(app, keys, world):
    auction = _open_auction(world)
    tiny = Browser(app)
    tiny.sign_in(keys["tiny"])
    assert tiny.http.get(f"/auctions/{auction}/events").status_code == 403


def test_lists_show_the_newest_50_then_older_and_only_the_keys_own(app, keys, world):
    m, now = world.m, datetime.now(UTC)
    buyer = m.actor("user", world.alice)
    with m.store.write() as s:
        made = [
            submit_request(
                s,
                buyer,
                services="anonymize",
                starts_at=now + timedelta(hours=1),
                ends_at=now + timedelta(hours=2),
                max_rate_bps=10_000_000,
            ).id
            for _ in range(52)
        ]
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    first = alice.get("/requests").text
    shown = [int(i) for i in re.findall(r'href="/requests/(\d+)"', first)]
    assert shown == sorted(made, reverse=True)[:50]
    older = re.search(r'href="/requests\?after=(\d+)"', first)
    assert older and int(older.group(1)) == shown[-1]
    second = alice.get(f"/requests?after={older.group(1)}").text
    rest = [int(i) for i in re.findall(r'href="/requests/(\d+)"', second)]
    assert rest == sorted(made, reverse=True)[50:]
    assert "?after=" not in second
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    assert not set(re.findall(r'href="/requests/(\d+)"', bob.get("/requests").text)) & {
        str(i) for i in made
    }
    assert alice.http.get("/requests?after=nonsense").status_code == 400


def test_the_auctions_list_pages_one_state_at_a_time(app, keys, world):
    ids = [_open_auction(world) for _ in range(51)]
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get("/auctions").text
    older = re.search(r'href="/auctions\?status=open&amp;after=(\d+)"', page)
    assert older
    rest = alice.get(f"/auctions?status=open&after={older.group(1)}").text
    assert re.findall(r'href="/auctions/(\d+)"', rest) == [str(min(ids))]
    assert 'data-testid="auctions-closed"' not in rest and "Older" not in rest
