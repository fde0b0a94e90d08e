"""Credit over HTTP, on both databases, every answer checked against /openapi.json: the home
provider sets a user's external credit history (idempotently), the user reads its current
decision and their history, nobody else's; a request past the user's credit is refused with
409 naming the numbers; a granted max rate is shown in the request."""

from __future__ import annotations

from apiclient import block, refused


def test_credit_over_http(api, market):
    path = f"/v1/users/{api.alice_id}/credit"
    now = api.alice.get(path)
    assert now.status_code == 200, now.text
    first = now.json()
    assert (first["score"], first["model_kind"], first["model_version"]) == (600, "prior", 1)
    assert (first["limit_minor"], first["managed"], first["currency"]) == (0, False, "EUR")

    body = {"external_score": 720, "prior_limit_minor": 5_000}
    headers = {"Idempotency-Key": "alice-credit-1"}
    r = api.home_key.put(f"{path}/profile", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["external_score"] == 720 and r.json()["prior_limit_minor"] == 5_000
    again = api.home_key.put(f"{path}/profile", json=body, headers=headers)
    assert again.json() == r.json()
    refused(
        api.home_key.put(f"{path}/profile", json={**body, "prior_limit_minor": 1}, headers=headers),
        "idempotency_key",
        409,
    )
    refused(api.alice.put(f"{path}/profile", json=body), None, 403)  # not its own to set
    refused(api.north_key.put(f"{path}/profile", json=body), None, 403)
    refused(
        api.home_key.put(f"{path}/profile", json={**body, "external_score": 900}), "external_score"
    )

    mine = api.alice.get(path).json()
    assert mine["managed"] and mine["score"] > 600 and mine["limit_minor"] > 5_000
    assert mine["available_minor"] == mine["limit_minor"] - mine["owed_minor"]
    refused(api.bob.get(path), None, 403)
    refused(api.north_key.get(path), None, 403)
    assert api.home_key.get(path).json()["id"] == mine["id"]

    page = api.alice.get(f"{path}/decisions", params={"limit": 1}).json()
    assert [d["id"] for d in page["items"]] == [mine["id"]] and page["next_cursor"]
    rest = api.alice.get(f"{path}/decisions", params={"cursor": page["next_cursor"]}).json()
    assert [d["model_kind"] for d in rest["items"]] == ["prior"] and not rest["next_cursor"]
    refused(api.bob.get(f"{path}/decisions"), None, 403)

    # A request past the available credit: 409, naming the numbers.
    big = api.alice.post(
        "/v1/requests",
        json={"services": ["identity"], "volume_bytes": 10**9, "max_price_minor": 10**8},
    )
    refused(big, None, 409)
    assert big.json()["error"] == "credit_limit_exceeded"
    assert f"({mine['available_minor']} minor units)" in big.json()["message"]
    ok = api.alice.post("/v1/requests", json=block(services=["identity"]))
    assert ok.status_code == 201, ok.text
    assert "bandwidth_grant_pct" in ok.json() and "base_max_rate_bps" in ok.json()
