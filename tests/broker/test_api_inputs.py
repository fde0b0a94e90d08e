"""Hostile input through the HTTP API (issue 7): numbers past 64 bits, calendar edges, text
past its limits, retries of every state-changing call, paging, the same JSON on both
databases, and a JSON 500 with a request id when something unexpected breaks."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from apiclient import ContractCheck, block, provider_body, refused
from openapi_core.exceptions import OpenAPIError
from sqlalchemy import text

BIG = 2**63  # one past the largest BIGINT
HUGE = 2**70


def test_integers_past_64_bits_are_422_naming_the_field(api):
    refused(api.alice.post("/v1/requests", json=block(device_id=BIG)), "device_id")
    refused(api.alice.post("/v1/requests", json=block(max_rate_bps=HUGE)), "max_rate_bps")
    refused(api.alice.post("/v1/requests", json=block(max_price_minor=BIG)), "max_price_minor")
    refused(
        api.alice.post("/v1/requests", json=block(members=[{"kind": "user", "value": BIG}])),
        "members.0.user.value",
    )
    refused(
        api.admin.post("/v1/providers", json=provider_body(1, "x", capacity_bps=HUGE)),
        "capacity_bps",
    )
    refused(
        api.admin.post("/v1/users", json={"name": "x", "home_provider_id": BIG}), "home_provider_id"
    )
    refused(api.admin.post("/v1/keys", json={"kind": "user", "id": HUGE}), "id")
    refused(
        api.north_key.patch(f"/v1/providers/{api.north}", json={"per_gb_minor": BIG}),
        "per_gb_minor",
    )
    refused(
        api.north_key.patch(f"/v1/providers/{api.north}", json={"concession_beta_ppm": 2**40}),
        "concession_beta_ppm",
    )
    rid = api.alice.post("/v1/requests", json=block()).json()["id"]
    closes = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    refused(
        api.alice.post(
            "/v1/auctions",
            json={"request_id": rid, "closes_at": closes, "reserve_price_minor": BIG},
        ),
        "reserve_price_minor",
    )
    refused(
        api.alice.post(
            "/v1/auctions", json={"request_id": HUGE, "closes_at": closes, "reserve_price_minor": 1}
        ),
        "request_id",
    )
    aid = api.alice.post(
        "/v1/auctions", json={"request_id": rid, "closes_at": closes, "reserve_price_minor": 100}
    ).json()["id"]
    refused(
        api.north_key.post(
            f"/v1/auctions/{aid}/bids", json={"provider_id": api.north, "price_minor": BIG}
        ),
        "price_minor",
    )
    for path in (
        f"/v1/requests/{BIG}",
        f"/v1/auctions/{HUGE}",
        f"/v1/awards/{BIG}",
        f"/v1/users/{BIG}",
        f"/v1/providers/{BIG}/jobs",
        f"/v1/bids/{HUGE}",
    ):
        refused(
            api.admin.get(path),
            path.split("/")[2].rstrip("s").replace("bid", "bid") + "_id"
            if not path.endswith("jobs")
            else "provider_id",
        )
    refused(
        api.north_key.post(
            f"/v1/auctions/{HUGE}/bids", json={"provider_id": api.north, "price_minor": 1}
        ),
        "auction_id",
    )
    refused(api.alice.post(f"/v1/requests/{BIG}/cancel"), "request_id")
    refused(api.alice.post(f"/v1/groups/{BIG}/pledges", json={"max_minor": 1}), "group_id")
    refused(api.alice.post("/v1/groups/1/pledges", json={"max_minor": BIG}), "max_minor")


def test_a_price_computed_past_64_bits_is_422_not_a_500(api):
    """2**61 bit/s at 2**40 per Mbit/s-hour for 1000 hours: each value fits, the product not."""
    net = api.make("/v1/networks", {"name": "big"})
    rich = api.make(
        "/v1/providers",
        {
            **provider_body(net, "rich", ("anonymize",)),
            "capacity_bps": 2**62,
            "per_mbps_hour_minor": 2**40,
        },
    )
    uid = api.make("/v1/users", {"name": "carol", "home_provider_id": rich})
    carol = api.key("user", uid)
    start = datetime.now(UTC) + timedelta(hours=1)
    r = carol.post(
        "/v1/requests",
        json=block(
            starts_at=start.isoformat(),
            ends_at=(start + timedelta(hours=1000)).isoformat(),
            max_rate_bps=2**61,
        ),
    )
    refused(r, "max_rate_bps")
    assert "past the largest amount" in r.json()["message"]


@pytest.mark.parametrize(
    "field,value",
    [("starts_at", "0001-01-01T00:30:00+01:00"), ("ends_at", "9999-12-31T23:30:00-01:00")],
)
def test_datetimes_at_the_calendars_edge_are_422(api, field, value):
    refused(api.alice.post("/v1/requests", json=block(**{field: value})), field)


def test_an_unexpected_failure_answers_json_500_with_the_request_id_it_logged(api, market, caplog):
    with market.store.write() as s:  # the store breaks behind the server's back
        s.execute(text("DROP TABLE ratings"))
    with caplog.at_level(logging.ERROR, logger="broker.api.main"):
        r = api.alice.get(f"/v1/providers/{api.north}", headers={"X-Request-ID": "probe-17"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal" and body["request_id"] == "probe-17"
    assert r.headers["x-request-id"] == "probe-17"
    assert any("probe-17" in rec.getMessage() for rec in caplog.records)
    r = api.alice.get(f"/v1/providers/{api.north}", headers={"X-Request-ID": "bad id!"})
    assert r.status_code == 500 and r.json()["request_id"] != "bad id!"
    assert len(r.json()["request_id"]) == 32 and r.headers["x-request-id"] == r.json()["request_id"]


def test_silently_accepted_input_is_refused(api, market):
    refused(api.alice.post("/v1/requests", json=block(currency="")), "currency")
    refused(
        api.admin.post(
            "/v1/keys", json={"kind": "user", "id": api.alice_id, "label": "x" * 10_000}
        ),
        "label",
    )
    refused(
        api.alice.post(
            f"/v1/users/{api.alice_id}/phone-numbers",
            json={"number": "030 1234567", "region": "D" * 10_000},
        ),
        "region",
    )
    refused(
        api.alice.post(
            "/v1/requests",
            json=block(members=[{"kind": "phone", "value": "030 1234567", "region": "Q" * 10_000}]),
        ),
        "members.0.phone.region",
    )
    year_ago = datetime.now(UTC) - timedelta(days=365)
    r = api.alice.post(
        "/v1/requests",
        json=block(
            starts_at=year_ago.isoformat(), ends_at=(year_ago + timedelta(hours=1)).isoformat()
        ),
    )
    refused(r, "ends_at")
    # Withdrawing from a group one is not a member of reveals nothing of it: 404.
    g = api.alice.post("/v1/requests", json=block(group=True)).json()["group_id"]
    api.alice.post(f"/v1/groups/{g}/pledges", json={"max_minor": 10**6})
    api.alice.post(f"/v1/groups/{g}/close")
    r = api.bob.delete(f"/v1/groups/{g}/pledges/mine")
    assert r.status_code == 404 and "closed" not in r.text and "funded" not in r.text


def test_device_member_as_text_and_db_sums_answer_the_same_types_on_both_databases(api):
    r = api.alice.post("/v1/requests", json=block(members=[{"kind": "device", "value": "7"}]))
    refused(r, "members.0.device.value")
    g = api.alice.post("/v1/requests", json=block(group=True)).json()["group_id"]
    api.alice.post(f"/v1/groups/{g}/pledges", json={"max_minor": 5000})
    bob_phone = api.bob.post(f"/v1/users/{api.bob_id}/devices", json={"name": "p"}).json()
    assert bob_phone["id"] > 0
    closed = api.alice.post(f"/v1/groups/{g}/close").json()
    assert type(closed["max_price_minor"]) is int and closed["max_price_minor"] == 5000
    view = api.alice.get(f"/v1/groups/{g}").json()
    assert type(view["pledged_total_minor"]) is int


def keyed(client: httpx.Client, method: str, path: str, key: str, **kw) -> httpx.Response:
    return client.request(method, path, headers={"Idempotency-Key": key}, **kw)


def test_every_state_changing_call_takes_an_idempotency_key(api):
    def twice(client, method, path, key, status=200, **kw):
        first = keyed(client, method, path, key, **kw)
        assert first.status_code == status, first.text
        again = keyed(client, method, path, key, **kw)
        assert again.status_code == status, again.text
        return first.json(), again.json()

    rid = api.alice.post("/v1/requests", json=block()).json()["id"]
    first, again = twice(api.alice, "POST", f"/v1/requests/{rid}/cancel", "c1")
    assert first == again and first["status"] == "cancelled"
    r = api.alice.post(f"/v1/requests/{rid}/cancel")
    assert r.status_code == 409  # without the key a second cancel is a conflict
    r = keyed(api.alice, "POST", f"/v1/requests/{rid + 0}/cancel", "c1")
    assert r.status_code == 200
    first, again = twice(
        api.north_key,
        "PATCH",
        f"/v1/providers/{api.north}",
        "p1",
        json={"capacity_bps": 123_000_000},
    )
    assert first == again and first["capacity_bps"] == 123_000_000
    r = keyed(api.north_key, "PATCH", f"/v1/providers/{api.north}", "p1", json={"capacity_bps": 1})
    assert r.status_code == 409 and r.json()["error"] == "idempotency_key_reused"
    g = api.alice.post("/v1/requests", json=block(group=True, services=["identity"])).json()[
        "group_id"
    ]
    keyed(api.alice, "POST", f"/v1/groups/{g}/pledges", "g1", json={"max_minor": 10**6})
    first, again = twice(api.alice, "DELETE", f"/v1/groups/{g}/pledges/mine", "w1")
    assert first == again and first["pledges"] == []
    api.alice.post(f"/v1/groups/{g}/pledges", json={"max_minor": 10**6})
    first, again = twice(api.alice, "POST", f"/v1/groups/{g}/close", "gc1")
    assert first == again and first["status"] == "served"  # by home, within the pledges
    issued = api.admin.post("/v1/keys", json={"kind": "user", "id": api.bob_id}).json()
    first, again = twice(api.admin, "DELETE", f"/v1/keys/{issued['prefix']}", "k1")
    assert first == again
    award = api.alice.get("/v1/awards").json()["items"][0]
    job = award["job"]["id"]
    assert award["provider_id"] == api.home
    first, again = twice(
        api.home_key, "POST", f"/v1/jobs/{job}/status", "j1", json={"status": "running"}
    )
    assert first["status"] == again["status"] == "running"
    # An auction opened, retried with the same body (opens_at left out) later: the same one.
    rid = api.alice.post("/v1/requests", json=block()).json()["id"]
    body = {
        "request_id": rid,
        "reserve_price_minor": 500,
        "closes_at": (datetime.now(UTC) + timedelta(seconds=1.2)).isoformat(),
    }
    first = keyed(api.alice, "POST", "/v1/auctions", "a1", json=body)
    time.sleep(0.05)
    again = keyed(api.alice, "POST", "/v1/auctions", "a1", json=body)
    assert first.status_code == again.status_code == 201, again.text
    assert first.json()["id"] == again.json()["id"]
    aid = first.json()["id"]
    api.north_key.post(
        f"/v1/auctions/{aid}/bids", json={"provider_id": api.north, "price_minor": 100}
    )
    time.sleep(
        max(0.0, (datetime.fromisoformat(body["closes_at"]) - datetime.now(UTC)).total_seconds())
        + 0.05
    )
    first, again = twice(api.alice, "POST", f"/v1/auctions/{aid}/close", "x1")
    assert first == again and first["status"] == "closed"


def test_every_list_pages_with_a_cursor(api):
    made = [api.alice.post("/v1/requests", json=block()).json()["id"] for _ in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.alice.get("/v1/requests", params=params).json()
        seen += [r["id"] for r in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True) and pages == 3
    refused(api.alice.get("/v1/requests", params={"cursor": "garbage!"}), "cursor")
    refused(api.alice.get("/v1/requests", params={"limit": 0}), "limit")
    refused(api.alice.get("/v1/requests", params={"limit": 10**6}), "limit")
    for path in (
        "/v1/awards",
        "/v1/auctions",
        f"/v1/requests/{made[0]}/candidates",
        f"/v1/providers/{api.north}/jobs",
    ):
        client = api.north_key if "jobs" in path else api.alice
        page = client.get(path, params={"limit": 1}).json()
        assert set(page) == {"items", "next_cursor"}, path
    candidates = api.alice.get(f"/v1/requests/{made[0]}/candidates", params={"limit": 1}).json()
    rest = api.alice.get(
        f"/v1/requests/{made[0]}/candidates",
        params={"limit": 1, "cursor": candidates["next_cursor"]},
    ).json()
    assert [c["name"] for c in candidates["items"] + rest["items"]] == ["north", "south"]
    assert rest["next_cursor"] is None


def test_the_contract_check_fails_an_answer_that_breaks_the_declared_model(served):
    check = ContractCheck(served.url)
    request = httpx.Request("GET", f"{served.url}/v1/providers/1")
    card = {
        "id": 1,
        "name": "n",
        "network_id": 1,
        "services": [],
        "capacity_bps": 1,
        "currency": "EUR",
        "negotiates": "policy",
        "reputation": {"score": 0.5, "count": 0},
        "delivery": {
            "jobs": 0,
            "windows": 0,
            "windows_met": 0,
            "windows_met_share": None,
            "block_honoured_share": None,
            "failed_share": None,
            "summary": "no measured deliveries yet",
        },
    }
    check(httpx.Response(200, request=request, json=card))
    bad = httpx.Response(200, request=request, json={**card, "capacity_bps": "1"})
    with pytest.raises(OpenAPIError):
        check(bad)
