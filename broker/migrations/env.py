"""Alembic environment of the broker's store: the models' metadata is the target."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from broker.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _render_item(type_, obj, autogen_context):
    # Migrations spell the portable type, not our decorator, so that they never import models.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        url = config.get_main_option("sqlalchemy.url")
        assert url is not None  # broker.store gives it whenever it passes no connection
        engine = create_engine(url)
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    else:
        _run(connection)


def _run(connection) -> None:
    _configure(connection)
    if connection.dialect.name == "sqlite":
        _run_sqlite(connection)
        return
    with context.begin_transaction():
        # Two processes starting on an empty database migrate one after the other.
        connection.execute(text("SELECT pg_advisory_xact_lock(7420131)"))
        context.run_migrations()


def _run_sqlite(connection) -> None:
    """SQLite's batch migrations rebuild a table (copy, drop, rename): with foreign keys
    enforced, dropping a table that other rows refer to fails. SQLite ignores the pragma inside
    a transaction, so it is switched off before the migration's transaction begins, every
    reference is checked before it commits, and it is switched on again after."""
    raw = connection.connection.driver_connection
    if connection.in_transaction():
        connection.commit()
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        with context.begin_transaction():
            context.run_migrations()
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"the migration left rows referring to nothing: {broken[:5]}")
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


if context.is_offline_mode():
    raise SystemExit("the broker's migrations run online only (Store.upgrade)")
run_migrations_online()
