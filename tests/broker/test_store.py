"""The store: migrations, SQLite settings, column types, transactions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from marketplace import T0
from sqlalchemy import bindparam, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError

from broker.models import ApiKey, Base, Network, PricePolicy, Provider
from broker.store import Store, alembic_config, execute_many, fetch_tuples, head_revision


def test_a_new_store_is_migrated_to_head(store):
    assert store.revision() == head_revision()
    tables = set(inspect(store.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_reopening_does_not_migrate_again(store):
    again = Store(store.url)
    assert again.revision() == head_revision()
    again.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'sub' / 'b.sqlite3'}")
    with store.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(Provider(network_id=999, name="orphan", capacity_bps=1))
    store.dispose()


def test_foreign_keys_are_enforced(store):
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(Provider(network_id=4242, name="orphan", capacity_bps=1))


def test_times_come_back_aware_in_utc(store):
    plus_two = timezone(timedelta(hours=2))
    with store.write() as s:
        s.add(Network(name="n", created_at=T0.astimezone(plus_two)))
    with store.read() as s:
        created = s.scalar(select(Network.created_at))
    assert created == T0 and created.utcoffset() == timedelta(0)


def test_naive_times_are_refused(store):
    with pytest.raises(StatementError, match="naive datetime"), store.write() as s:
        s.add(Network(name="n", created_at=datetime(2030, 1, 1)))


def test_money_is_a_64_bit_integer(store):
    big = 9_000_000_000_000_000_000  # > 2**62, minor units of a very large sum
    with store.write() as s:
        s.add(Network(id=1, name="n"))
        s.add(Provider(id=1, network_id=1, name="p", capacity_bps=400_000_000_000))
        s.add(PricePolicy(provider_id=1, currency="EUR", per_gb_minor=big, per_mbps_hour_minor=1))
    with store.read() as s:
        value = s.scalar(select(PricePolicy.per_gb_minor))
    assert value == big and isinstance(value, int)


def test_a_failed_block_leaves_nothing_behind(store):
    with pytest.raises(RuntimeError), store.write() as s:
        s.add(Network(name="kept?"))
        s.flush()
        raise RuntimeError("boom")
    with store.read() as s:
        assert s.scalar(select(Network)) is None


def test_an_api_key_belongs_to_exactly_one_principal(store):
    with store.write() as s:
        s.add(Network(id=1, name="n"))
        s.add(Provider(id=1, network_id=1, name="p", capacity_bps=1))
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(ApiKey(prefix="x", secret_sha256="0" * 64, network_id=1, provider_id=1))
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(ApiKey(prefix="y", secret_sha256="0" * 64))


def test_bulk_reads_and_writes_through_the_driver(store):
    """`execute_many` and `fetch_tuples` on each backend's parameter style: names given in
    any order, expanded IN lists, values as the driver takes them."""
    with store.write() as s:
        s.add(Network(id=1, name="n"))
        s.add_all(Provider(id=i, network_id=1, name=f"p{i}", capacity_bps=0) for i in (1, 2, 3))
        s.flush()
        conn = s.connection()
        table = Provider.__table__
        execute_many(
            conn,
            update(table)
            .where(table.c.id == bindparam("p_id"))
            .values(capacity_bps=bindparam("p_cap")),
            ("p_id", "p_cap"),
            [(1, 10), (3, 30)],
        )
        execute_many(
            conn,
            update(table)
            .where(table.c.id == bindparam("p_id"))
            .values(capacity_bps=bindparam("p_cap")),
            ("p_cap", "p_id"),
            [(20, 2)],
        )
        execute_many(conn, update(table).values(capacity_bps=bindparam("p_cap")), ("p_cap",), [])
        query = (
            select(Provider.id, Provider.capacity_bps)
            .where(Provider.id.in_([1, 3]) | (Provider.name == bindparam("name")))
            .order_by(Provider.id)
        )
        assert fetch_tuples(conn, query, {"name": "p2"}) == [(1, 10), (2, 20), (3, 30)]
        assert all(type(row) is tuple for row in fetch_tuples(conn, query, {"name": "x"}))


def test_the_migrations_go_down_and_up_again(store):
    with store.engine.connect() as conn:
        cfg = alembic_config(store.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
        conn.commit()
    assert store.revision() == "0001"
    assert "ix_bids_auction_id" in {i["name"] for i in inspect(store.engine).get_indexes("bids")}
    store.upgrade()
    assert store.revision() == head_revision()
    test_migrations_match_the_models(store)
