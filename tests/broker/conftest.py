"""Fixtures: a fresh store on every available database, and a small market to trade in.

SQLite always; PostgreSQL too when ``PKTX_TEST_PG_URL`` names a server
(``postgresql+psycopg://user@host:port/db``, a role that may create databases). Migrations run
once per session into a template; every test then gets a new database copied from it (a file on
SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL), dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
from apiclient import Api, Served, standard_market
from marketplace import Market
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from broker.actors import issue_key
from broker.store import Store


def databases() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("PKTX_TEST_PG_URL") else ["sqlite"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file migrated once; each test starts from a copy of it."""
    path = tmp_path_factory.mktemp("template") / "broker.sqlite3"
    template = Store(f"sqlite:///{path}")
    raw = template.engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    template.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template():
    """A PostgreSQL database migrated once; each test gets a new database copied from it."""
    base = make_url(os.environ["PKTX_TEST_PG_URL"])
    server = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"pktx_template_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    Store(base.set(database=name).render_as_string(hide_password=False)).dispose()
    yield server, base, name
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(params=databases())
def store(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "broker.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        s = Store(f"sqlite:///{path}")
        yield s
        s.dispose()
        return
    server, base, template = request.getfixturevalue("pg_template")
    name = f"pktx_test_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    s = Store(base.set(database=name).render_as_string(hide_password=False))
    try:
        yield s
    finally:
        s.dispose()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def market(store) -> Market:
    return Market(store)


@pytest.fixture
def world(market):
    """Home network "home" with provider ``home`` (offers identity and checksum only) and user
    ``alice`` (device ``alice_phone``); networks "north" and "south" with full-service providers
    ``north`` and ``south``; user ``bob`` also at ``home``."""
    w = type("World", (), {})()
    w.m = market
    w.home_net = market.network("home-net")
    w.home = market.provider(
        w.home_net, "home", services=("identity", "checksum"), capacity_bps=100_000_000
    )
    w.north_net = market.network("north-net")
    w.north = market.provider(w.north_net, "north")
    w.south_net = market.network("south-net")
    w.south = market.provider(w.south_net, "south")
    w.alice = market.user("alice", w.home)
    w.alice_phone = market.device(w.alice, "alice-phone")
    w.bob = market.user("bob", w.home)
    w.bob_phone = market.device(w.bob, "bob-phone")
    return w


@pytest.fixture
def served(store):
    """The API over ``store``, served by uvicorn on a loopback port."""
    with Served(store) as s:
        yield s


@pytest.fixture
def api(served, market):
    """`apiclient.standard_market` set up through the served API."""
    return standard_market(Api(served.url, market))


@pytest.fixture
def keys(world):
    """An API key for each participant of `world`, and a provider ("tiny") that can bid on
    nothing but identity, in a network of its own."""
    m = world.m
    world.tiny = m.provider(m.network("tiny-net"), "tiny", services=("identity",))
    tokens = {}
    with m.store.write() as s:
        for name, kind, ident in (
            ("admin", "admin", m.admin.id),
            ("alice", "user", world.alice),
            ("bob", "user", world.bob),
            ("home", "provider", world.home),
            ("north", "provider", world.north),
            ("south", "provider", world.south),
            ("tiny", "provider", world.tiny),
        ):
            tokens[name] = issue_key(s, m.admin, kind, ident)[1]
    return tokens


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.report_call``...), for fixtures that keep
    evidence only when the test failed (the console's browser screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)
