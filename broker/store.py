"""Where the market is kept: engine and session creation, migrations applied on first use.

A SQLite file by default (WAL, foreign keys on, writers take the lock up front with
``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock, and the threads of one
process queue for it on a lock of their own, see `Store.write`); PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). Every change runs in one transaction: `Store.write`
commits when its block ends and rolls everything back when it raises.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import ClauseElement, Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler

log = logging.getLogger(__name__)

ENV_DB = "PKTX_BROKER_DB"


def default_url() -> str:
    """``$PKTX_BROKER_DB``, else a SQLite file in the user's data folder."""
    if os.environ.get(ENV_DB):
        return os.environ[ENV_DB]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'pktx' / 'broker.sqlite3'}"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``, with the SQLite pragmas and locking set on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    pool = {}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Hand out the connection returned last: the writer before has just used it, so its
        # page cache is still good (SQLite empties a connection's cache when it finds that
        # another connection wrote since it last looked).
        pool = {"pool_use_lifo": True}
    engine = create_engine(url, echo=echo, connect_args={"timeout": 30}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control away from the sqlite3 module (which begins lazily and
        # deferred) so that "begin" below decides how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = "IMMEDIATE" if conn.get_execution_options().get("pktx_write", True) else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def fetch_tuples(
    conn: Connection,
    statement: ClauseElement,
    params: dict | None = None,
) -> list[tuple]:
    """The rows of ``statement`` as the driver's plain tuples, for reads of thousands of rows.

    SQLAlchemy wraps each row in a `Row` and converts its values by column type; for a bulk
    read of bare numbers that is most of the cost, and the objects left behind wake the
    garbage collector. The columns must need no conversion (ints, text as stored), and neither
    must the parameters.
    """
    # A DML or SELECT statement compiles with the dialect's SQLCompiler (not DDL's).
    compiled = cast(SQLCompiler, statement.compile(dialect=conn.dialect))
    # The SQL with its IN lists expanded and the parameters in the driver's style.
    state = compiled.construct_expanded_state(params or {})
    values = state.positional_parameters if compiled.positional else state.parameters
    driver = conn.connection.driver_connection
    assert driver is not None  # a connection checked out of the pool has one
    cursor = driver.cursor()
    try:
        cursor.execute(state.statement, values)
        return cursor.fetchall()
    finally:
        cursor.close()


def execute_many(
    conn: Connection, statement: ClauseElement, names: Sequence[str], rows: list[Sequence]
) -> None:
    """Run ``statement`` once for every row of ``rows``, in one driver executemany.

    A row holds the values of the statement's bind parameters ``names``, in that order.
    SQLAlchemy prepares each parameter set in Python (some 10 µs apiece), which for thousands
    of rows is most of the time; here the statement is compiled once for the connection's
    dialect and the rows go to the driver as they are. So they must hold what the driver takes
    as is (int, bool, str, None), nothing a column type would have to convert.
    """
    if not rows:
        return
    # A DML or SELECT statement compiles with the dialect's SQLCompiler (not DDL's).
    compiled = cast(SQLCompiler, statement.compile(dialect=conn.dialect))
    names = list(names)
    if not compiled.positional:
        conn.exec_driver_sql(str(compiled), [dict(zip(names, row)) for row in rows])
        return
    positions = compiled.positiontup
    assert positions is not None  # set by a positional compile
    if list(positions) == names:
        conn.exec_driver_sql(str(compiled), rows)
    else:
        order = [names.index(name) for name in positions]
        conn.exec_driver_sql(str(compiled), [tuple(row[i] for i in order) for row in rows])


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration of the migrations shipped in ``broker/migrations``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


class Store:
    """The broker's database: ``Store(url)`` migrates it to the latest schema on first use."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, echo: bool = False):
        self.url = url or default_url()
        self.engine = make_engine(self.url, echo=echo)
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(
            self.engine.execution_options(pktx_write=False), expire_on_commit=False
        )
        # SQLite has one writer at a time, and a writer that finds the file locked polls in
        # growing sleeps (1, 2, 5, 10... ms: SQLite's busy handler), so threads of one server
        # that all waited on the file lock would spend most of their time asleep. They queue on
        # this lock instead and are woken the moment the writer before them commits; the file
        # lock (and its busy timeout) is left to arbitrate between processes. Re-entrant, so a
        # nested write in one thread fails on the busy timeout as before instead of hanging.
        self._write_gate = threading.RLock() if self.backend == "sqlite" else nullcontext()
        if migrate:
            self.upgrade()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        """Apply the shipped migrations up to ``revision``; a no-op when already there."""
        if revision == "head" and self.revision() == head_revision():
            return
        cfg = alembic_config(self.url)
        with self.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        log.info(
            "broker store %s at revision %s", self.engine.url.render_as_string(), self.revision()
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One read-write transaction: commit at the end of the block, roll back on error."""
        with self._write_gate, self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (never commits; on SQLite it does not take the write lock)."""
        with self._reader() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
