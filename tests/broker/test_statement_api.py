"""Statements over HTTP, on both databases, every answer checked against /openapi.json: the
home provider closes a period, the user reads its statement, a delivering provider cannot;
finalize and close are safe to repeat; a credit note lands on the next statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apiclient import refused
from billing_world import award, charged, publish_bytes_tariff, report

PAST = datetime(2025, 1, 10, 12, tzinfo=UTC)  # January 2025: a period long over


def billed(api, market):
    """alice: north's award (5.00) with usage past its volume; bob: south's award (3.00)."""
    store = market.store
    publish_bytes_tariff(store, market, api.north, "anonymize", PAST - timedelta(days=1))
    job = award(store, market.actor("user", api.alice_id), api.north, price=500, at=PAST)
    report(store, market, api.north, job, 1, 1_200_000, PAST + timedelta(hours=1))
    award(store, market.actor("user", api.bob_id), api.south, price=300, at=PAST)
    return job


def test_the_home_provider_closes_and_the_user_reads_its_statement(api, market):
    billed(api, market)
    path = f"/v1/providers/{api.home}/billing/close"
    r = api.home_key.post(path, json={"period": "2025-01"})
    assert r.status_code == 200, r.text
    closed = r.json()
    assert (closed["statements"], closed["finalized"], closed["totals"]) == (
        2,
        2,
        {"EUR": 500 + 260 + 300},
    )
    again = api.home_key.post(path, json={"period": "2025-01"}).json()
    assert (again["finalized"], again["statements"], again["totals"]) == (0, 2, closed["totals"])

    mine = api.alice.get("/v1/statements").json()["items"]
    assert [(x["user_id"], x["status"], x["period"]) for x in mine] == [
        (api.alice_id, "finalized", "2025-01")
    ]
    doc = api.alice.get(f"/v1/statements/{mine[0]['id']}").json()
    assert doc["totals"] == charged(market.store, api.alice_id) == {"EUR": 760}
    assert [(x["provider"], x["kind"], x["amount_minor"]) for x in doc["lines"]] == [
        ("north", "price", 500),
        ("north", "bytes", 260),
    ]
    assert len(doc["content_sha256"]) == 64 and doc["number"] in (1, 2)

    refused(api.bob.get(f"/v1/statements/{mine[0]['id']}"), None, 403)
    refused(api.north_key.get(f"/v1/statements/{mine[0]['id']}"), None, 403)  # delivered only
    assert api.north_key.get("/v1/statements").json()["items"] == []
    issued = api.home_key.get("/v1/statements", params={"limit": 1}).json()
    rest = api.home_key.get("/v1/statements", params={"cursor": issued["next_cursor"]}).json()
    assert len(issued["items"]) == len(rest["items"]) == 1 and rest["next_cursor"] is None
    charges = api.alice.get(f"/v1/users/{api.alice_id}/charges", params={"limit": 1}).json()
    assert [(c["kind"], c["amount_minor"], c["statement_id"]) for c in charges["items"]] == [
        ("price", 500, mine[0]["id"])
    ]
    rest = api.alice.get(
        f"/v1/users/{api.alice_id}/charges", params={"cursor": charges["next_cursor"]}
    ).json()["items"]
    assert [(c["kind"], c["amount_minor"]) for c in rest] == [("bytes", 260)]
    refused(api.bob.get(f"/v1/users/{api.alice_id}/charges"), None, 403)
    refused(api.north_key.get(f"/v1/users/{api.alice_id}/charges"), None, 403)
    refused(api.alice.get("/v1/statements/999999"), None, 404)
    refused(api.alice.get(f"/v1/statements/{2**63}"), "statement_id")


def test_only_the_home_provider_closes_and_only_a_period_that_is_over(api, market):
    billed(api, market)
    for client in (api.north_key, api.alice):
        refused(
            client.post(f"/v1/providers/{api.home}/billing/close", json={"period": "2025-01"}),
            None,
            403,
        )
    now = datetime.now(UTC)
    refused(
        api.home_key.post(
            f"/v1/providers/{api.home}/billing/close",
            json={"period": f"{now.year:04d}-{now.month:02d}"},
        ),
        "period",
        409,
    )
    for bad in ("2025-13", "2025-1", "January"):
        r = api.home_key.post(f"/v1/providers/{api.home}/billing/close", json={"period": bad})
        assert r.status_code == 422, r.text
    refused(
        api.home_key.post(f"/v1/providers/{2**63}/billing/close", json={"period": "2025-01"}),
        "provider_id",
    )


def test_billing_settings(api, market):
    path = f"/v1/providers/{api.home}/billing-settings"
    assert api.alice.get(path).json()["period_months"] == 1
    body = {"period_months": 3, "cutoff_day": 5, "timezone": "Asia/Tokyo"}
    assert api.home_key.put(path, json=body).json()["timezone"] == "Asia/Tokyo"
    refused(api.north_key.put(path, json=body), None, 403)
    refused(api.home_key.put(path, json={**body, "timezone": "Moon/Base"}), "timezone")
    refused(api.home_key.put(path, json={**body, "period_months": 5}), "period_months")
    assert api.home_key.put(path, json={**body, "cutoff_day": 29}).status_code == 422


def test_a_credit_note_corrects_a_line_on_the_next_statement(api, market):
    billed(api, market)
    api.home_key.post(f"/v1/providers/{api.home}/billing/close", json={"period": "2025-01"})
    jan = api.alice.get("/v1/statements").json()["items"][0]
    path = f"/v1/statements/{jan['id']}/lines/2/credit-notes"
    body = {"amount_minor": -100, "reason": "slow delivery"}
    first = api.home_key.post(path, json=body, headers={"Idempotency-Key": "c-1"})
    assert first.status_code == 201, first.text
    retry = api.home_key.post(path, json=body, headers={"Idempotency-Key": "c-1"})
    assert retry.json()["id"] == first.json()["id"]
    refused(api.home_key.post(path, json={"amount_minor": 5, "reason": "x"}), "amount_minor")
    refused(
        api.home_key.post(path, json={"amount_minor": -161, "reason": "x"}), "amount_minor"
    )  # 260 - 100 left to credit
    refused(api.alice.post(path, json=body), None, 403)
    refused(
        api.home_key.post(f"/v1/statements/{jan['id']}/lines/9/credit-notes", json=body), None, 404
    )
    # The note is dated now: it is on the statement of the period under way.
    doc = api.alice.get(f"/v1/users/{api.alice_id}/statements/current").json()
    assert (doc["id"], doc["status"], doc["number"]) == (None, "draft", None)
    assert [(x["kind"], x["amount_minor"], x["corrects"]) for x in doc["lines"]] == [
        ("credit", -100, {"statement_number": jan["number"], "line": 2})
    ]
    assert doc["totals"] == {"EUR": -100}
    refused(api.bob.get(f"/v1/users/{api.alice_id}/statements/current"), None, 403)
    assert api.alice.get(f"/v1/statements/{jan['id']}").json()["totals"] == {"EUR": 760}


def test_the_period_under_way_is_rendered_by_the_users_profiles(api, market):
    billed(api, market)
    api.home_key.post(f"/v1/providers/{api.home}/billing/close", json={"period": "2025-01"})
    jan = api.alice.get("/v1/statements").json()["items"][0]
    api.home_key.post(
        f"/v1/statements/{jan['id']}/lines/2/credit-notes",
        json={"amount_minor": -100, "reason": "slow delivery"},
    )
    path = f"/v1/users/{api.alice_id}/statements/current/render"
    text = api.alice.get(path, params={"format": "text"})
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert "1.00" in text.text and "home" in text.text
    laid_out = api.alice.get(path, params={"format": "json"}).json()
    assert api.alice.get(f"/v1/users/{api.alice_id}/statements/current").json()["totals"] == {
        "EUR": -100
    }
    assert [(t["amount_minor"], t["currency"]) for t in laid_out["totals"]] == [(-100, "EUR")]
    assert api.home_key.get(path, params={"format": "pdf"}).content.startswith(b"%PDF")
    refused(api.bob.get(path), None, 403)
    refused(api.alice.get(path, params={"profile": "nope"}), None, 404)
