"""Statements: a home provider's billing settings, its users' statements and their lines,
credit notes that correct a finalized line, users' segmentation profiles, and the events a
user's devices are sent (docs/billing.md, "Statements")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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


class BillingSettings(Base):
    """A home provider's billing period and its statement counter.

    Periods are ``period_months`` long (1, 2, 3, 4, 6 or 12) and start on ``cutoff_day`` of a
    month, at midnight in ``timezone``; a period is named by the month it starts in
    (``2026-11``). ``next_number`` numbers finalized statements without gaps (the row is locked
    while a statement takes its number). ``closed_through`` is the end of the last period a
    close began: periods close in order.
    """

    __tablename__ = "billing_settings"
    __table_args__ = (
        CheckConstraint("cutoff_day BETWEEN 1 AND 28", name="cutoff_day"),
        CheckConstraint("period_months IN (1, 2, 3, 4, 6, 12)", name="period_months"),
        CheckConstraint("next_number >= 1", name="next_number"),
        CheckConstraint("margin_ppm BETWEEN 0 AND 1000000", name="margin"),
        CheckConstraint("payment_terms_days BETWEEN 0 AND 366", name="terms"),
    )

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    period_months: Mapped[int] = mapped_column(Integer, default=1)
    cutoff_day: Mapped[int] = mapped_column(Integer, default=1)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    next_number: Mapped[int] = mapped_column(BigInteger, default=1)
    closed_through: Mapped[datetime | None]
    # What the home provider keeps of another provider's charge (millionths; the rest it owes
    # that provider), and how long a user has to pay a finalized statement.
    margin_ppm: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=14, server_default="14")


class Statement(HasId, HasCreated, Base):
    """One user's statement for one period from its home provider: draft, then finalized.

    A draft has no lines of its own: its lines are the user's charges (and credit notes) not
    yet on a statement. Finalizing writes them as `StatementLine` rows, gives the statement the
    home provider's next number, its per-currency ``totals`` and the SHA-256 of its content,
    in one transaction; after that nothing of it changes.
    """

    __tablename__ = "statements"
    __table_args__ = (
        UniqueConstraint("home_provider_id", "user_id", "period"),
        UniqueConstraint("home_provider_id", "number"),
        CheckConstraint("status IN ('draft', 'finalized')", name="status"),
        CheckConstraint("(status = 'finalized') = (number IS NOT NULL)", name="numbered"),
        CheckConstraint("(status = 'finalized') = (content_sha256 IS NOT NULL)", name="hashed"),
    )

    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(10), default="draft")
    number: Mapped[int | None] = mapped_column(BigInteger)
    totals: Mapped[dict | None] = mapped_column(JSON)
    line_count: Mapped[int | None] = mapped_column(Integer)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    finalized_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    # Payments against the statement (kept by the payments code): how much of its total has
    # been paid, net of refunds, and when it was paid in full (null: not yet).
    paid_minor: Mapped[int] = mapped_column(Minor, default=0, server_default="0")
    paid_at: Mapped[datetime | None]


class StatementLine(HasId, Base):
    """One line of a finalized statement: one charge or one credit note, never both, each on
    one statement only. ``attrs`` keeps what the line is presented by (provider, network,
    services, device, phone, recipients, sources) as it was when the statement was finalized.
    """

    __tablename__ = "statement_lines"
    __table_args__ = (
        CheckConstraint("(charge_id IS NULL) <> (credit_note_id IS NULL)", name="source"),
        CheckConstraint("minor_digits BETWEEN 0 AND 18", name="digits"),
        UniqueConstraint("statement_id", "position"),
    )

    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"))
    position: Mapped[int] = mapped_column(Integer)
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"), unique=True)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("credit_notes.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(24))
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    minor_digits: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    attrs: Mapped[dict] = mapped_column(JSON)


class CreditNote(HasId, HasCreated, Base):
    """A correction of a finalized statement's line, by the home provider: a negative amount
    in the line's currency that goes on the user's next statement (never an edit).

    The corrected line is named by its charge (a charge is on one statement line only), which
    keeps the tables free of a foreign-key cycle with `StatementLine`."""

    __tablename__ = "credit_notes"
    __table_args__ = (CheckConstraint("amount_minor < 0", name="negative"),)

    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    corrects_charge_id: Mapped[int] = mapped_column(ForeignKey("charges.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    minor_digits: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(500))


class StatementProfile(HasId, HasCreated, Base):
    """A user's saved segmentation profile (claim 12): how its charges are presented."""

    __tablename__ = "statement_profiles"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        Index(
            "uq_statement_profiles_default",
            "user_id",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(100))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    doc: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime]


class DeviceEvent(HasId, HasCreated, Base):
    """Something a user's devices are told (a statement finalized), in id order: the id is the
    server-sent event's id, so a device that reconnects with ``Last-Event-ID`` gets the rest."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_user_id_id", "user_id", "id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
