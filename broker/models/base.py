"""The declarative base, column types shared by every table, and constraint naming."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, String, Table, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broker.clock import utcnow

# Named constraints, so that migrations can refer to them on every backend (SQLite included).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps the zone (``timestamptz``); SQLite keeps text without one, so values are
    normalised to UTC going in and marked UTC coming out. Naive datetimes are refused: a time
    whose zone is a guess is a bug waiting for daylight saving time.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; give it a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Minor units of money, bits per second and bytes outgrow 32 bits; SQLite's INTEGER is 64-bit
# anyway but only "INTEGER PRIMARY KEY" autoincrements, hence the variant for ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
Minor = BigInteger
Currency = String(3)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}

    if TYPE_CHECKING:  # every model here maps one Table (DeclarativeBase says FromClause)
        __table__: ClassVar[Table]


class HasId:
    id: Mapped[int] = mapped_column(Id, primary_key=True)


class HasCreated:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
