"""Fixtures: a fresh store on every available database, and a small market to trade in.

SQLite always; PostgreSQL too when ``PKTX_TEST_PG_URL`` names a server
(``postgresql+psycopg://user@host:port/db``): each test gets a schema of its own there, dropped
afterwards.
"""

from __future__ import annotations

import os
import uuid

import pytest
from marketplace import Market
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from broker.store import Store


def databases() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("PKTX_TEST_PG_URL") else ["sqlite"]


@pytest.fixture(params=databases())
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'broker.sqlite3'}")
        yield s
        s.dispose()
        return
    base = os.environ["PKTX_TEST_PG_URL"]
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    s = Store(url.render_as_string(hide_password=False))
    try:
        yield s
    finally:
        s.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


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
    w.home = market.provider(w.home_net, "home", services=("identity", "checksum"),
                             capacity_bps=100_000_000)
    w.north_net = market.network("north-net")
    w.north = market.provider(w.north_net, "north")
    w.south_net = market.network("south-net")
    w.south = market.provider(w.south_net, "south")
    w.alice = market.user("alice", w.home)
    w.alice_phone = market.device(w.alice, "alice-phone")
    w.bob = market.user("bob", w.home)
    w.bob_phone = market.device(w.bob, "bob-phone")
    return w
