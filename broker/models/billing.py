"""The money side's tables: tariff versions, usage reports and the charge lines they produce."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, Currency, HasCreated, HasId, Minor

# The counters a delivery daemon reports, each a running total for its job (docs/billing.md).
COUNTERS = (
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "seconds",
    "windows_met",
    "windows_missed",
)


class TariffVersion(HasId, HasCreated, Base):
    """One version of a provider's tariff for one service chain, as `Tariff.to_json()`.

    A version is never edited; a new one is published. ``services`` is the chain as awards keep
    it (comma-joined, in order), so an award finds its delivering provider's tariff by equality.
    """

    __tablename__ = "tariffs"
    __table_args__ = (
        UniqueConstraint("provider_id", "services", "version"),
        UniqueConstraint("provider_id", "services", "active_from"),
        CheckConstraint("version >= 1", name="version"),
    )

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    services: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    active_from: Mapped[datetime]
    currency: Mapped[str] = mapped_column(Currency)
    doc: Mapped[dict] = mapped_column(JSON)


class UsageReport(HasId, HasCreated, Base):
    """One usage report of a delivery job: cumulative counters at ``usage_at``.

    (job, sequence) is unique with no time window: a report is taken in exactly once.
    ``charged_minor`` is what the report added in all (before the split among the payers),
    rated by ``tariff_id`` (null: no tariff version applied, nothing charged).
    """

    __tablename__ = "usage_reports"
    __table_args__ = (
        UniqueConstraint("job_id", "sequence"),
        CheckConstraint("sequence >= 1", name="sequence"),
        *(CheckConstraint(f"{c} >= 0", name=c) for c in COUNTERS),
    )

    job_id: Mapped[int] = mapped_column(ForeignKey("delivery_jobs.id"))
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), index=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    usage_at: Mapped[datetime]
    packets_in: Mapped[int] = mapped_column(BigInteger)
    packets_out: Mapped[int] = mapped_column(BigInteger)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[int] = mapped_column(BigInteger)
    windows_met: Mapped[int] = mapped_column(BigInteger)
    windows_missed: Mapped[int] = mapped_column(BigInteger)
    service_counters: Mapped[dict] = mapped_column(JSON)
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariffs.id"))
    charged_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str | None] = mapped_column(Currency)


class Charge(HasId, Base):
    """One charge line to one payer: an award's price (``kind`` ``price``), the price undone
    for an award that delivered nothing (``kind`` ``void``, the price's negative), or one
    dimension of one usage report's charge (``kind`` the dimension), in minor units of
    ``currency`` with the ``minor_digits`` it was rated with. Negative only as a void or a
    volume-tier credit."""

    __tablename__ = "charges"
    __table_args__ = (
        CheckConstraint("(kind IN ('price', 'void')) = (usage_report_id IS NULL)", name="source"),
        CheckConstraint("minor_digits BETWEEN 0 AND 18", name="digits"),
        Index(
            "uq_charges_award_price",
            "award_id",
            "user_id",
            unique=True,
            sqlite_where=text("kind = 'price'"),
            postgresql_where=text("kind = 'price'"),
        ),
        Index(
            "uq_charges_award_void",
            "award_id",
            "user_id",
            unique=True,
            sqlite_where=text("kind = 'void'"),
            postgresql_where=text("kind = 'void'"),
        ),
        Index("ix_charges_user_id_rated_at", "user_id", "rated_at"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("delivery_jobs.id"))
    usage_report_id: Mapped[int | None] = mapped_column(ForeignKey("usage_reports.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    minor_digits: Mapped[int] = mapped_column(Integer)
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariffs.id"))
    tariff_version: Mapped[int | None] = mapped_column(Integer)
    rated_at: Mapped[datetime]
