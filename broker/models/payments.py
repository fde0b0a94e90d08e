"""Payments: users' cards on file (the gateway's token, never the number), attempts to pay a
statement, refunds against them, and the built-in test gateway's own book (docs/billing.md,
"Payments")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
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

_IN_FLIGHT = text("status IN ('pending', 'unknown')")


class PaymentMethod(HasId, HasCreated, Base):
    """A user's card as its gateway knows it: the gateway's token, the brand, the last four
    digits and the expiry. At most one default per user; a deleted card keeps its row (the
    payments made with it name it) but is no longer listed or charged."""

    __tablename__ = "payment_methods"
    __table_args__ = (
        CheckConstraint("exp_month BETWEEN 1 AND 12", name="exp_month"),
        Index(
            "uq_payment_methods_default",
            "user_id",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(40))
    token: Mapped[str] = mapped_column(String(200))
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None]


class Payment(HasId, HasCreated, Base):
    """One attempt to pay (part of) a statement in one currency with one card.

    ``attempt`` counts the statement's attempts from 1; ``gateway_key`` (derived from the
    statement and the attempt) is the idempotency key the gateway is called with, so asking
    again never charges twice. While an attempt is ``pending`` or ``unknown`` no other attempt
    of the statement may start: a partial unique index holds that, whatever the callers do.
    ``next_retry_at`` is when dunning retries a failed attempt (null: no retry planned).
    """

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("statement_id", "attempt"),
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'canceled', 'unknown')", name="status"
        ),
        CheckConstraint("amount_minor > 0", name="amount"),
        CheckConstraint("refunded_minor BETWEEN 0 AND amount_minor", name="refunded"),
        Index(
            "uq_payments_in_flight",
            "statement_id",
            unique=True,
            sqlite_where=_IN_FLIGHT,
            postgresql_where=_IN_FLIGHT,
        ),
    )

    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    method_id: Mapped[int] = mapped_column(ForeignKey("payment_methods.id"))
    gateway: Mapped[str] = mapped_column(String(40))
    gateway_key: Mapped[str] = mapped_column(String(100), unique=True)
    gateway_ref: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(10))  # user, collection, dunning
    status: Mapped[str] = mapped_column(String(10), default="pending")
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    minor_digits: Mapped[int] = mapped_column(Integer)
    refunded_minor: Mapped[int] = mapped_column(Minor, default=0)
    decline_code: Mapped[str | None] = mapped_column(String(40))
    decline_message: Mapped[str | None] = mapped_column(String(300))
    next_retry_at: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime]


class Refund(HasId, HasCreated, Base):
    """Money given back of a succeeded payment by the home provider (never more than what is
    left of the payment); ``gateway_key`` is the refund's idempotency key at the gateway."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'canceled', 'unknown')", name="status"
        ),
        CheckConstraint("amount_minor > 0", name="amount"),
    )

    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id"), index=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("statements.id"), index=True)
    gateway_key: Mapped[str] = mapped_column(String(100), unique=True)
    gateway_ref: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    reason: Mapped[str] = mapped_column(String(500), default="")
    decline_code: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime]


class TestGatewayOperation(HasId, HasCreated, Base):
    """The built-in test gateway's own record of every call it took, by idempotency key, as a
    real gateway keeps one on its side: the same key again gets the same answer."""

    __tablename__ = "test_gateway_operations"
    __test__ = False  # not a pytest test class

    key: Mapped[str] = mapped_column(String(100), unique=True)
    operation: Mapped[str] = mapped_column(String(20))
    request: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10))
    ref: Mapped[str | None] = mapped_column(String(200))
    decline_code: Mapped[str | None] = mapped_column(String(40))
    amount_minor: Mapped[int] = mapped_column(Minor, default=0)
