"""Settlements over HTTP, on both databases, every answer checked against /openapi.json: the
home provider issues its batches for a period, the delivering provider reads and acknowledges
one (a copy answered the same, other content 409, a wrong audit total 422 naming it), both
directions are netted, the balance reads the ledger; a provider sees only its own, a user
none, the admin all."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from apiclient import provider_body, refused

from broker.awards import make_award
from broker.models import ServiceRequest
from broker.requests import submit_request

PAST = datetime(2025, 1, 10, 12, tzinfo=UTC)  # January 2025: a period long over


def awarded(market, user_id: int, provider_id: int, price: int, services: str) -> None:
    with market.store.write() as s:
        request = submit_request(
            s, market.actor("user", user_id), services=services, volume_bytes=1_000_000, now=PAST
        )
        s.flush()
        make_award(
            s, s.get(ServiceRequest, request.id), provider_id, price, source="auction", now=PAST
        )


def two_ways(api, market):
    """far (north network, checksum only) with user nora: alice's anonymize request served
    by far at 5.00, nora's identity request by home at 2.00; home keeps 10%; both closed."""
    api.far = api.make("/v1/providers", provider_body(api.north_net, "far", ("checksum",)))
    api.far_key = api.key("provider", api.far)
    api.nora_id = api.make("/v1/users", {"name": "nora", "home_provider_id": api.far})
    r = api.home_key.put(
        f"/v1/providers/{api.home}/billing-settings",
        json={"margin_ppm": 100_000},
        headers={"Idempotency-Key": "m1"},
    )
    assert r.status_code == 200, r.text
    awarded(market, api.alice_id, api.far, 500, "anonymize")
    awarded(market, api.nora_id, api.home, 200, "identity")
    for key, pid in ((api.home_key, api.home), (api.far_key, api.far)):
        r = key.post(f"/v1/providers/{pid}/billing/close", json={"period": "2025-01"})
        assert r.status_code == 200, r.text


def test_issue_acknowledge_net_and_balance(api, market):
    two_ways(api, market)
    r = api.home_key.get(f"/v1/providers/{api.home}/balance")
    assert r.status_code == 200, r.text
    assert [
        (b["counterparty_id"], b["owes_minor"], b["owed_minor"], b["net_minor"])
        for b in r.json()["balances"]
    ] == [(api.far, 450, 200, -250)]

    path = f"/v1/providers/{api.home}/settlements"
    r = api.home_key.post(path, json={"period": "2025-01"}, headers={"Idempotency-Key": "i1"})
    assert r.status_code == 200, r.text
    [batch] = r.json()["items"]
    assert (
        batch["provider_id"],
        batch["number"],
        batch["line_count"],
        batch["totals"],
        batch["due"],
        batch["margin"],
        batch["status"],
    ) == (api.far, 1, 1, {"EUR": 500}, {"EUR": 450}, {"EUR": 50}, "issued")
    again = api.home_key.post(path, json={"period": "2025-01"}, headers={"Idempotency-Key": "i1"})
    assert again.json() == r.json()

    doc = api.far_key.get(f"/v1/settlements/{batch['id']}").json()
    assert doc["content_sha256"] == batch["content_sha256"] and len(doc["lines"]) == 1
    ack = f"/v1/settlements/{batch['id']}/acknowledge"
    wrong = copy.deepcopy(doc)
    wrong["totals"]["EUR"] = 499
    refused(api.far_key.post(ack, json=wrong), "totals.EUR", 422)
    other = copy.deepcopy(doc)
    other["lines"][0]["amount_minor"] = 499
    other["totals"]["EUR"], other["margin"]["EUR"] = 499, 49  # adds up, other content
    refused(api.far_key.post(ack, json=other), None, 409)
    refused(api.home_key.post(ack, json=doc), None, 403)  # the delivering side imports
    first = api.far_key.post(ack, json=doc, headers={"Idempotency-Key": "a1"})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "acknowledged" and first.json()["netting"] is None
    copy_ = api.far_key.post(ack, json=doc, headers={"Idempotency-Key": "a2"})
    assert copy_.json() == first.json()

    # far issues its own batch; home acknowledges it: both directions are netted.
    r = api.far_key.post(f"/v1/providers/{api.far}/settlements", json={"period": "2025-01"})
    [back] = r.json()["items"]
    assert (back["provider_id"], back["due"]) == (api.home, {"EUR": 200})
    back_doc = api.home_key.get(f"/v1/settlements/{back['id']}").json()
    r = api.home_key.post(f"/v1/settlements/{back['id']}/acknowledge", json=back_doc)
    assert r.status_code == 200, r.text
    netting = r.json()["netting"]
    assert r.json()["status"] == "settled"
    assert netting["amounts"] == {
        "EUR": {
            "low_owes_minor": 450,
            "high_owes_minor": 200,
            "net_minor": 250,
            "payer_id": api.home,
            "payee_id": api.far,
        }
    }
    after = api.far_key.get(f"/v1/providers/{api.far}/balance").json()["balances"]
    assert [(b["counterparty_id"], b["net_minor"]) for b in after] == [(api.home, 0)]


def test_who_sees_settlements_and_paging(api, market):
    two_ways(api, market)
    api.home_key.post(f"/v1/providers/{api.home}/settlements", json={"period": "2025-01"})
    api.far_key.post(f"/v1/providers/{api.far}/settlements", json={"period": "2025-01"})
    page = api.far_key.get(f"/v1/providers/{api.far}/settlements", params={"limit": 1}).json()
    rest = api.far_key.get(
        f"/v1/providers/{api.far}/settlements", params={"cursor": page["next_cursor"]}
    ).json()
    assert [(x["home_provider_id"], x["provider_id"]) for x in page["items"] + rest["items"]] == [
        (api.home, api.far),
        (api.far, api.home),
    ] and rest["next_cursor"] is None
    assert len(api.admin.get(f"/v1/providers/{api.home}/settlements").json()["items"]) == 2
    batch = page["items"][0]["id"]
    for client in (api.north_key, api.alice):
        refused(client.get(f"/v1/providers/{api.far}/settlements"), None, 403)
        refused(client.get(f"/v1/settlements/{batch}"), None, 403)
        refused(client.get(f"/v1/providers/{api.far}/balance"), None, 403)
        refused(
            client.post(f"/v1/providers/{api.far}/settlements", json={"period": "2025-01"}),
            None,
            403,
        )
    refused(api.alice.get("/v1/settlements/999999"), None, 404)
    refused(
        api.home_key.post(f"/v1/providers/{api.home}/settlements", json={"period": "2025-13"}),
        "period",
        422,
    )
    refused(api.home_key.get(f"/v1/settlements/{2**63}"), "settlement_id")
