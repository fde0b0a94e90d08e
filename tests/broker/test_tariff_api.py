"""Tariff versions over HTTP: the provider publishes, anyone reads; a version is never
replaced, never starts before the one before it, and every fault names its dotted field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apiclient import refused
from test_usage import publish, report, tariff_body, volume_job

from broker.tariffs import Tariff


def later(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def test_a_provider_publishes_versions_and_anyone_reads_them(api):
    v1 = publish(api)
    assert (v1["version"], v1["services"], v1["provider_id"]) == (1, ["identity"], api.home)
    assert Tariff.from_json(v1["tariff"]).to_json() == v1["tariff"]
    v2 = publish(api, active_from=later(1), connect_fee="0.50")
    assert v2["version"] == 2 and v2["tariff"]["connect_fee"] == "0.50"
    other = publish(api, services=["identity", "checksum"])
    assert other["version"] == 1
    listed = api.bob.get(f"/v1/providers/{api.home}/tariffs").json()
    assert [t["id"] for t in listed["items"]] == [v1["id"], v2["id"], other["id"]]
    one = api.north_key.get(
        f"/v1/providers/{api.home}/tariffs", params={"services": "identity", "limit": 1}
    ).json()
    assert [t["id"] for t in one["items"]] == [v1["id"]] and one["next_cursor"]
    rest = api.north_key.get(
        f"/v1/providers/{api.home}/tariffs",
        params={"services": "identity", "cursor": one["next_cursor"]},
    ).json()
    assert [t["id"] for t in rest["items"]] == [v2["id"]] and rest["next_cursor"] is None
    assert api.alice.get(f"/v1/tariffs/{v2['id']}").json() == v2
    refused(api.alice.get("/v1/tariffs/999999"), None, 404)
    refused(api.alice.get(f"/v1/providers/{2**63}/tariffs"), "provider_id")


def test_versions_are_never_replaced_nor_out_of_order(api):
    publish(api)
    path = f"/v1/providers/{api.home}/tariffs"
    r = api.home_key.post(path, json=tariff_body(version=1, active_from=later(1)))
    refused(r, None, 409)
    r = api.home_key.post(path, json=tariff_body(version=3, active_from=later(1)))
    refused(r, None, 409)
    refused(
        api.home_key.post(
            path, json=tariff_body(active_from=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
        ),
        "active_from",
    )
    # once usage is rated under the tariff, a new version may not reach back before it
    job = volume_job(api)
    assert report(api, job, 1, bytes_out=2 * 10**9).json()["tariff_version"] == 1
    refused(
        api.home_key.post(
            path,
            json=tariff_body(active_from=(datetime.now(UTC) - timedelta(minutes=30)).isoformat()),
        ),
        "active_from",
    )
    assert api.home_key.post(path, json=tariff_body(active_from=later(1))).status_code == 201


def test_only_the_provider_publishes(api):
    path = f"/v1/providers/{api.home}/tariffs"
    for client in (api.north_key, api.alice, api.admin):
        refused(client.post(path, json=tariff_body()), None, 403)
    refused(api.home_key.post("/v1/providers/999999/tariffs", json=tariff_body()), None, 404)


def test_a_faulty_tariff_names_its_field(api):
    path = f"/v1/providers/{api.home}/tariffs"

    def bad(field, **kw):
        refused(api.home_key.post(path, json=tariff_body(**kw)), field)

    dims = tariff_body()["dimensions"]
    bad("currency", currency="XXX")
    bad("connect_fee", connect_fee="0.005")
    bad("connect_fee", connect_fee="-1")
    bad("services", services=["teleport"])
    bad("active_from", active_from="2026-01-01T00:00:00")
    bad(
        "dimensions.bytes.tiers[0].price",
        dimensions={"bytes": {"tiers": [{"up_to": None, "price": "abc"}]}},
    )
    bad(
        "dimensions.bytes.tiers[1].up_to",
        dimensions={
            "bytes": {
                "tiers": [
                    {"up_to": 10, "price": "1"},
                    {"up_to": 5, "price": "1"},
                    {"up_to": None, "price": "1"},
                ]
            }
        },
    )
    bad(
        "dimensions.bytes.tiers[0].up_to",
        dimensions={"bytes": {"tiers": [{"up_to": 10, "price": "1"}]}},
    )
    bad("dimensions.bytes.increment", dimensions={"bytes": {**dims["bytes"], "increment": 0}})
    bad("dimensions.frames", dimensions={"frames": dims["bytes"]})
    bad("version", version=2**63)
    bad("provider_id", provider_id=1)
    assert api.home_key.get(path).json()["items"] == []


def test_publishing_is_idempotent(api):
    path = f"/v1/providers/{api.home}/tariffs"
    body = tariff_body()
    first = api.home_key.post(path, json=body, headers={"Idempotency-Key": "t1"})
    again = api.home_key.post(path, json=body, headers={"Idempotency-Key": "t1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    r = api.home_key.post(
        path, json=tariff_body(active_from=later(1)), headers={"Idempotency-Key": "t1"}
    )
    refused(r, None, 409)
    assert len(api.home_key.get(path).json()["items"]) == 1
