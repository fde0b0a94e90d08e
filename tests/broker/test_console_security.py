"""Console sign-in limits and the sessions page: guessing keys, a stolen cookie after sign-out or
after its session was ended elsewhere, a session of a revoked key (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from console_client import Browser
from sqlalchemy import select

from broker.actors import revoke_key
from broker.api import create_app
from broker.console import attempts
from broker.models import ConsoleSession


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _wrong(key: str) -> str:
    return key[:-3] + ("xyz" if not key.endswith("xyz") else "abc")


def test_a_key_prefix_is_locked_after_its_refused_tries_even_for_the_right_key(app, keys):
    b = Browser(app)
    for _ in range(attempts.PER_PREFIX):
        assert b.sign_in(_wrong(keys["alice"])).status_code == 401
    refused = b.sign_in(keys["alice"])  # the right key, now too late: guessing learns nothing
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= attempts.WINDOW.total_seconds()
    assert "too many refused sign-ins for key" in refused.text
    assert 'id="api_key-error"' in refused.text
    assert "pktx_console" not in b.http.cookies
    # Another key from the same address still signs in: the address has tries left.
    assert Browser(app).sign_in(keys["bob"]).status_code == 303


def test_an_address_is_locked_after_its_refused_tries_whatever_the_key(app, keys):
    b = Browser(app)
    for n in range(attempts.PER_ADDRESS):
        # A different made-up prefix each time, so that only the address adds up.
        assert b.sign_in(f"pktx_guess{n}_secret").status_code == 401
    b.sign_in("not even a key")
    refused = b.sign_in(keys["bob"])
    assert refused.status_code == 429
    assert "from this address" in refused.text
    assert int(refused.headers["retry-after"]) > 0


def test_the_count_is_kept_in_the_database_across_a_restart_and_ends_with_the_window(
    app, keys, store
):
    b = Browser(app)
    for _ in range(attempts.PER_PREFIX):
        b.sign_in(_wrong(keys["alice"]))
    # A new app on the same database: a restarted broker.
    again = create_app(store, expire_every=None)
    assert Browser(again).sign_in(keys["alice"]).status_code == 429
    now = datetime.now(UTC)
    with store.write() as s:
        with pytest.raises(attempts.TooManyAttempts):
            attempts.check(s, "testclient", keys["alice"], now)
        # Once the window has passed the tries are free again.
        attempts.check(s, "testclient", keys["alice"], now + attempts.WINDOW)
    with store.read() as s:
        assert attempts.failures(s, "testclient", now) == attempts.PER_PREFIX


def test_sessions_page_lists_only_the_principals_own_sessions(app, keys):
    first = Browser(app)
    first.http.headers["user-agent"] = "first-browser/1.0"
    first.sign_in(keys["alice"])
    second = Browser(app)
    second.http.headers["user-agent"] = "second-browser/2.0"
    second.sign_in(keys["alice"])
    bob = Browser(app)
    bob.http.headers["user-agent"] = "bobs-browser/3.0"
    bob.sign_in(keys["bob"])
    page = first.get("/sessions")
    assert page.status_code == 200
    assert "first-browser/1.0" in page.text and "second-browser/2.0" in page.text
    assert "bobs-browser" not in page.text
    assert page.text.count("End this session") == 2
    assert "(this one)" in page.text and "testclient" in page.text


def test_end_one_session_and_all_others_the_ended_cookies_are_worth_nothing(app, keys, store):
    a, b, c = Browser(app), Browser(app), Browser(app)
    for one in (a, b, c):
        one.sign_in(keys["alice"])
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    with store.read() as s:
        ids = {
            row.token_sha256: row.id
            for row in s.scalars(select(ConsoleSession).order_by(ConsoleSession.id))
        }
    b_id, bob_id = list(ids.values())[1], list(ids.values())[3]
    a.get("/sessions")
    # Without the CSRF token nothing is ended.
    assert a.post(f"/sessions/{b_id}/end", {}, csrf="forged").status_code == 403
    assert b.http.get("/requests").status_code == 200
    # Another principal's session is not there to end (404, as the API answers).
    assert a.post(f"/sessions/{bob_id}/end", {}).status_code == 404
    assert bob.http.get("/requests").status_code == 200
    assert a.post(f"/sessions/{b_id}/end", {}).headers["location"] == "/sessions"
    assert b.http.get("/requests").headers["location"] == "/signin"
    assert c.http.get("/requests").status_code == 200
    assert a.post("/sessions/others/end", {}).status_code == 303
    assert c.http.get("/requests").headers["location"] == "/signin"
    assert a.http.get("/requests").status_code == 200
    assert bob.http.get("/requests").status_code == 200  # someone else's, untouched


def test_a_stolen_cookie_is_worthless_after_sign_out(app, keys):
    a = Browser(app)
    a.sign_in(keys["alice"])
    stolen = a.http.cookies["pktx_console"]
    assert a.post("/signout", {}).status_code == 303
    thief = Browser(app)
    thief.http.cookies.set("pktx_console", stolen)
    assert thief.http.get("/requests").headers["location"] == "/signin"
    assert thief.http.get("/sessions").headers["location"] == "/signin"


def test_a_revoked_keys_session_ends_and_is_not_listed(app, keys, store, world):
    a = Browser(app)
    a.sign_in(keys["alice"])
    b = Browser(app)
    b.sign_in(keys["alice"])
    with store.write() as s:
        revoke_key(s, world.m.admin, keys["alice"].split("_")[1])
    assert a.http.get("/sessions").headers["location"] == "/signin"
    assert b.http.get("/requests").headers["location"] == "/signin"


def test_last_seen_is_written_at_most_once_a_minute(app, keys, store):
    a = Browser(app)
    a.sign_in(keys["alice"])
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    with store.write() as s:
        row = s.scalars(select(ConsoleSession)).one()
        row.last_seen_at = earlier
    a.get("/requests")
    with store.read() as s:
        seen = s.scalars(select(ConsoleSession)).one().last_seen_at
    assert seen is not None and seen > earlier + timedelta(minutes=4)
    a.get("/requests")
    with store.read() as s:
        assert s.scalars(select(ConsoleSession)).one().last_seen_at == seen
