"""The HTTP API through a real client against a uvicorn server on a random local port."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from apiclient import block, provider_body
from marketplace import negotiation_status, overdue_negotiation
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from broker.api import create_app
from broker.api.main import expire_negotiations
from broker.models import Bid


@pytest.fixture
def server(served):
    return served.url


def test_openapi_is_published(server):
    r = httpx.get(f"{server}/openapi.json")
    assert r.status_code == 200
    assert "/v1/auctions/{auction_id}/bids" in r.json()["paths"]
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"


def test_401_without_a_valid_key(api):
    for client in (api.client(None), api.client("pktx_0123456789ab_wrong")):
        r = client.get("/v1/me")
        assert r.status_code == 401
        assert r.json()["error"] == "not_authenticated"
    assert "Authorization: Bearer" in api.client(None).get("/v1/me").json()["message"]
    r = httpx.get(f"{api.base}/v1/me", headers={"X-API-Key": "pktx_bad"})
    assert r.status_code == 401 and "malformed" in r.json()["message"]


def test_403_404_422_as_json_with_actionable_messages(api):
    rid = api.alice.post("/v1/requests", json=block()).json()["id"]
    r = api.bob.get(f"/v1/requests/{rid}")
    assert r.status_code == 403 and r.json() == {
        "error": "forbidden",
        "message": f"request {rid}: request {rid} is not user {api.bob_id}'s",
        "where": f"request {rid}",
    }
    r = api.alice.get("/v1/auctions/999")
    assert r.status_code == 404 and r.json()["message"] == "auction 999: no auction with id 999"
    assert api.alice.get("/v1/nowhere").status_code == 404
    r = api.alice.post("/v1/requests", json=block(max_rate_bps=1.5))
    assert r.status_code == 422 and r.json()["field"] == "max_rate_bps"
    r = api.alice.post("/v1/requests", json=block(services=["teleport"]))
    assert r.status_code == 422 and r.json()["field"] == "services"
    assert "unknown service(s) teleport" in r.json()["message"]
    r = api.alice.post("/v1/requests", json=block(starts_at="2030-01-01T00:00:00"))
    assert r.status_code == 422 and r.json()["field"] == "starts_at"
    r = api.admin.post("/v1/networks", json={"name": "home"})
    assert r.status_code == 409 and r.json()["error"] == "already_exists"


def test_an_auction_end_to_end_with_a_late_bid_refused(api):
    r = api.alice.post(
        "/v1/requests",
        json=block(
            members=[
                {"kind": "phone", "value": "+14155552671"},
                {"kind": "user", "value": api.bob_id},
            ]
        ),
    )
    assert r.status_code == 201 and r.json()["status"] == "brokering"
    rid = r.json()["id"]
    candidates = api.alice.get(f"/v1/requests/{rid}/candidates").json()["items"]
    assert [c["name"] for c in candidates] == ["north", "south"]
    closes = datetime.now(UTC) + timedelta(seconds=1.5)
    r = api.alice.post(
        "/v1/auctions",
        json={"request_id": rid, "closes_at": closes.isoformat(), "reserve_price_minor": 500},
    )
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    r = api.north_key.post(
        f"/v1/auctions/{aid}/bids", json={"provider_id": api.south, "price_minor": 1}
    )
    assert r.status_code == 403  # a provider cannot bid as another
    assert (
        api.north_key.post(
            f"/v1/auctions/{aid}/bids", json={"provider_id": api.north, "price_minor": 80}
        ).status_code
        == 201
    )
    south_bid = api.south_key.post(
        f"/v1/auctions/{aid}/bids", json={"provider_id": api.south, "price_minor": 90}
    ).json()
    assert api.north_key.get(f"/v1/bids/{south_bid['id']}").status_code == 403  # sealed
    seen = api.alice.get(f"/v1/auctions/{aid}").json()
    assert seen["bids"] == [] and {b["provider"] for b in seen["bidders"]} == {"north", "south"}
    r = api.alice.post(f"/v1/auctions/{aid}/close")
    assert r.status_code == 409 and r.json()["error"] == "auction_still_open"
    time.sleep(max(0.0, (closes - datetime.now(UTC)).total_seconds()) + 0.05)
    r = api.north_key.post(
        f"/v1/auctions/{aid}/bids", json={"provider_id": api.north, "price_minor": 70}
    )
    assert r.status_code == 409 and r.json()["error"] == "late_bid"
    assert "bids closed at" in r.json()["message"]
    closed = api.alice.post(f"/v1/auctions/{aid}/close").json()
    assert [(b["provider"], b["won"], b["payment_minor"]) for b in closed["bids"]] == [
        ("north", True, 90),
        ("south", False, None),
    ]
    assert closed["bids"][0]["reputation"] == {"score": 0.5, "count": 0}
    award = api.alice.get("/v1/awards").json()["items"][0]
    assert (award["provider_id"], award["price_minor"], award["source"]) == (
        api.north,
        90,
        "auction",
    )
    jobs = api.north_key.get(f"/v1/providers/{api.north}/jobs").json()["items"]
    assert [j["award_id"] for j in jobs] == [award["id"]]
    assert api.south_key.get(f"/v1/providers/{api.north}/jobs").status_code == 403
    r = api.alice.post(f"/v1/awards/{award['id']}/ratings", json={"score": 100})
    assert r.status_code == 201 and r.json()["direction"] == "service"
    assert (
        api.south_key.post(f"/v1/awards/{award['id']}/ratings", json={"score": 0}).status_code
        == 403
    )
    assert (
        api.north_key.post(f"/v1/awards/{award['id']}/ratings", json={"score": 90}).json()[
            "direction"
        ]
        == "payment"
    )
    card = api.bob.get(f"/v1/providers/{api.north}").json()
    assert card["reputation"]["count"] == 1 and card["reputation"]["score"] > 0.5


def test_retries_with_an_idempotency_key_do_not_duplicate(api, store):
    rid = api.alice.post("/v1/requests", json=block()).json()["id"]
    closes = datetime.now(UTC) + timedelta(hours=1)
    aid = api.alice.post(
        "/v1/auctions",
        json={"request_id": rid, "reserve_price_minor": 500, "closes_at": closes.isoformat()},
    ).json()["id"]
    headers = {"Idempotency-Key": "bid-once"}
    body = {"provider_id": api.north, "price_minor": 80}
    first = api.north_key.post(f"/v1/auctions/{aid}/bids", json=body, headers=headers).json()
    again = api.north_key.post(f"/v1/auctions/{aid}/bids", json=body, headers=headers).json()
    assert first == again and first["revision"] == 1
    r = api.north_key.post(
        f"/v1/auctions/{aid}/bids", json={**body, "price_minor": 81}, headers=headers
    )
    assert r.status_code == 409 and r.json()["error"] == "idempotency_key_reused"
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Bid)) == 1


def test_concurrent_bids_are_neither_lost_nor_duplicated(api, store):
    rid = api.alice.post("/v1/requests", json=block()).json()["id"]
    closes = datetime.now(UTC) + timedelta(hours=1)
    aid = api.alice.post(
        "/v1/auctions",
        json={"request_id": rid, "reserve_price_minor": 5000, "closes_at": closes.isoformat()},
    ).json()["id"]
    net = api.make("/v1/networks", {"name": "many"})
    bidders = [
        (p, api.key("provider", p))
        for p in (api.make("/v1/providers", provider_body(net, f"p{i}")) for i in range(16))
    ]

    def bid(item):
        provider, client = item
        codes = []
        for price in (300, 200, 100):  # each revises its bid, retrying once with the same key
            for _ in range(2):
                codes.append(
                    client.post(
                        f"/v1/auctions/{aid}/bids",
                        json={"provider_id": provider, "price_minor": price + provider},
                        headers={"Idempotency-Key": f"{provider}-{price}"},
                    ).status_code
                )
        return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(bid, bidders) for c in cs]
    assert codes == [201] * len(codes)
    with store.read() as s:
        rows = s.execute(select(Bid.provider_id, Bid.price_minor, Bid.revision)).all()
    assert sorted(rows) == sorted((p, 100 + p, 3) for p, _ in bidders)


def test_a_negotiation_by_hand_over_http(api):
    rid = api.alice.post(
        "/v1/requests", json={"services": ["anonymize"], "volume_bytes": 10 * 10**9}
    ).json()["id"]
    deadline = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = api.alice.post(
        "/v1/negotiations",
        json={"request_id": rid, "provider_id": api.north, "mode": "user", "deadline": deadline},
    )
    assert r.status_code == 201, r.text
    n = r.json()
    assert n["moves"][0]["side"] == "seller" and n["moves"][0]["price_minor"] == 1000
    r = api.alice.post(
        f"/v1/negotiations/{n['id']}/moves", json={"action": "offer", "price_minor": 850}
    )
    moves = r.json()["moves"]
    assert moves[-1]["side"] == "seller"
    r = api.alice.post(f"/v1/negotiations/{n['id']}/moves", json={"action": "accept"})
    assert r.json()["status"] == "agreed"
    assert api.bob.get(f"/v1/negotiations/{n['id']}").status_code == 403


def test_the_bid_route_is_authenticated_like_every_other(api):
    spec = httpx.get(f"{api.base}/openapi.json").json()
    assert (
        spec["paths"]["/v1/auctions/{auction_id}/bids"]["post"]["security"]
        == spec["paths"]["/v1/requests"]["post"]["security"]
    )
    for client in (api.client(None), api.client("pktx_0123456789ab_wrong")):
        r = client.post("/v1/auctions/1/bids", json={"provider_id": api.north, "price_minor": 1})
        assert r.status_code == 401 and r.json()["error"] == "not_authenticated"
    r = api.north_key.post(
        "/v1/auctions/999/bids", json={"provider_id": api.north, "price_minor": 1}
    )
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_the_app_expires_overdue_negotiations_on_a_timer(world, monkeypatch):
    nid = overdue_negotiation(world)
    rounds = []

    def flaky(store):
        rounds.append(store)
        if len(rounds) == 1:
            raise OperationalError("UPDATE negotiations", {}, Exception("database is locked"))
        return expire_negotiations(store)

    monkeypatch.setattr("broker.api.main.expire_negotiations", flaky)

    async def serve(app, seconds: float) -> None:
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and negotiation_status(world.m.store, nid) == "open":
                await asyncio.sleep(0.02)

    asyncio.run(serve(create_app(world.m.store, expire_every=None), 0.3))
    assert rounds == [] and negotiation_status(world.m.store, nid) == "open"
    asyncio.run(serve(create_app(world.m.store, expire_every=0.05), 10))
    assert negotiation_status(world.m.store, nid) == "expired"
    assert len(rounds) >= 2  # the failed first round did not stop the timer
    stopped_at = len(rounds)
    time.sleep(0.2)
    assert len(rounds) == stopped_at  # and it ends with the app
