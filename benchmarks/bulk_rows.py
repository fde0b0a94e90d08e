"""Rows written straight into a store for a benchmark's scene (building 10,000 providers or
users one API call at a time would measure the directory, not what the benchmark is for)."""

from __future__ import annotations


def bulk(session, model, rows: list[dict]) -> None:
    """Insert ``rows`` (each with every column, ids given) with Core executemany."""
    from sqlalchemy import insert

    table = getattr(model, "__table__", model)
    conn = session.connection()
    for i in range(0, len(rows), 5000):
        conn.execute(insert(table), rows[i : i + 5000])


def advance_sequences(session, *tables: str) -> None:
    """After rows went in with their ids given, PostgreSQL's id sequences must catch up."""
    from sqlalchemy import text

    if session.get_bind().dialect.name == "postgresql":
        for table in tables:
            session.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
