"""Usage reports over HTTP (issue 9): taken in exactly once, charged as differences under the
delivering provider's tariff, split among the payers; every bad input refused whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from apiclient import block, refused, volume_job

from broker.rating import rate
from broker.tariffs import Tariff

BIG = 2**63
MB = 10**6


def tariff_body(**kw) -> dict:
    """Home's tariff for "identity": 0.001 EUR per MB of bytes past the award's terms, 0.10
    per minute past a block's end (charged per second), a connect fee the price covers."""
    body = {
        "services": ["identity"],
        "currency": "EUR",
        "connect_fee": "0.40",
        "active_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "dimensions": {
            "bytes": {"rate_unit": MB, "tiers": [{"up_to": None, "price": "0.001"}]},
            "seconds": {"rate_unit": 60, "tiers": [{"up_to": None, "price": "0.10"}]},
        },
    }
    return {**body, **kw}


def publish(api, **kw) -> dict:
    r = api.home_key.post(f"/v1/providers/{api.home}/tariffs", json=tariff_body(**kw))
    assert r.status_code == 201, r.text
    return r.json()


def report(api, job: int, sequence: int, **counters) -> httpx.Response:
    return api.home_key.post(f"/v1/jobs/{job}/usage", json={"sequence": sequence, **counters})


def usage_total(api, job: int, client=None) -> int:
    r = (client or api.alice).get(f"/v1/jobs/{job}/usage")
    assert r.status_code == 200, r.text
    return sum(c["amount_minor"] for c in r.json()["charges"] if c["kind"] != "price")


def test_a_report_is_taken_in_exactly_once(api):
    publish(api)
    job = volume_job(api)
    first = report(api, job, 1, bytes_out=10**9 + 5 * MB, packets_in=10)
    assert first.status_code == 201, first.text
    assert first.json()["charged_minor"] == 1  # 5 MB past the volume at 0.001: 0.005 -> 0.01
    again = report(api, job, 1, bytes_out=10**9 + 5 * MB, packets_in=10)
    assert again.status_code == 200 and again.json() == first.json()
    refused(report(api, job, 1, bytes_out=10**9 + 6 * MB, packets_in=10), None, 409)
    assert report(api, job, 1, bytes_out=10**9 + 6 * MB).json()["error"] == "report_mismatch"
    refused(report(api, job, 2, bytes_out=10**9, packets_in=10), "bytes_out")
    refused(report(api, job, 2, bytes_out=10**9 + 5 * MB, packets_in=9), "packets_in")
    resent = [report(api, job, 1, bytes_out=10**9 + 5 * MB, packets_in=10) for _ in range(3)]
    assert {r.status_code for r in resent} == {200}
    view = api.alice.get(f"/v1/jobs/{job}/usage").json()
    assert view["reports"] == 1 and view["bytes_out"] == 10**9 + 5 * MB
    assert usage_total(api, job) == 1


def test_a_lost_report_is_made_up_by_the_next_and_a_late_one_charges_nothing(api):
    t = Tariff.from_json({**publish(api)["tariff"]})
    job = volume_job(api)
    steps = {1: 10**9 + 3 * MB, 2: 10**9 + 700 * MB, 3: 10**9 + 1234 * MB + 17}
    assert report(api, job, 1, bytes_out=steps[1]).status_code == 201
    third = report(api, job, 3, bytes_out=steps[3])  # report 2 is lost on the way
    assert third.status_code == 201
    once = rate(t, {"bytes": steps[3] - 10**9}).minor - rate(t, {}).minor
    assert usage_total(api, job) == once == 123  # 1,234.000017 MB: 1.234 -> 1.23
    late = report(api, job, 2, bytes_out=steps[2])  # ... and turns up after all
    assert late.status_code == 201 and late.json()["charged_minor"] == 0
    refused(report(api, job, 4, bytes_out=steps[3] - 1), "bytes_out")
    assert usage_total(api, job) == once
    # a late report must lie between its neighbours
    refused(report(api, job, 2**40, bytes_out=steps[1] - 1), "bytes_out")


def test_the_price_is_a_charge_line_and_usage_within_the_terms_is_free(api):
    publish(api)
    job = volume_job(api)
    assert (
        report(api, job, 1, bytes_out=10**9, packets_in=10**6, seconds=10**5).json()[
            "charged_minor"
        ]
        == 0
    )
    view = api.home_key.get(f"/v1/jobs/{job}/usage").json()
    assert view["charges"] == [
        {"user_id": api.alice_id, "kind": "price", "currency": "EUR", "amount_minor": 100}
    ]  # 1 GB at home's 100 per GB


def test_no_tariff_no_usage_charge(api):
    job = volume_job(api)
    r = report(api, job, 1, bytes_out=2 * 10**9)
    assert r.status_code == 201 and r.json()["charged_minor"] == 0
    assert r.json()["tariff_id"] is None


def test_a_group_pays_usage_by_its_shares_to_the_minor_unit(api):
    publish(api)
    g = api.alice.post(
        "/v1/requests",
        json=block(
            group=True,
            services=["identity"],
            members=[
                {"kind": "user", "value": api.alice_id},
                {"kind": "user", "value": api.bob_id},
            ],
        ),
    ).json()
    group = g["group_id"]
    api.alice.post(f"/v1/groups/{group}/pledges", json={"max_minor": 10**6})
    r = api.bob.post(f"/v1/groups/{group}/pledges", json={"max_minor": 10**6})
    assert r.status_code in (200, 201), r.text
    assert api.alice.post(f"/v1/groups/{group}/close").json()["status"] == "served"
    award = api.alice.get("/v1/awards").json()["items"][0]
    shares = {p["user_id"]: p["share_minor"] for p in award["payers"]}
    job = award["job"]["id"]
    # an hour's block; 3,601..3,700 s run over: 100 s at 0.10/min = 0.1667 -> 0.17, then more
    for n, seconds in enumerate((3000, 3700, 3701, 3999, 7201), start=1):
        assert report(api, job, n, seconds=seconds).status_code == 201
    view = api.bob.get(f"/v1/jobs/{job}/usage").json()
    by_user = {}
    for c in view["charges"]:
        by_user.setdefault(c["user_id"], {})[c["kind"]] = c["amount_minor"]
    assert {u: k["price"] for u, k in by_user.items()} == shares
    assert sum(k.get("seconds", 0) for k in by_user.values()) == 600  # 3,601 s over: 6.0017
    assert set(by_user) == {api.alice_id, api.bob_id}


def test_bad_reports_are_refused_naming_the_field_and_leave_nothing(api):
    publish(api)
    job = volume_job(api)
    refused(report(api, job, 1, bytes_out=-1), "bytes_out")
    refused(report(api, job, 1, bytes_out=1.5), "bytes_out")
    refused(report(api, job, 1, bytes_out="7"), "bytes_out")
    refused(report(api, job, 1, bytes_out=BIG), "bytes_out")
    refused(report(api, job, 1, bytes_out=2**64), "bytes_out")
    publish(
        api,
        services=["identity"],
        active_from=(datetime.now(UTC) - timedelta(minutes=30)).isoformat(),
        dimensions={"bytes": {"tiers": [{"up_to": None, "price": "1000"}]}},
    )
    refused(report(api, job, 1, bytes_out=BIG - 1), "bytes_out")  # a charge past 64 bits
    refused(report(api, job, 1, frames=3), "frames")
    refused(report(api, job, 0, bytes_out=1), "sequence")
    refused(report(api, job, BIG, bytes_out=1), "sequence")
    refused(report(api, job, 1, services={"anonymize": {"packets": 1}}), "services.anonymize")
    refused(report(api, job, 1, services={"identity": {"frames": 1}}), "services.identity.frames")
    refused(
        report(api, job, 1, services={"identity": {"packets": -2}}), "services.identity.packets"
    )
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    refused(report(api, job, 1, at=future), "at")
    refused(report(api, job, 1, at="2026-01-01T00:00:00"), "at")  # no zone
    refused(api.home_key.post(f"/v1/jobs/{BIG}/usage", json={"sequence": 1}), "job_id")
    refused(api.home_key.post("/v1/jobs/999999/usage", json={"sequence": 1}), None, 404)
    refused(api.north_key.post(f"/v1/jobs/{job}/usage", json={"sequence": 1}), None, 403)
    refused(api.alice.post(f"/v1/jobs/{job}/usage", json={"sequence": 1}), None, 403)
    refused(httpx.post(f"{api.base}/v1/jobs/{job}/usage", json={"sequence": 1}), None, 401)
    view = api.alice.get(f"/v1/jobs/{job}/usage").json()
    assert view["reports"] == 0 and view["last_sequence"] is None
    assert usage_total(api, job) == 0
    # service counters are cumulative too
    assert report(api, job, 1, services={"identity": {"packets": 5}}).status_code == 201
    refused(report(api, job, 2, services={"identity": {"packets": 4}}), "services.identity.packets")
    refused(report(api, job, 2), "services.identity.packets")


def test_a_finished_job_takes_no_more_usage_but_replays_still_answer(api):
    job = volume_job(api)
    assert report(api, job, 1, bytes_out=5).status_code == 201
    for status in ("running", "done"):
        r = api.home_key.post(f"/v1/jobs/{job}/status", json={"status": status})
        assert r.status_code == 200, r.text
    refused(report(api, job, 2, bytes_out=6), None, 409)
    assert report(api, job, 2, bytes_out=6).json()["error"] == "wrong_state"
    assert report(api, job, 1, bytes_out=5).status_code == 200


def test_only_the_awards_parties_read_a_jobs_usage(api):
    job = volume_job(api)
    report(api, job, 1, bytes_out=5)
    for client in (api.alice, api.home_key, api.admin):
        assert client.get(f"/v1/jobs/{job}/usage").status_code == 200
    for client in (api.bob, api.north_key):
        refused(client.get(f"/v1/jobs/{job}/usage"), None, 403)
    refused(api.alice.get("/v1/jobs/999999/usage"), None, 404)


def test_a_revoked_key_reports_no_more_though_keys_are_cached(api):
    """The intake remembers a key's actor for a moment (KeyCache); a key revoked in the same
    process is dropped at once, so the next report is a 401."""
    publish(api)
    job = volume_job(api)
    assert report(api, job, 1, bytes_out=MB).status_code == 201
    assert report(api, job, 2, bytes_out=2 * MB).status_code == 201  # from the cache
    prefix = api.home_key.headers["Authorization"].split("_")[1]
    r = api.home_key.delete(f"/v1/keys/{prefix}")
    assert r.status_code == 200, r.text
    r = report(api, job, 3, bytes_out=3 * MB)
    assert r.status_code == 401 and "revoked" in r.json()["message"], r.text


def test_the_key_cache_is_bounded_expires_and_forgets_revoked_keys(monkeypatch):
    from broker.actors import Actor
    from broker.api.deps import KeyCache

    clock = [100.0]
    monkeypatch.setattr("broker.api.deps.time.monotonic", lambda: clock[0])
    cache = KeyCache(ttl=2.0, size=2)
    actors = {n: Actor("provider", n, provider_ids=frozenset({n})) for n in (1, 2, 3)}
    for n, actor in actors.items():
        cache.put(f"pktx_p{n}_secret", actor, since=clock[0])
    assert cache.get("pktx_p1_secret") is None  # the least recently used went
    assert cache.get("pktx_p3_secret") == actors[3]
    assert cache.get("pktx_p3_other") is None and cache.get(None) is None
    KeyCache.revoked("p3")
    assert cache.get("pktx_p3_secret") is None
    clock[0] += 1.9
    assert cache.get("pktx_p2_secret") == actors[2]
    clock[0] += 0.2  # revoked elsewhere, a key is refused again at most ttl after its lookup
    assert cache.get("pktx_p2_secret") is None


def test_the_plain_usage_route_answers_bad_input_as_the_declared_operation_does(store):
    """POST /v1/jobs/{id}/usage is served by a plain route that validates by hand (no
    dependency solving); FastAPI's own operation, declared for the OpenAPI document, would
    answer every bad request the same."""
    import asyncio

    from fastapi.routing import APIRoute

    from broker.api.main import create_app
    from broker.api.routes import billing

    bad = [
        ("0", b'{"sequence": 1}', "application/json"),
        ("abc", b"{}", "application/json"),
        (str(BIG), b"{}", "application/json"),
        ("5", b"{bad", "application/json"),
        ("5", b"", "application/json"),
        ("5", b"null", "application/json"),
        ("5", b"[1]", "application/json"),
        ("5", b'{"sequence": 1.0}', "application/json"),
        ("5", b'{"sequence": 1, "bytes_out": -1}', "application/json"),
        ("5", b'{"sequence": 1, "zzz": 1}', "application/json"),
        ("5", b'{"sequence": 1, "at": "2020-01-01T00:00:00"}', "application/json"),
        ("5", b'{"sequence": 1, "services": {"x": {"packets": "1"}}}', "application/json"),
        ("5", b'{"sequence": 1}', "text/plain"),
        ("5", b'{"sequence": 1}', None),
        ("5", b'{"sequence": 1}', "application/merge-patch+json; charset=utf-8"),
    ]

    async def ask(app) -> list:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker"
        ) as client:
            return [
                (r.status_code, r.json())
                for r in [
                    await client.post(
                        f"/v1/jobs/{job}/usage",
                        content=body,
                        headers={"Content-Type": kind} if kind else {},
                    )
                    for job, body, kind in bad
                ]
            ]

    def answers() -> list:
        app = create_app(store, expire_every=None)
        try:
            return asyncio.run(ask(app))
        finally:
            app.state.group_commit.stop()

    plain = answers()
    routes = billing.reports.routes[:]
    try:
        billing.reports.routes[:] = [r for r in routes if isinstance(r, APIRoute)]
        declared = answers()
    finally:
        billing.reports.routes[:] = routes
    assert plain == declared
    assert {status for status, _ in plain} == {401, 422}
