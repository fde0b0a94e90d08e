"""Payments over HTTP, on both databases, every answer checked against /openapi.json: a user
keeps cards, pays its finalized statement of January 2025, sees only its own; the home
provider refunds; each bad input a clear 4xx naming the problem with nothing written."""

from __future__ import annotations

from apiclient import refused
from sqlalchemy import func, select
from test_statement_api import billed

from broker.models import Payment, PaymentMethod, Refund, TestGatewayOperation


def closed(api, market) -> int:
    """January 2025 closed: alice's finalized statement (7.60 EUR), its id."""
    billed(api, market)
    r = api.home_key.post(f"/v1/providers/{api.home}/billing/close", json={"period": "2025-01"})
    assert r.status_code == 200, r.text
    return api.alice.get("/v1/statements").json()["items"][0]["id"]


def counts(market) -> tuple[int, int, int, int]:
    with market.store.read() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t))
            for t in (PaymentMethod, Payment, Refund, TestGatewayOperation)
        )


def test_cards_by_token_and_number_and_their_bad_input(api, market):
    path = f"/v1/users/{api.alice_id}/payment-methods"
    first = api.alice.post(
        path,
        json={"card_number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2034},
        headers={"Idempotency-Key": "m1"},
    )
    assert first.status_code == 201, first.text
    assert (first.json()["brand"], first.json()["last4"], first.json()["is_default"]) == (
        "visa",
        "4242",
        True,
    )
    assert "card_number" not in first.json() and "token" not in first.json()
    retry = api.alice.post(
        path,
        json={"card_number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2034},
        headers={"Idempotency-Key": "m1"},
    )
    assert retry.json()["id"] == first.json()["id"]
    second = api.alice.post(path, json={"token": "tok_mastercard", "make_default": True})
    assert second.status_code == 201, second.text
    listed = api.alice.get(path).json()["items"]
    assert [(m["last4"], m["is_default"]) for m in listed] == [("4242", False), ("4444", True)]
    before = counts(market)
    refused(
        api.alice.post(
            path, json={"card_number": "4242424242424241", "exp_month": 12, "exp_year": 2034}
        ),
        "card_number",
    )  # Luhn
    refused(
        api.alice.post(
            path, json={"card_number": "4242424242424242", "exp_month": 1, "exp_year": 2020}
        ),
        "exp_year",
    )  # expired
    refused(api.alice.post(path, json={"token": "tok_unheard_of"}), "token")
    refused(api.alice.post(path, json={}), "token")
    refused(api.bob.post(path, json={"token": "tok_visa"}), None, 403)
    refused(api.bob.get(path), None, 403)
    assert counts(market) == before
    r = api.alice.delete(f"{path}/{second.json()['id']}", headers={"Idempotency-Key": "d1"})
    assert r.status_code == 204
    assert api.alice.delete(f"{path}/{second.json()['id']}").status_code == 204
    assert [(m["last4"], m["is_default"]) for m in api.alice.get(path).json()["items"]] == [
        ("4242", True)
    ]
    refused(api.alice.delete(f"{path}/999999"), None, 404)


def test_the_user_pays_its_statement_and_the_home_provider_refunds(api, market):
    sid = closed(api, market)
    api.alice.post(f"/v1/users/{api.alice_id}/payment-methods", json={"token": "tok_visa"})
    state = api.alice.get(f"/v1/statements/{sid}/payment-state").json()
    assert (state["state"], state["due_minor"], state["currency"]) == ("due", 760, "EUR")
    before = counts(market)
    refused(api.bob.post(f"/v1/statements/{sid}/payments", json={}), None, 403)
    refused(
        api.alice.post(f"/v1/statements/{sid}/payments", json={"amount_minor": 761}), "amount_minor"
    )
    assert counts(market) == before
    path = f"/v1/statements/{sid}/payments"
    paid = api.alice.post(path, json={}, headers={"Idempotency-Key": "p1"})
    assert paid.status_code == 201, paid.text
    assert (paid.json()["status"], paid.json()["amount_minor"]) == ("succeeded", 760)
    again = api.alice.post(path, json={}, headers={"Idempotency-Key": "p1"})
    assert again.json()["id"] == paid.json()["id"]
    before = counts(market)
    refused(
        api.alice.post(path, json={}, headers={"Idempotency-Key": "p2"}), "statement_id", 409
    )  # paying twice: nothing charged
    assert counts(market) == before
    assert api.alice.get(f"/v1/statements/{sid}/payment-state").json()["state"] == "paid"
    mine = api.alice.get(f"/v1/users/{api.alice_id}/payments").json()["items"]
    assert [p["id"] for p in mine] == [paid.json()["id"]]
    assert api.home_key.get(f"/v1/users/{api.alice_id}/payments").json()["items"] == mine
    refused(api.bob.get(f"/v1/users/{api.alice_id}/payments"), None, 403)
    refused(api.north_key.get(f"/v1/users/{api.alice_id}/payments"), None, 403)

    refunds = f"/v1/payments/{paid.json()['id']}/refunds"
    refused(api.alice.post(refunds, json={"amount_minor": 100}), None, 403)
    refused(api.north_key.post(refunds, json={"amount_minor": 100}), None, 403)
    r = api.home_key.post(
        refunds, json={"amount_minor": 260, "reason": "slow"}, headers={"Idempotency-Key": "r1"}
    )
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["amount_minor"]) == ("succeeded", 260)
    before = counts(market)
    refused(api.home_key.post(refunds, json={"amount_minor": 501}), "amount_minor")
    refused(api.home_key.post(refunds, json={"amount_minor": 0}), "amount_minor")
    assert counts(market) == before
    state = api.alice.get(f"/v1/statements/{sid}/payment-state").json()
    assert (state["paid_minor"], state["refunded_minor"], state["state"]) == (500, 260, "paid")


def test_a_declined_card_is_a_failed_payment_with_its_reason(api, market):
    sid = closed(api, market)
    api.alice.post(
        f"/v1/users/{api.alice_id}/payment-methods",
        json={"token": "tok_chargeDeclinedInsufficientFunds"},
    )
    r = api.alice.post(f"/v1/statements/{sid}/payments", json={})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["decline_code"]) == ("failed", "insufficient_funds")
    assert body["next_retry_at"] is not None
    refused(
        api.alice.post(f"/v1/statements/{sid}/payments", json={"method_id": 999999}), "method_id"
    )
    refused(api.alice.post(f"/v1/statements/{2**63}/payments", json={}), "statement_id")


def test_a_payment_the_issuer_wants_authenticated_is_confirmed_by_its_user(api, market):
    """3-D Secure over HTTP: ``pending`` with ``next_action`` ``authenticate``; only the user
    confirms; a bad answer is refused; the confirmed payment pays the statement once."""
    sid = closed(api, market)
    api.alice.post(
        f"/v1/users/{api.alice_id}/payment-methods", json={"token": "tok_authenticationRequired"}
    )
    held = api.alice.post(
        f"/v1/statements/{sid}/payments", json={}, headers={"Idempotency-Key": "p3ds"}
    )
    assert held.status_code == 201, held.text
    assert (held.json()["status"], held.json()["next_action"]) == ("pending", "authenticate")
    state = api.alice.get(f"/v1/statements/{sid}/payment-state").json()
    assert (state["state"], state["due_minor"]) == ("due", 760)
    confirm = f"/v1/payments/{held.json()['id']}/confirm"
    before = counts(market)
    refused(api.bob.post(confirm, json={"challenge": "pass"}), None, 403)
    refused(api.alice.post(confirm, json={"challenge": "maybe"}), "challenge")
    refused(api.alice.post("/v1/payments/999999/confirm", json={}), None, 404)
    assert counts(market) == before
    done = api.alice.post(confirm, json={"challenge": "pass"}, headers={"Idempotency-Key": "c1"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["next_action"]) == ("succeeded", None)
    assert api.alice.post(confirm, json={"challenge": "fail"}).json()["status"] == "succeeded"
    state = api.alice.get(f"/v1/statements/{sid}/payment-state").json()
    assert (state["state"], state["currencies"][0]["paid_gross_minor"]) == ("paid", 760)
    with market.store.read() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(TestGatewayOperation)
                .where(TestGatewayOperation.status == "succeeded")
            )
            == 1
        )
