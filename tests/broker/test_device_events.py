"""A finalized statement reaches the user's devices over server-sent events (claim c08): a
real server, real streams; a device that was offline gets what it missed with Last-Event-ID;
no device hears of another user's statement."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from apiclient import Api, Served, refused, standard_market
from billing_world import award, publish_bytes_tariff

from broker import statements

JAN = datetime(2025, 1, 10, 12, tzinfo=UTC)


def read_events(
    client: httpx.Client, want: int, *, last_id: str | None = None, timeout: float = 20
) -> list[dict]:
    """Open the stream, read ``want`` events (or until the server ends the stream)."""
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    events, event = [], {}
    with client.stream("GET", "/v1/devices/me/events", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line == "":
                if "data" in event:
                    events.append({**event, "data": json.loads(event["data"])})
                    if len(events) == want:
                        break
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                event[name] = value.removeprefix(" ")
    return events


@pytest.fixture
def streamed(store, market):
    with Served(store, event_stream_seconds=3, event_poll_seconds=0.05) as served:
        api = standard_market(Api(served.url, market))
        api.alice_dev_id = market.device(api.alice_id, "alice-phone")
        api.alice_dev = api.key("device", api.alice_dev_id)
        api.bob_dev = api.key("device", market.device(api.bob_id, "bob-phone"))
        yield api, market


def bill_and_close(api, market, month: int, price: int) -> None:
    at = JAN.replace(month=month)
    if month == 1:
        publish_bytes_tariff(market.store, market, api.north, "anonymize", at - timedelta(days=1))
    award(market.store, market.actor("device", api.alice_dev_id), api.north, price=price, at=at)
    statements.close_period(
        market.store.write, market.actor("provider", api.home), api.home, f"2025-{month:02d}"
    )


def plain(api, client) -> httpx.Client:
    """The same key without the contract check (a stream is not a JSON answer)."""
    return httpx.Client(base_url=api.base, headers=dict(client.headers))


def test_a_finalized_statement_reaches_the_users_devices_and_no_one_elses(streamed):
    api, market = streamed
    bill_and_close(api, market, 1, 500)
    alice = plain(api, api.alice_dev)
    [event] = read_events(alice, 1)
    assert event["event"] == "statement.finalized"
    data = event["data"]
    assert (data["period"], data["totals"], data["user"], data["home_provider"]) == (
        "2025-01",
        {"EUR": 500},
        "alice",
        "home",
    )
    # the device fetches the statement it was told about, with its own key
    doc = api.alice_dev.get(f"/v1/statements/{data['statement_id']}").json()
    assert (doc["number"], doc["content_sha256"]) == (data["number"], data["content_sha256"])
    assert read_events(plain(api, api.bob_dev), 1, timeout=10) == []  # bob: nothing
    refused(api.north_key.get("/v1/devices/me/events"), None, 403)
    refused(
        api.alice.get("/v1/devices/me/events", headers={"Last-Event-ID": "x1"}), "Last-Event-ID"
    )


def test_an_open_stream_hears_at_once_and_an_offline_device_catches_up(streamed):
    api, market = streamed
    bill_and_close(api, market, 1, 500)
    alice = plain(api, api.alice_dev)
    [first] = read_events(alice, 1)
    heard = []
    listener = threading.Thread(
        target=lambda: heard.extend(read_events(plain(api, api.alice_dev), 1, last_id=first["id"]))
    )
    listener.start()
    bill_and_close(api, market, 2, 700)  # while the stream is open
    listener.join(20)
    assert [e["data"]["totals"] for e in heard] == [{"EUR": 700}]
    # offline through March and April: reconnecting after February's event gets both
    bill_and_close(api, market, 3, 11)
    bill_and_close(api, market, 4, 13)
    missed = read_events(alice, 3, last_id=heard[0]["id"])
    assert [e["data"]["period"] for e in missed] == ["2025-03", "2025-04"]
    assert [int(e["id"]) for e in missed] == sorted(int(e["id"]) for e in missed)
    everything = read_events(alice, 4)  # no Last-Event-ID: from the start
    assert [e["data"]["period"] for e in everything] == ["2025-01", "2025-02", "2025-03", "2025-04"]
