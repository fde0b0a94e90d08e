"""Settlement between providers: batches a home provider issues to a delivering provider for
one period's statement lines, their lines, and the nettings that settle both directions of a
pair of providers in one amount due (docs/billing.md, "Settlement")."""

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
)
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, Currency, HasCreated, HasId, Minor


class SettlementNetting(HasId, HasCreated, Base):
    """Both directions between two providers for one period, netted: the batches it settles
    point to it; ``amounts`` holds per currency what each side owed, the net and who pays
    whom; it is posted to the ledger once (posting kind ``settlement``, ref its id)."""

    __tablename__ = "settlement_nettings"
    __table_args__ = (
        CheckConstraint("provider_low_id < provider_high_id", name="ordered"),
        Index("ix_settlement_nettings_pair", "provider_low_id", "provider_high_id", "period"),
    )

    provider_low_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    provider_high_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    period: Mapped[str] = mapped_column(String(7))
    amounts: Mapped[dict] = mapped_column(JSON)


class SettlementBatch(HasId, HasCreated, Base):
    """What home provider ``home_provider_id`` owes delivering provider ``provider_id`` for
    the lines of its ``period`` statements that ``provider_id`` delivered: numbered 1, 2, ...
    per pair, with audit totals (``line_count``, ``totals`` per currency of the lines), what
    is due (``due``: the lines less the home provider's ``margin``, per currency, as the
    statements posted them) and the SHA-256 of its document. Issued, then acknowledged by the
    delivering provider, then settled by a netting."""

    __tablename__ = "settlement_batches"
    __table_args__ = (
        UniqueConstraint("home_provider_id", "provider_id", "number"),
        CheckConstraint("home_provider_id <> provider_id", name="pair"),
        CheckConstraint("status IN ('issued', 'acknowledged', 'settled')", name="status"),
        CheckConstraint("number >= 1", name="number"),
        Index("ix_settlement_batches_provider_id_period", "provider_id", "period"),
        Index("ix_settlement_batches_home_provider_id_period", "home_provider_id", "period"),
    )

    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    number: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(7))
    status: Mapped[str] = mapped_column(String(12), default="issued")
    line_count: Mapped[int] = mapped_column(Integer)
    totals: Mapped[dict] = mapped_column(JSON)
    due: Mapped[dict] = mapped_column(JSON)
    margin: Mapped[dict] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None]
    netting_id: Mapped[int | None] = mapped_column(ForeignKey("settlement_nettings.id"), index=True)


class SettlementLine(HasId, Base):
    """One statement line in a batch: a statement line is settled once (unique)."""

    __tablename__ = "settlement_lines"
    __table_args__ = (UniqueConstraint("batch_id", "position"),)

    batch_id: Mapped[int] = mapped_column(ForeignKey("settlement_batches.id"))
    position: Mapped[int] = mapped_column(Integer)
    statement_line_id: Mapped[int] = mapped_column(ForeignKey("statement_lines.id"), unique=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"))
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
