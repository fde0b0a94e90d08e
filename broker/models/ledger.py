"""The double-entry ledger: every movement of money is a posting whose entries sum to zero
per currency (docs/billing.md, "Ledger")."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, Currency, HasCreated, HasId, Minor


class LedgerPosting(HasId, HasCreated, Base):
    """One event that moves money (a statement finalized, a payment, a refund, a settlement),
    posted once: (kind, ref) is unique, so posting the same event again is recognised."""

    __tablename__ = "ledger_postings"
    __table_args__ = (UniqueConstraint("kind", "ref"),)

    kind: Mapped[str] = mapped_column(String(24))
    ref: Mapped[str] = mapped_column(String(100))
    memo: Mapped[str] = mapped_column(String(300), default="")


class LedgerEntry(HasId, Base):
    """One side of a posting: ``amount_minor`` on ``account`` (debits positive, credits
    negative). Accounts are named ``<kind>:<owner>[:<counterparty>]`` (`broker.ledger`)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account_currency", "account", "currency"),)

    posting_id: Mapped[int] = mapped_column(ForeignKey("ledger_postings.id"), index=True)
    account: Mapped[str] = mapped_column(String(80))
    currency: Mapped[str] = mapped_column(Currency)
    minor_digits: Mapped[int] = mapped_column(Integer)
    amount_minor: Mapped[int] = mapped_column(Minor)
