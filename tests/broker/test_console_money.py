"""Money in the console: paying a statement by card (succeeded, declined with its reason,
3-D Secure and its confirm step; a form sent twice charges once), cards on file, a
statement's charges by service and by provider, a provider's settlements, and the admin's
charts and API keys; each through the domain functions the API calls, shown to whom the API
shows it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from billing_world import award, publish_bytes_tariff, report
from console_client import Browser, field_errors
from fastapi.testclient import TestClient
from marketplace import T0
from sqlalchemy import func, select

from broker import payment_methods, statements
from broker.api import create_app
from broker.auctions import open_auction, submit_bid
from broker.currency import Money
from broker.models import ApiKey, Payment, PaymentMethod
from broker.payment_gateway import gateway
from broker.requests import submit_request
from broker.test_gateway import TestGateway


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _statement(world) -> int:
    """alice's finalized statement of January 2030: north's anonymize (5.00 EUR and its
    bytes) and south's anonymize then checksum (3.00 EUR); its id."""
    store, m = world.m.store, world.m
    alice = m.actor("user", world.alice)
    publish_bytes_tariff(store, m, world.north, "anonymize", T0 - timedelta(days=1))
    job = award(store, alice, world.north, price=500, at=T0)
    report(store, m, world.north, job, 1, 1_000_000, T0 + timedelta(seconds=10))
    report(store, m, world.north, job, 2, 3_500_000, T0 + timedelta(seconds=20))
    award(store, alice, world.south, price=300, at=T0, services="anonymize,checksum")
    statements.close_period(
        store.write,
        m.actor("provider", world.home),
        world.home,
        "2030-01",
        now=datetime(2030, 2, 1, 1, tzinfo=UTC),
    )
    with store.read() as s:
        (st,) = statements.list_statements(s, alice)
        return st.id


def _card(world, token: str) -> int:
    with world.m.store.write() as s:
        return payment_methods.add_method(
            s,
            world.m.actor("user", world.alice),
            world.alice,
            gateway("test", world.m.store),
            token=token,
            make_default=True,
        ).id


def _pay_form(page: str) -> dict:
    """The pay form's fields as the page drew them (its idempotency key among them)."""
    form = re.search(r'data-testid="pay-form">(.*?)</form>', page, re.S)
    assert form, page
    values = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))
    chosen = re.search(r'<option value="(\d+)" selected>', form.group(1))
    values["method_id"] = chosen.group(1) if chosen else ""
    values.pop("csrf_token")
    return values


def _api(app, token: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def test_paying_a_statement_sent_twice_charges_once(app, keys, world, store):
    statement_id = _statement(world)
    _card(world, "tok_visa")
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    due = _api(app, keys["alice"]).get(f"/v1/statements/{statement_id}/payment-state").json()
    assert due["state"] == "due" and due["due_minor"] > 0
    page = alice.get(f"/statements/{statement_id}").text
    form = _pay_form(page)
    assert form["idempotency_key"].startswith("console-")
    assert re.search(r'<input id="amount" [^>]*\sinputmode="decimal"', page)  # not escaped
    first = alice.post(f"/statements/{statement_id}/pay", form)
    again = alice.post(f"/statements/{statement_id}/pay", form)  # a double click
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    assert TestGateway(store).charges() == 1
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
    shown = alice.get(f"/statements/{statement_id}").text
    outcome = re.search(r'data-testid="outcome".*?</section>', shown, re.S).group(0)
    assert "succeeded" in outcome and "Paid." in outcome
    assert 'data-testid="pay-form"' not in shown  # nothing left to pay
    state = _api(app, keys["alice"]).get(f"/v1/statements/{statement_id}/payment-state").json()
    assert (state["state"], state["paid_gross_minor"]) == ("paid", due["due_minor"])
    # A new form (a new key) on a paid statement is refused and charges nothing.
    refused = alice.post(f"/statements/{statement_id}/pay", {**form, "idempotency_key": "other"})
    assert refused.status_code == 409 and "nothing was charged" in refused.text
    assert TestGateway(store).charges() == 1


def test_a_declined_card_shows_its_reason_and_a_part_payment_takes_the_amount(
    app, keys, world, store
):
    statement_id = _statement(world)
    _card(world, "tok_chargeDeclinedInsufficientFunds")
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    form = _pay_form(alice.get(f"/statements/{statement_id}").text)
    for amount, said in (("1.234", "at most 2 decimal"), ("0", "more than zero"), ("x", "number")):
        bad = alice.post(f"/statements/{statement_id}/pay", {**form, "amount": amount})
        assert bad.status_code == 422 and said in field_errors(bad.text)["amount"], amount
    too_much = alice.post(f"/statements/{statement_id}/pay", {**form, "amount": "100000"})
    assert too_much.status_code == 422 and "left to pay" in field_errors(too_much.text)["amount"]
    assert (
        alice.post(f"/statements/{statement_id}/pay", {**form, "amount": "2.50"}).status_code == 303
    )
    page = alice.get(f"/statements/{statement_id}").text
    outcome = re.search(r'data-testid="outcome".*?</section>', page, re.S).group(0)
    assert "failed" in outcome and "insufficient_funds" in outcome
    assert "the card has insufficient funds" in outcome
    with store.read() as s:
        (p,) = s.scalars(select(Payment))
        assert (p.amount_minor, p.status) == (250, "failed")
    # Another card, a new form: 2.50 EUR paid, the rest still due.
    _card(world, "tok_mastercard")
    form = _pay_form(alice.get(f"/statements/{statement_id}").text)
    assert (
        alice.post(f"/statements/{statement_id}/pay", {**form, "amount": "2.50"}).status_code == 303
    )
    state = _api(app, keys["alice"]).get(f"/v1/statements/{statement_id}/payment-state").json()
    assert state["paid_gross_minor"] == 250 and state["state"] != "paid"


@pytest.mark.parametrize(("answer", "want"), [("pass", "succeeded"), ("fail", "failed")])
def test_a_3d_secure_payment_waits_for_the_cardholder_then_settles(
    app, keys, world, store, answer, want
):
    statement_id = _statement(world)
    _card(world, "tok_authenticationRequired")
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    form = _pay_form(alice.get(f"/statements/{statement_id}").text)
    assert alice.post(f"/statements/{statement_id}/pay", form).status_code == 303
    page = alice.get(f"/statements/{statement_id}").text
    outcome = re.search(r'data-testid="outcome".*?</section>', page, re.S).group(0)
    assert "pending" in outcome and "authenticate" in outcome
    confirm = re.search(r'action="(/payments/\d+/confirm)"', outcome).group(1)
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    bob.get("/requests")
    assert bob.post(confirm, {"challenge": "pass"}).status_code == 403  # not bob's payment
    assert alice.post(confirm, {"challenge": answer}).status_code == 303
    assert alice.post(confirm, {"challenge": "pass"}).status_code == 303  # a retry: as it stands
    with store.read() as s:
        (p,) = s.scalars(select(Payment))
        assert p.status == want
    assert TestGateway(store).charges() == (1 if want == "succeeded" else 0)
    shown = alice.get(f"/statements/{statement_id}").text
    outcome = re.search(r'data-testid="outcome".*?</section>', shown, re.S).group(0)
    assert want in outcome
    if want == "failed":
        assert "the cardholder failed to authenticate" in outcome


def test_only_the_user_pays_and_the_home_provider_sees_the_state(app, keys, world, store):
    statement_id = _statement(world)
    _card(world, "tok_visa")
    home = Browser(app)
    home.sign_in(keys["home"])
    page = home.get(f"/statements/{statement_id}").text
    assert 'data-testid="payment-state"' in page and 'data-testid="pay-form"' not in page
    forged = home.post(f"/statements/{statement_id}/pay", {"method_id": "1"})
    assert forged.status_code == 403
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    bob.get("/requests")
    assert bob.post(f"/statements/{statement_id}/pay", {}).status_code == 403
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    form = _pay_form(alice.get(f"/statements/{statement_id}").text)
    csrf = alice.post(f"/statements/{statement_id}/pay", form, csrf="forged")
    assert csrf.status_code == 403
    assert TestGateway(store).charges() == 0


def test_cards_are_added_by_token_made_default_and_removed(app, keys, world, store):
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get("/account").text
    assert "No card on file" in page and "tok_visa" in page
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    refused = alice.post("/account/cards", {"token": "tok_nonsense", "idempotency_key": key})
    assert (
        refused.status_code == 422
        and "no card 'tok_nonsense'" in field_errors(refused.text)["token"]
    )
    assert 'value="tok_nonsense"' in refused.text
    added = alice.post("/account/cards", {"token": "tok_visa", "idempotency_key": key})
    again = alice.post("/account/cards", {"token": "tok_visa", "idempotency_key": key})
    assert added.status_code == again.status_code == 303
    page = alice.get("/account").text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    alice.post(
        "/account/cards", {"token": "tok_amex", "make_default": "on", "idempotency_key": key}
    )
    api = _api(app, keys["alice"]).get(f"/v1/users/{world.alice}/payment-methods").json()["items"]
    assert [(m["last4"], m["is_default"]) for m in api] == [("4242", False), ("0005", True)]
    rows = re.findall(
        r"<td>(\w+) ending (\d{4})</td><td>[^<]*</td>\s*<td>([^<]*)</td>",
        alice.get("/account").text,
    )
    assert rows == [("visa", "4242", ""), ("amex", "0005", "★ default")]
    amex = api[1]["id"]
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    bob.get("/account")
    assert bob.post(f"/account/cards/{amex}/remove", {}).status_code == 404  # not bob's card
    assert alice.post(f"/account/cards/{amex}/remove", {}).status_code == 303
    assert alice.post(f"/account/cards/{amex}/remove", {}).status_code == 303  # again: nothing
    with store.read() as s:
        live = s.scalars(select(PaymentMethod).where(PaymentMethod.deleted_at.is_(None))).all()
        assert [(m.last4, m.is_default) for m in live] == [("4242", True)]
    north = Browser(app)
    north.sign_in(keys["north"])
    north.get("/auctions")
    assert north.post("/account/cards", {"token": "tok_visa"}).status_code == 403


def test_a_statements_charges_are_drawn_by_service_and_by_provider(app, keys, world):
    statement_id = _statement(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get(f"/statements/{statement_id}").text
    by_provider = re.search(r'data-testid="charges-by-provider">(.*?)</table>', page, re.S).group(1)
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", by_provider))
    by_service = re.search(r'data-testid="charges-by-service">(.*?)</table>', page, re.S).group(1)
    services = dict(re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td></tr>", by_service))
    assert rows["south"] == "3.00 EUR" == services["anonymize + checksum"]
    document = _api(app, keys["alice"]).get(f"/v1/statements/{statement_id}").json()
    north = sum(x["amount_minor"] for x in document["lines"] if x["provider"] == "north")
    assert north > 500 and rows["north"] == services["anonymize"]
    assert rows["north"] == str(Money(north, "EUR"))
    chart = alice.http.get(f"/statements/{statement_id}/charges.svg?by=provider&currency=EUR")
    assert chart.headers["content-type"].startswith("image/svg+xml")
    assert f"north: {rows['north']}; south: 3.00 EUR" in chart.text  # the values, in words
    assert chart.text.count('fill="#0b5cad"') == 2  # a bar each
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    assert bob.http.get(f"/statements/{statement_id}/charges.svg").status_code == 403


def _batches(app, keys, world, statement_id: int) -> dict[str, dict]:
    """home issues January 2030 in the console: a batch to north and one to south, by name."""
    home = Browser(app)
    home.sign_in(keys["home"])
    page = home.get("/settlements").text
    assert 'data-testid="issue-form"' in page and "No settlement batches" in page
    bad = home.post(
        "/settlements/issue", {"home_provider_id": str(world.home), "period": "2030-13"}
    )
    assert bad.status_code == 422 and "2030-13" in field_errors(bad.text)["period"]
    issued = home.post(
        "/settlements/issue", {"home_provider_id": str(world.home), "period": "2030-01"}
    )
    assert issued.status_code == 303
    again = home.post(
        "/settlements/issue", {"home_provider_id": str(world.home), "period": "2030-01"}
    )
    assert again.status_code == 303  # nothing new
    api = _api(app, keys["home"]).get(f"/v1/providers/{world.home}/settlements").json()["items"]
    assert len(api) == 2
    names = {world.north: "north", world.south: "south"}
    return {names[b["provider_id"]]: b for b in api}


def test_a_providers_settlements_are_issued_listed_and_acknowledged(app, keys, world, store):
    statement_id = _statement(world)
    batches = _batches(app, keys, world, statement_id)
    home = Browser(app)
    home.sign_in(keys["home"])
    listed = home.get("/settlements?period=2030-01").text
    table = re.search(r'data-testid="period-2030-01">(.*?)</table>', listed, re.S).group(1)
    south = batches["south"]
    assert f'href="/settlements/{south["id"]}"' in table
    assert "<td>1</td><td>3.00 EUR</td><td>3.00 EUR</td><td>0.00 EUR</td>" in table  # no margin
    assert "issued" in table
    # north acknowledges the batch as the page shows it: netted at once (nothing the other way)
    north = Browser(app)
    north.sign_in(keys["north"])
    page = north.get(f"/settlements/{batches['north']['id']}").text
    assert 'data-testid="acknowledge-form"' in page
    assert f'href="/statements/{statement_id}"' not in page  # not north's statement to see
    stale = north.post(
        f"/settlements/{batches['north']['id']}/acknowledge", {"content_sha256": "0" * 64}
    )
    assert stale.status_code == 409 and "not the batch the page showed" in stale.text
    acked = north.post(
        f"/settlements/{batches['north']['id']}/acknowledge",
        {"content_sha256": batches["north"]["content_sha256"]},
    )
    assert acked.status_code == 303
    done = north.get(f"/settlements/{batches['north']['id']}").text
    assert 'status-settled">settled<' in done and 'data-testid="netting"' in done
    assert 'data-testid="acknowledge-form"' not in done
    # south pastes the document it received: a total changed is refused beside it, naming it
    document = _api(app, keys["south"]).get(f"/v1/settlements/{south['id']}").json()
    s = Browser(app)
    s.sign_in(keys["south"])
    s.get(f"/settlements/{south['id']}")
    forged = {**document, "totals": {"EUR": 301}}
    refused = s.post(f"/settlements/{south['id']}/acknowledge", {"document": json.dumps(forged)})
    assert refused.status_code == 422
    assert "totals.EUR is 301" in field_errors(refused.text)["document"]
    junk = s.post(f"/settlements/{south['id']}/acknowledge", {"document": "{not json"})
    assert junk.status_code == 422 and "not JSON" in field_errors(junk.text)["document"]
    other = s.post(
        f"/settlements/{south['id']}/acknowledge",
        {"document": json.dumps({**document, "number": 7})},
    )
    assert other.status_code == 409 and "other content" in field_errors(other.text)["document"]
    ok = s.post(f"/settlements/{south['id']}/acknowledge", {"document": json.dumps(document)})
    assert ok.status_code == 303
    state = _api(app, keys["south"]).get(f"/v1/settlements/{south['id']}").json()
    assert state["status"] == "settled"
    # the home provider's page links the statements; the balance is the API's
    page = home.get(f"/settlements/{south['id']}").text
    assert f'href="/statements/{statement_id}"' in page
    balance = _api(app, keys["home"]).get(f"/v1/providers/{world.home}/balance").json()
    shown = re.search(r'data-testid="balance">(.*?)</table>', home.get("/settlements").text, re.S)
    rows = re.findall(
        r"<tr><td>home</td><td>(\w+)</td><td>([^<]+)</td><td>([^<]+)</td>", shown.group(1)
    )
    assert sorted(rows) == sorted(
        (
            {world.north: "north", world.south: "south"}[r["counterparty_id"]],
            str(Money(r["owes_minor"], "EUR")),
            str(Money(r["owed_minor"], "EUR")),
        )
        for r in balance["balances"]
    )
    assert len(rows) == 2  # both paid off by the netting


def test_settlement_pages_show_what_the_api_shows(app, keys, world):
    statement_id = _statement(world)
    batches = _batches(app, keys, world, statement_id)
    north_batch = batches["north"]["id"]
    for who in ("admin", "home", "north", "south", "tiny", "alice"):
        b = Browser(app)
        b.sign_in(keys[who])
        want = _api(app, keys[who]).get(f"/v1/settlements/{north_batch}").status_code
        assert b.http.get(f"/settlements/{north_batch}").status_code == want, who
        if want == 403:
            assert "3.00 EUR" not in b.http.get(f"/settlements/{north_batch}").text
    north = Browser(app)
    north.sign_in(keys["north"])
    listed = north.get("/settlements").text
    assert f'href="/settlements/{north_batch}"' in listed
    assert f'href="/settlements/{batches["south"]["id"]}"' not in listed
    assert north.http.get(f"/settlements?provider={world.south}").status_code == 403
    refused = north.post(
        "/settlements/issue", {"home_provider_id": str(world.home), "period": "2030-01"}
    )
    assert refused.status_code == 403
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    assert alice.http.get("/settlements").status_code == 403
    admin = Browser(app)
    admin.sign_in(keys["admin"])
    assert (
        f'href="/settlements/{north_batch}"'
        in admin.get(f"/settlements?provider={world.north}").text
    )


def test_the_admin_sees_bids_per_minute_and_usage_per_hour(app, keys, world, store):
    m, now = world.m, datetime.now(UTC)
    _, auction = _open_auction(world, now - timedelta(minutes=30))
    for provider, ago in ((world.north, 5.5), (world.south, 20.5)):
        with store.write() as s:
            submit_bid(
                s,
                m.actor("provider", provider),
                auction,
                provider_id=provider,
                price_minor=1000,
                now=now - timedelta(minutes=ago),
            )
    job = award(
        store, m.actor("user", world.alice), world.north, price=500, at=now - timedelta(hours=3)
    )
    report(store, m, world.north, job, 1, 1_000_000, now - timedelta(hours=2, minutes=10))
    report(store, m, world.north, job, 2, 3_500_000, now - timedelta(minutes=30))
    admin = Browser(app)
    admin.sign_in(keys["admin"])
    page = admin.get("/market").text
    bids = re.search(r'data-testid="bids-per-minute">(.*?)</table>', page, re.S).group(1)
    per_minute = dict(re.findall(r"<tr><td>(-?\d+)</td><td>(\d+)</td></tr>", bids))
    assert len(per_minute) == 60 and per_minute["-5"] == per_minute["-20"] == "1"
    assert sum(map(int, per_minute.values())) == 2
    usage = re.search(r'data-testid="usage-per-hour">(.*?)</table>', page, re.S).group(1)
    per_hour = dict(re.findall(r"<tr><td>(-?\d+)</td><td>(\d+)</td></tr>", usage))
    assert len(per_hour) == 24
    assert (per_hour["-2"], per_hour["0"], per_hour["-1"]) == ("1000000", "2500000", "0")
    chart = admin.http.get("/market/usage.svg").text
    assert "0 hours from now: 2.5" in chart and "-2 hours from now: 1" in chart
    assert "-5 minutes from now: 1" in admin.http.get("/market/bids.svg").text
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    for path in ("/market/bids.svg", "/market/usage.svg"):
        assert alice.http.get(path).status_code == 403


def _open_auction(world, at: datetime) -> tuple[int, int]:
    alice = world.m.actor("user", world.alice)
    with world.m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=at + timedelta(hours=3),
            ends_at=at + timedelta(hours=4),
            max_rate_bps=10_000_000,
            now=at,
        )
        a = open_auction(
            s, alice, r.id, closes_at=at + timedelta(hours=1), reserve_price_minor=2000, now=at
        )
        return r.id, a.id


def test_the_admin_issues_a_key_shown_once_and_revokes_it(app, keys, world, store):
    admin = Browser(app)
    admin.sign_in(keys["admin"])
    page = admin.get("/market").text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    missing = admin.post("/market/keys", {"kind": "user", "id": "99999", "idempotency_key": key})
    assert missing.status_code == 422 and "99999" in field_errors(missing.text)["id"]
    form = {"kind": "user", "id": str(world.bob), "label": "bob's laptop", "idempotency_key": key}
    first = admin.post("/market/keys", form)
    assert first.status_code == 201
    token = re.search(r'value="(pktx_[^"]+)" size="60" data-testid="token"', first.text).group(1)
    assert _api(app, token).get(f"/v1/users/{world.bob}/credit").status_code == 200
    again = admin.post("/market/keys", form)  # the form sent twice: one key, no token again
    assert again.status_code == 200 and "pktx_" not in re.search(
        r'data-testid="issued".*?</section>', again.text, re.S
    ).group(0)
    with store.read() as s:
        assert (
            s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.label == "bob's laptop"))
            == 1
        )
    prefix = token.split("_")[1]
    bob = Browser(app)
    assert bob.sign_in(token).status_code == 303
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    alice.get("/requests")
    assert alice.post(f"/market/keys/{prefix}/revoke", {}).status_code == 403
    assert alice.post("/market/keys", {"kind": "user", "id": str(world.alice)}).status_code == 403
    admin.get("/market")
    assert admin.post(f"/market/keys/{prefix}/revoke", {}).status_code == 303
    assert admin.post(f"/market/keys/{prefix}/revoke", {}).status_code == 303  # again: as it is
    assert _api(app, token).get(f"/v1/users/{world.bob}/credit").status_code == 401
    assert bob.http.get("/requests").headers["location"] == "/signin"
    assert f"<code>{prefix}</code>" in admin.get("/market").text
