"""The web console through Starlette's test client: sessions, CSRF, forms, and the same
authorization as the API, page by page (the browser tests are in test_console_browser.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from console_client import Browser, field_errors
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.actors import revoke_key
from broker.api import create_app
from broker.auctions import open_auction, submit_bid
from broker.models import ConsoleSession, ServiceRequest
from broker.requests import submit_request


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _block(hours: int = 1) -> dict:
    start = (datetime.now(UTC) + timedelta(hours=hours)).replace(second=0, microsecond=0)
    return {
        "services": "anonymize",
        "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
        "ends_at": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "max_rate": "10",
        "max_price": "50.00",
    }


def _due_auction(world, user: str = "alice") -> tuple[int, int]:
    """A request of ``user`` auctioned an hour ago, closed to bids a second ago, with bids
    from north (12.00 EUR) and south (9.00 EUR): (request id, auction id)."""
    m = world.m
    now = datetime.now(UTC)
    past = now - timedelta(hours=1)
    buyer = m.actor("user", getattr(world, user))
    with m.store.write() as s:
        r = submit_request(
            s,
            buyer,
            services="anonymize",
            starts_at=now + timedelta(hours=1),
            ends_at=now + timedelta(hours=2),
            max_rate_bps=10_000_000,
            now=past,
        )
        a = open_auction(
            s, buyer, r.id, closes_at=now - timedelta(seconds=1), reserve_price_minor=2000, now=past
        )
        for provider, price in ((world.north, 1200), (world.south, 900)):
            submit_bid(
                s,
                m.actor("provider", provider),
                a.id,
                provider_id=provider,
                price_minor=price,
                now=past,
            )
        return r.id, a.id


def test_a_page_without_a_session_goes_to_the_sign_in(app):
    b = Browser(app)
    for path in ("/", "/requests", "/auctions/1", "/market"):
        answer = b.http.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/signin"), path


def test_a_bad_key_is_refused_beside_the_field_and_no_cookie_is_set(app, keys):
    b = Browser(app)
    answer = b.sign_in(keys["alice"][:-3] + "xyz")
    assert answer.status_code == 401
    assert 'id="api_key-error"' in answer.text and "unknown API key" in answer.text
    assert "pktx_console" not in b.http.cookies


def test_sign_in_opens_a_session_kept_by_hash_in_an_http_only_same_site_cookie(app, keys, store):
    b = Browser(app)
    answer = b.sign_in(keys["alice"])
    assert (answer.status_code, answer.headers["location"]) == (303, "/requests")
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("pktx_console="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    token = b.http.cookies["pktx_console"]
    with store.read() as s:
        (row,) = s.scalars(select(ConsoleSession))
        stored = [str(getattr(row, c.key)) for c in ConsoleSession.__table__.columns]
    assert token not in stored and keys["alice"] not in stored
    assert keys["alice"] not in cookie


@pytest.mark.parametrize(
    ("token", "home"), [("alice", "/requests"), ("north", "/auctions"), ("admin", "/market")]
)
def test_the_page_set_follows_the_kind_of_principal(app, keys, token, home):
    b = Browser(app)
    assert b.sign_in(keys[token]).headers["location"] == home
    assert b.http.get("/").headers["location"] == home
    page = b.get(home)
    assert page.status_code == 200
    assert ('href="/requests/new"' in page.text) == (token == "alice")
    assert ('href="/market"' in page.text) == (token == "admin")


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(app, keys, store):
    b = Browser(app)
    b.sign_in(keys["alice"])
    other = Browser(app)
    other.sign_in(keys["bob"])
    for csrf in ("", "forged", other.csrf):  # none, made up, another session's
        answer = b.post("/requests/new", _block(), csrf=csrf)
        assert answer.status_code == 403, csrf
        assert "security token" in answer.text
    answer = b.http.post("/requests/new", data=_block())  # no field at all
    assert answer.status_code == 403
    with store.read() as s:
        assert s.scalars(select(ServiceRequest)).all() == []
    assert b.post("/requests/new", _block()).status_code == 303  # the right one passes


def test_the_sign_in_form_needs_its_own_token(app, keys):
    b = Browser(app)
    b.http.get("/signin")
    answer = b.http.post("/signin", data={"csrf_token": "forged", "api_key": keys["alice"]})
    assert answer.status_code == 403
    assert "pktx_console" not in b.http.cookies


def test_sign_out_ends_the_session_even_for_a_copied_cookie(app, keys):
    b = Browser(app)
    b.sign_in(keys["alice"])
    copied = b.http.cookies["pktx_console"]
    assert b.post("/signout", {}, csrf="wrong").status_code == 403
    assert b.post("/signout", {}).headers["location"] == "/signin"
    thief = TestClient(app, follow_redirects=False, cookies={"pktx_console": copied})
    assert thief.get("/requests").headers["location"] == "/signin"


def test_revoking_the_key_ends_its_sessions(app, keys, world, store):
    b = Browser(app)
    b.sign_in(keys["alice"])
    assert b.get("/requests").status_code == 200
    with store.write() as s:
        revoke_key(s, world.m.admin, keys["alice"].split("_")[1])
    assert b.http.get("/requests").headers["location"] == "/signin"


@pytest.mark.parametrize(
    ("change", "field", "said"),
    [
        ({"max_rate": "ten"}, "max_rate", "not a number"),
        ({"max_price": "1.234"}, "max_price", "at most 2 decimal"),
        ({"max_price": "-1"}, "max_price", "zero or more"),
        ({"starts_at": "tomorrow"}, "starts_at", "a date and time"),
        ({"services": ""}, "services", "at least one service"),
        ({"services": "teleport"}, "services", "teleport"),
        ({"volume_bytes": "1000"}, "volume_bytes", "not both"),
        ({"min_rate": "20"}, "min_rate", "exceeds max_rate_bps"),
    ],
)
def test_the_request_form_refuses_bad_input_beside_the_field(app, keys, store, change, field, said):
    b = Browser(app)
    b.sign_in(keys["alice"])
    answer = b.post("/requests/new", {**_block(), **change})
    assert answer.status_code == 422
    errors = field_errors(answer.text)
    assert field in errors and said in errors[field], errors
    assert f'value="{change[field]}"' in answer.text  # what was typed stays in the field
    with store.read() as s:
        assert s.scalars(select(ServiceRequest)).all() == []


def test_a_request_made_in_the_console_is_the_apis_request(app, keys, store):
    b = Browser(app)
    b.sign_in(keys["alice"])
    answer = b.post("/requests/new", _block())
    assert answer.status_code == 303
    request_id = int(answer.headers["location"].rsplit("/", 1)[1])
    api = TestClient(app, headers={"Authorization": f"Bearer {keys['alice']}"})
    made = api.get(f"/v1/requests/{request_id}").json()
    assert made["status"] == "brokering"  # home offers no anonymize: it goes to the market
    assert (made["max_rate_bps"], made["max_price_minor"], made["currency"]) == (
        10_000_000,
        5000,
        "EUR",
    )
    page = b.get(f"/requests/{request_id}")
    assert "brokering" in page.text and "50.00 EUR" in page.text
    opened = b.post(
        f"/requests/{request_id}/auction",
        {"reserve_price": "20.00", "closes_in": "600", "quantity": "1"},
    )
    assert opened.status_code == 303
    auction = api.get(opened.headers["location"].replace("/auctions", "/v1/auctions")).json()
    assert (auction["status"], auction["reserve_price_minor"]) == ("open", 2000)


def test_the_auction_form_refuses_a_reserve_above_the_limit_beside_the_field(app, keys):
    b = Browser(app)
    b.sign_in(keys["alice"])
    request_path = b.post("/requests/new", _block()).headers["location"]
    b.get(request_path)
    answer = b.post(
        f"{request_path}/auction", {"reserve_price": "60", "closes_in": "600", "quantity": "1"}
    )
    assert answer.status_code == 422
    assert "exceed the request's limit" in field_errors(answer.text)["reserve_price"]


def test_prices_are_sealed_until_the_close_then_the_winner_and_reputations_show(app, keys, world):
    _, auction = _due_auction(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    sealed = alice.get(f"/auctions/{auction}").text
    assert "north" in sealed and "south" in sealed  # who bid, with reputations
    assert "no measured deliveries yet" in sealed
    assert "12.00 EUR" not in sealed and "9.00 EUR" not in sealed
    north = Browser(app)
    north.sign_in(keys["north"])
    own = north.get(f"/auctions/{auction}").text
    assert "12.00 EUR" in own and "9.00 EUR" not in own  # its own bid only
    closed = alice.post(f"/auctions/{auction}/close", {})
    assert closed.status_code == 303
    result = alice.get(f"/auctions/{auction}").text
    assert "12.00 EUR" in result and "9.00 EUR" in result
    won = re.search(r'<tr class="won">(.*?)</tr>', result, re.S)
    assert won and "south" in won.group(1) and "<strong>won</strong>" in won.group(1)
    # second price: south pays north's ask
    assert re.search(r"<td>12\.00 EUR</td>\s*</tr>", won.group(0))
    awards = alice.get("/awards").text
    assert f"auction #{auction}" in awards and "12.00 EUR" in awards


def test_a_provider_bids_through_the_form_and_a_bad_price_is_refused_beside_it(app, keys, world):
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    request_path = alice.post("/requests/new", _block()).headers["location"]
    opened = alice.post(
        f"{request_path}/auction", {"reserve_price": "20", "closes_in": "600", "quantity": "1"}
    )
    auction = opened.headers["location"]
    north = Browser(app)
    north.sign_in(keys["north"])
    listed = north.get("/auctions").text
    assert f'href="{auction}"' in listed and "(0 ratings)" in listed  # buyer's reputation
    page = north.get(auction).text
    assert '<span class="who" data-testid="who" title="provider' in page
    assert 'data-testid="who"' in page and ">north</span>" in page  # its name, not its id
    # The price field's attributes reach the browser as attributes, not as escaped text.
    assert 'inputmode="decimal"' in page and "inputmode=&#34;" not in page
    for price, said in (("abc", "not a number"), ("25.00", "reserve")):
        refused = north.post(f"{auction}/bids", {"provider_id": str(world.north), "price": price})
        assert refused.status_code == 422
        assert said in field_errors(refused.text)["price"]
    forged = north.post(f"{auction}/bids", {"provider_id": str(world.south), "price": "10"})
    assert forged.status_code == 403  # north does not speak for south
    assert (
        north.post(
            f"{auction}/bids", {"provider_id": str(world.north), "price": "10.5"}
        ).status_code
        == 303
    )
    assert "10.50 EUR" in north.get(auction).text
    assert "10.50 EUR" not in alice.get(auction).text


def test_pages_show_what_the_api_shows_and_refuse_what_it_refuses(app, keys, world):
    """The authorization matrix: for each key and each page, the console's answer is the
    API's (200 or 403), and a refused page carries none of the thing's data."""
    request_id, auction_id = _due_auction(world, "bob")
    pairs = [(f"/requests/{request_id}", f"/v1/requests/{request_id}")]
    pairs.append((f"/auctions/{auction_id}", f"/v1/auctions/{auction_id}"))
    seen = {}
    for who, token in keys.items():
        b = Browser(app)
        b.sign_in(token)
        api = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        for page, call in pairs:
            want = api.get(call).status_code
            got = b.http.get(page)
            assert got.status_code == want, (who, page, got.status_code, want)
            if want == 403:
                assert "anonymize" not in got.text, (who, page)
            seen[who, page] = want
        listed = b.get("/requests").text if who in ("alice", "bob") else ""
        assert (f'href="/requests/{request_id}"' in listed) == (who == "bob")
    assert seen["alice", f"/auctions/{auction_id}"] == 403
    assert seen["tiny", f"/auctions/{auction_id}"] == 403
    assert seen["bob", f"/requests/{request_id}"] == 200


def test_the_admin_glance_is_for_admins(app, keys, world):
    _due_auction(world)
    admin = Browser(app)
    admin.sign_in(keys["admin"])
    page = admin.get("/market").text
    assert re.search(r'data-testid="open-auctions">1<', page)
    assert "alice" in page and "north" in page
    for name in ("alice", "north", "admin"):  # each key by its prefix, never its secret
        prefix, secret = keys[name].split("_", 2)[1:]
        assert f"<code>{prefix}</code>" in page and secret not in page
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    assert alice.http.get("/market").status_code == 403


def test_an_auctions_close_arrives_as_a_server_sent_event(app, keys, world):
    _, auction = _due_auction(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    alice.get(f"/auctions/{auction}")
    with alice.http.stream("GET", f"/auctions/{auction}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        first = ""
        for line in stream.iter_lines():
            if line.startswith("data:"):
                first = line
                break
    assert '"status":"open"' in first.replace(" ", "") and '"bid_count":2' in first.replace(" ", "")
    tiny = Browser(app)
    tiny.sign_in(keys["tiny"])
    assert tiny.http.get(f"/auctions/{auction}/events").status_code == 403


def test_recipients_are_requested_and_a_bad_line_is_refused_beside_them(app, keys, world):
    b = Browser(app)
    b.sign_in(keys["alice"])
    refused = b.post("/requests/new", {**_block(), "members": "user 1\nfriend bob"})
    assert refused.status_code == 422
    assert "line 2: start with user" in field_errors(refused.text)["members"]
    missing = b.post("/requests/new", {**_block(), "members": "user 99999"})
    assert (
        missing.status_code == 422
        and "no user with id 99999" in field_errors(missing.text)["members"]
    )
    made = b.post("/requests/new", {**_block(), "members": f"user {world.bob}\nphone +14155552671"})
    assert made.status_code == 303
    api = TestClient(app, headers={"Authorization": f"Bearer {keys['alice']}"})
    shown = api.get(made.headers["location"].replace("/requests", "/v1/requests")).json()
    assert shown["members"] == [
        {"kind": "user", "value": world.bob},
        {"kind": "phone", "value": "+14155552671"},
    ]


def test_a_request_is_cancelled_from_its_page_by_its_user_only(app, keys, world):
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    path = alice.post("/requests/new", _block()).headers["location"]
    home = Browser(app)
    home.sign_in(keys["home"])
    home.get(path)
    assert "Cancel the request" not in home.get(path).text
    assert home.post(f"{path}/cancel", {}).status_code == 403  # its home provider may not
    alice.get(path)
    assert alice.post(f"{path}/cancel", {}).status_code == 303
    assert 'status-cancelled">cancelled<' in alice.get(path).text
    again = alice.post(f"{path}/cancel", {})
    assert again.status_code == 409 and 'data-testid="message"' in again.text
