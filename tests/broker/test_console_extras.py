"""The console's extras: refunds by the home provider, a user's charges not yet on a
statement, withdrawing a pledge, every principal's own API keys and the provider's delivery
jobs page by page; each through the domain function the API calls, refused where the API
refuses it (the console's status is the API's for the same key)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from billing_world import award
from console_client import Browser, field_errors
from marketplace import T0
from sqlalchemy import func, select
from test_console_money import _api, _card, _pay_form, _statement
from test_console_request_form import _block

from broker.actors import issue_key
from broker.api import create_app
from broker.models import ApiKey, Charge, Payment, Pledge, Refund, TestGatewayOperation


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _gateway_refunds(store) -> int:
    """How many refunds the test gateway made."""
    with store.read() as s:
        return s.scalar(
            select(func.count())
            .select_from(TestGatewayOperation)
            .where(
                TestGatewayOperation.operation == "refund",
                TestGatewayOperation.status == "succeeded",
            )
        )


def _paid(app, keys, world) -> tuple[int, int]:
    """alice's January statement paid in full by card; (statement id, payment id)."""
    statement_id = _statement(world)
    _card(world, "tok_visa")
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    form = _pay_form(alice.get(f"/statements/{statement_id}").text)
    assert alice.post(f"/statements/{statement_id}/pay", form).status_code == 303
    with world.m.store.read() as s:
        (p,) = s.scalars(select(Payment))
        assert p.status == "succeeded"
        return statement_id, p.id


def _form(page: str, testid: str) -> dict:
    """A form's hidden fields as the page drew them (its idempotency key among them)."""
    found = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</form>', page, re.S)
    assert found, page
    values = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', found.group(1)))
    values.pop("csrf_token")
    return values


# -- refunds ------------------------------------------------------------------------------------


def test_the_home_provider_refunds_a_payment_once_however_often_the_form_is_sent(
    app, keys, world, store
):
    statement_id, payment_id = _paid(app, keys, world)
    home = Browser(app)
    home.sign_in(keys["home"])
    page = home.get(f"/statements/{statement_id}").text
    assert "No refunds." in page
    form = _form(page, f"refund-form-{payment_id}")
    assert form["idempotency_key"].startswith("console-")
    for typed, said in (("1.234", "at most 2 decimal"), ("x", "number"), ("0", "positive")):
        bad = home.post(f"/payments/{payment_id}/refunds", {**form, "amount": typed})
        assert bad.status_code == 422 and said in field_errors(bad.text)["amount"], typed
        assert f'value="{typed}"' in bad.text  # what was typed is kept
    too_much = home.post(f"/payments/{payment_id}/refunds", {**form, "amount": "100000"})
    assert too_much.status_code == 422 and "at most" in field_errors(too_much.text)["amount"]
    long = home.post(
        f"/payments/{payment_id}/refunds", {**form, "amount": "1", "reason": "r" * 501}
    )
    assert long.status_code == 422 and "500" in field_errors(long.text)["reason"]
    assert _gateway_refunds(store) == 0
    part = {**form, "amount": "2.50", "reason": "a late delivery"}
    first = home.post(f"/payments/{payment_id}/refunds", part)
    again = home.post(f"/payments/{payment_id}/refunds", part)  # a double click
    assert first.status_code == again.status_code == 303
    assert _gateway_refunds(store) == 1
    with store.read() as s:
        (r,) = s.scalars(select(Refund))
        assert (r.amount_minor, r.status, r.reason) == (250, "succeeded", "a late delivery")
        paid_minor, refunded = s.execute(
            select(Payment.amount_minor, Payment.refunded_minor).where(Payment.id == payment_id)
        ).one()
        assert refunded == 250
    page = home.get(f"/statements/{statement_id}").text
    table = re.search(r'data-testid="refunds">(.*?)</table>', page, re.S).group(1)
    assert "2.50 EUR" in table and "a late delivery" in table and "succeeded" in table
    # The rest, by an empty amount: what was left when the page was drawn, sent twice.
    rest = _form(page, f"refund-form-{payment_id}")
    left = paid_minor - 250
    assert rest["left_minor"] == str(left)
    assert home.post(f"/payments/{payment_id}/refunds", rest).status_code == 303
    assert home.post(f"/payments/{payment_id}/refunds", rest).status_code == 303
    assert _gateway_refunds(store) == 2
    with store.read() as s:
        assert sorted(r.amount_minor for r in s.scalars(select(Refund))) == sorted([250, left])
    state = _api(app, keys["alice"]).get(f"/v1/statements/{statement_id}/payment-state").json()
    assert state["refunded_minor"] == paid_minor
    page = home.get(f"/statements/{statement_id}").text
    assert f'data-testid="refund-form-{payment_id}"' not in page  # nothing left to give back
    # A new form on a payment refunded in full: refused beside the amount, nothing refunded.
    over = home.post(
        f"/payments/{payment_id}/refunds", {**rest, "idempotency_key": "new", "amount": "1"}
    )
    assert over.status_code == 422 and _gateway_refunds(store) == 2


def test_refunds_are_the_home_providers_as_in_the_api(app, keys, world, store):
    statement_id, payment_id = _paid(app, keys, world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get(f"/statements/{statement_id}").text
    assert 'data-testid="refund-form' not in page  # the user sees no refund form
    assert 'data-testid="refunds"' not in page  # nor any refund yet
    for who in ("alice", "bob", "north", "tiny", "home", "admin"):
        b = Browser(app)
        b.sign_in(keys[who])
        b.get("/sessions")
        body = {"amount_minor": 1, "reason": who}
        want = _api(app, keys[who]).post(f"/v1/payments/{payment_id}/refunds", json=body)
        got = b.post(f"/payments/{payment_id}/refunds", {"amount": "0.01", "reason": who})
        assert got.status_code == (303 if want.status_code == 201 else want.status_code), who
        assert want.status_code in (201, 403), who
    with store.read() as s:
        assert sorted(r.reason for r in s.scalars(select(Refund))) == sorted(
            ["home", "home", "admin", "admin"]
        )
    assert alice.http.get(f"/statements/{statement_id}").text.count("0.01 EUR") == 4
    home = Browser(app)
    home.sign_in(keys["home"])
    form = _form(home.get(f"/statements/{statement_id}").text, f"refund-form-{payment_id}")
    forged = home.post(f"/payments/{payment_id}/refunds", {**form, "amount": "1"}, csrf="forged")
    assert forged.status_code == 403 and "Form refused" in forged.text
    assert home.post("/payments/999999/refunds", {**form, "amount": "1"}).status_code == 404
    assert _gateway_refunds(store) == 4


# -- withdrawing a pledge -----------------------------------------------------------------------


def _group(app, keys, world) -> str:
    """A group request of alice's with bob as a member, pledging; its group's page."""
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    alice.get("/requests/new")
    members = f"user {world.alice}\nuser {world.bob}"
    sent = _block(services="anonymize", group="yes", max_price="40.00", members=members)
    answer = alice.post("/requests/new", sent)
    assert answer.status_code == 303, field_errors(answer.text)
    page = alice.get(answer.headers["location"]).text
    return "/groups/" + re.search(r'href="/groups/(\d+)"', page).group(1)


def _pledges(store) -> list[tuple[int, int]]:
    with store.read() as s:
        return sorted((p.user_id, p.max_minor) for p in s.scalars(select(Pledge)))


def test_a_member_withdraws_its_pledge_once_while_pledging_is_open(app, keys, world, store):
    group = _group(app, keys, world)
    group_id = int(group.rsplit("/", 1)[1])
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    assert 'data-testid="withdraw-form"' not in bob.get(group).text  # nothing pledged yet
    assert bob.post(f"{group}/pledge", {"max": "12.50"}).status_code == 303
    assert _pledges(store) == [(world.bob, 1250)]
    page = bob.get(group).text
    assert 'data-testid="withdraw-form"' in page
    form = _form(page, "withdraw-form")
    assert form["idempotency_key"].startswith("console-")
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    assert 'data-testid="withdraw-form"' not in alice.get(group).text  # alice pledged nothing
    forged = bob.post(f"{group}/pledges/mine/withdraw", form, csrf="forged")
    assert forged.status_code == 403 and _pledges(store) == [(world.bob, 1250)]
    first = bob.post(f"{group}/pledges/mine/withdraw", form)
    again = bob.post(f"{group}/pledges/mine/withdraw", form)  # a double click: the same answer
    assert first.status_code == again.status_code == 303
    assert _pledges(store) == []
    shown = _api(app, keys["bob"]).get(f"/v1/groups/{group_id}").json()
    assert shown["pledges"] == [] and shown["pledged_total_minor"] == 0
    page = bob.get(group).text
    assert 'data-testid="withdraw-form"' not in page and "None yet." in page
    # A new form with no pledge left: 404 as the API answers it.
    want = _api(app, keys["bob"]).delete(f"/v1/groups/{group_id}/pledges/mine").status_code
    got = bob.post(f"{group}/pledges/mine/withdraw", {"idempotency_key": "another"})
    assert got.status_code == want == 404
    # Once pledging is closed, a pledge is binding: no button, and a forged form is refused.
    assert bob.post(f"{group}/pledge", {"max": "5"}).status_code == 303
    form = _form(bob.get(group).text, "withdraw-form")
    assert alice.post(f"{group}/close", {}).status_code == 303
    assert 'data-testid="withdraw-form"' not in bob.get(group).text
    late = bob.post(f"{group}/pledges/mine/withdraw", form)
    assert late.status_code == 409 and "binding" in late.text
    assert _pledges(store) == [(world.bob, 500)]


def test_withdrawing_is_refused_to_whom_the_api_refuses_it(app, keys, world, store):
    group = _group(app, keys, world)
    group_id = int(group.rsplit("/", 1)[1])
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    assert bob.post(f"{group}/pledge", {"max": "12.50"}).status_code == 303
    for who in ("alice", "north", "home", "admin"):  # none of them pledged
        b = Browser(app)
        b.sign_in(keys[who])
        b.get("/sessions")
        want = _api(app, keys[who]).delete(f"/v1/groups/{group_id}/pledges/mine").status_code
        got = b.post(f"{group}/pledges/mine/withdraw", {})
        assert got.status_code == want == 404, who
    assert _pledges(store) == [(world.bob, 1250)]


# -- every principal's own keys -----------------------------------------------------------------


def _prefix(token: str) -> str:
    return token.split("_")[1]


def _issued_token(page: str) -> str | None:
    found = re.search(r'value="(pktx_[^"]+)" size="60" data-testid="token"', page)
    return found.group(1) if found else None


@pytest.mark.parametrize("who", ["alice", "home", "network", "admin"])
def test_a_principal_issues_its_own_key_shown_once_and_revokes_it(app, keys, world, store, who):
    if who == "network":
        with store.write() as s:
            keys["network"] = issue_key(s, world.m.admin, "network", world.north_net)[1]
    kind, ident = {
        "alice": ("user", world.alice),
        "home": ("provider", world.home),
        "network": ("network", world.north_net),
        "admin": ("admin", world.m.admin.id),
    }[who]
    me = Browser(app)
    me.sign_in(keys[who])
    page = me.get("/keys").text
    mine = _prefix(keys[who])
    assert f"<code>{mine}</code> <strong>(this session's)</strong>" in page
    assert _prefix(keys["bob"]) not in page  # only its own keys
    form = _form(page, "key-form")
    long = me.post("/keys", {**form, "label": "x" * 101})
    assert long.status_code == 422 and "100 characters" in field_errors(long.text)["label"]
    assert 'value="' + "x" * 101 + '"' in long.text
    forged = me.post("/keys", {**form, "label": "laptop"}, csrf="forged")
    assert forged.status_code == 403
    first = me.post("/keys", {**form, "label": "laptop"})
    assert first.status_code == 201 and first.headers["cache-control"] == "no-store"
    token = _issued_token(first.text)
    assert token and "/keys" not in first.headers.get("location", "")
    assert _api(app, token).get("/v1/me").json()["kind"] == kind  # the new key works
    again = me.post("/keys", {**form, "label": "laptop"})  # the form sent twice: one key
    assert again.status_code == 200 and _issued_token(again.text) is None
    assert "was issued by this same form before" in again.text
    with store.read() as s:
        rows = s.scalars(select(ApiKey).where(ApiKey.label == "laptop")).all()
        assert [r.prefix for r in rows] == [_prefix(token)]
        assert rows[0].principal == (kind, ident) and rows[0].revoked_at is None
    listed = me.get("/keys").text
    assert f"<code>{_prefix(token)}</code>" in listed and "laptop" in listed
    # Revoke the new key: its sessions end at once, this one goes on.
    other = Browser(app)
    assert other.sign_in(token).status_code == 303
    assert me.post(f"/keys/{_prefix(token)}/revoke", {}).status_code == 303
    assert me.post(f"/keys/{_prefix(token)}/revoke", {}).status_code == 303  # again: as it is
    assert other.http.get("/keys").headers["location"] == "/signin"
    assert me.get("/keys").status_code == 200
    # Revoke the key this session signed in with: signed out.
    out = me.post(f"/keys/{mine}/revoke", {})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert (
        'pktx_console=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    )
    assert me.http.get("/keys").headers["location"] == "/signin"
    with store.read() as s:
        assert s.scalar(select(ApiKey.revoked_at).where(ApiKey.prefix == mine)) is not None


def test_another_principals_key_is_refused_as_the_api_refuses_it(app, keys, world, store):
    with store.write() as s:
        alice_laptop = _prefix(issue_key(s, world.m.admin, "user", world.alice, "laptop")[1])
        phone = issue_key(s, world.m.admin, "device", world.alice_phone)[1]
        keys["north-net"] = issue_key(s, world.m.admin, "network", world.north_net)[1]
    for who, prefix in (
        ("bob", alice_laptop),
        ("home", alice_laptop),
        ("north", _prefix(keys["south"])),
        ("north-net", _prefix(keys["south"])),
        ("alice", "000000000000"),  # no such key
    ):
        b = Browser(app)
        b.sign_in(keys[who])
        b.get("/keys")
        want = _api(app, keys[who]).delete(f"/v1/keys/{prefix}").status_code
        got = b.post(f"/keys/{prefix}/revoke", {})
        assert got.status_code == want and want in (403, 404), who
    with store.read() as s:
        assert s.scalar(select(func.count()).where(ApiKey.revoked_at.is_not(None))) == 0
    # A network manages its providers' keys, as the API lets it.
    net = Browser(app)
    net.sign_in(keys["north-net"])
    net.get("/keys")
    assert net.post(f"/keys/{_prefix(keys['north'])}/revoke", {}).status_code == 303
    assert _api(app, keys["north"]).get("/v1/me").status_code == 401
    # A device issues no key: no form, and a forged one is refused as the API refuses it.
    device = Browser(app)
    device.sign_in(phone)
    page = device.get("/keys").text
    assert 'data-testid="key-form"' not in page and "does not issue keys" in page
    want = _api(app, phone).post("/v1/keys", json={"kind": "device", "id": world.alice_phone})
    got = device.post("/keys", {"label": "x"})
    assert got.status_code == want.status_code == 403
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.label == "x")) == 0


# -- a user's charges not yet on a statement ----------------------------------------------------


def _charge_ids(page: str) -> list[int]:
    table = re.search(r'data-testid="charges">(.*?)</table>', page, re.S)
    return [int(n) for n in re.findall(r"<tr><td>#(\d+)</td>", table.group(1))] if table else []


def test_a_users_charges_not_yet_on_a_statement_newest_first_page_by_page(app, keys, world, store):
    _statement(world)  # January's charges, on a finalized statement
    alice = world.m.actor("user", world.alice)
    for n in range(52):  # February's: on no statement yet
        award(store, alice, world.south, price=100 + n, at=T0 + timedelta(days=40, minutes=n))
    award(
        store, world.m.actor("user", world.bob), world.south, price=999, at=T0 + timedelta(days=40)
    )
    api = _api(app, keys["alice"]).get(f"/v1/users/{world.alice}/charges?limit=200").json()
    unbilled = sorted((c["id"] for c in api["items"] if c["statement_id"] is None), reverse=True)
    billed = {c["id"] for c in api["items"] if c["statement_id"] is not None}
    assert len(unbilled) == 52 and billed
    with store.read() as s:  # the API listed them all
        assert s.scalar(select(func.count()).where(Charge.user_id == world.alice)) == len(
            api["items"]
        )
    b = Browser(app)
    b.sign_in(keys["alice"])
    assert f'href="/users/{world.alice}/charges"' in b.get("/statements").text
    assert f'href="/users/{world.alice}/charges"' in b.get("/account").text
    first = b.get(f"/users/{world.alice}/charges").text
    assert _charge_ids(first) == unbilled[:50]  # the newest 50, newest first
    totals = re.search(r'data-testid="charge-totals">(.*?)</dl>', first, re.S).group(1)
    assert "<dt>EUR</dt><dd>65.26 EUR</dd>" in totals  # 52 x 1.00 EUR + 0.00 ... 0.51 EUR
    assert "1.51 EUR" in first and "9.99 EUR" not in first  # not bob's
    older = re.search(r'href="([^"]+)" rel="next" data-testid="older"', first).group(1)
    assert older == f"/users/{world.alice}/charges?after={unbilled[49]}"
    second = b.get(older).text
    assert _charge_ids(second) == unbilled[50:]
    assert not billed & set(_charge_ids(first) + _charge_ids(second))
    assert 'data-testid="older"' not in second and ">Newest</a>" in second
    # Whom the API shows them to, the console shows them to; to no one else.
    for who in ("alice", "bob", "home", "north", "admin"):
        other = Browser(app)
        other.sign_in(keys[who])
        want = _api(app, keys[who]).get(f"/v1/users/{world.alice}/charges").status_code
        got = other.get(f"/users/{world.alice}/charges")
        assert got.status_code == want and want in (200, 403), who
        assert ("1.51 EUR" in got.text) == (want == 200), who
    missing = _api(app, keys["admin"]).get("/v1/users/999999/charges").status_code
    admin = Browser(app)
    admin.sign_in(keys["admin"])
    assert admin.get("/users/999999/charges").status_code == missing == 404
    assert admin.get(f"/users/{world.alice}/charges?after=x").status_code == 400


# -- a provider's delivery jobs, page by page ---------------------------------------------------


def _job_ids(page: str) -> list[int]:
    table = re.search(r'data-testid="jobs">(.*?)</table>', page, re.S)
    return [int(n) for n in re.findall(r"<tr><td>#(\d+)</td>", table.group(1))] if table else []


def test_a_providers_delivery_jobs_newest_first_page_by_page(app, keys, world, store):
    alice = world.m.actor("user", world.alice)
    for n in range(51):
        award(store, alice, world.north, price=100, at=T0 + timedelta(minutes=n))
    award(store, alice, world.south, price=100, at=T0)
    with store.write() as s:
        keys["north-net"] = issue_key(s, world.m.admin, "network", world.north_net)[1]
    api = _api(app, keys["north"]).get(f"/v1/providers/{world.north}/jobs?limit=200").json()
    north_jobs = sorted((j["id"] for j in api["items"]), reverse=True)
    assert len(north_jobs) == 51
    for who in ("north", "north-net"):
        b = Browser(app)
        b.sign_in(keys[who])
        first = b.get("/awards").text
        assert _job_ids(first) == north_jobs[:50], who  # the newest 50, newest first
        older = re.search(r'href="([^"]+)" rel="next" data-testid="older-jobs"', first).group(1)
        assert older == f"/awards?jobs_after={north_jobs[49]}#jobs"
        second = b.get(older.split("#")[0]).text
        assert _job_ids(second) == north_jobs[50:], who
        assert 'data-testid="older-jobs"' not in second and ">Newest jobs</a>" in second
    # Another provider sees its own jobs only, as the API lists them to it.
    south = Browser(app)
    south.sign_in(keys["south"])
    mine = _api(app, keys["south"]).get(f"/v1/providers/{world.south}/jobs").json()["items"]
    assert _job_ids(south.get("/awards").text) == [j["id"] for j in mine]
    assert _api(app, keys["south"]).get(f"/v1/providers/{world.north}/jobs").status_code == 403
    for who in ("alice", "admin"):  # no jobs table: a user's awards, the admin's market
        b = Browser(app)
        b.sign_in(keys[who])
        assert 'data-testid="jobs"' not in b.get("/awards").text
    assert south.get("/awards?jobs_after=x").status_code == 400
