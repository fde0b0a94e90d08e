"""ledger: the double-entry ledger; a home provider's margin and payment terms; due dates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:40:00

Postings (one per event that moves money, unique by kind and reference) and their entries
(summing to zero per currency); `billing_settings` gains the home provider's margin on other
providers' charges and its payment terms; a finalized statement gains its due date
and what has been paid of it (docs/billing.md, "Ledger").
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_postings",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("ref", sa.String(length=100), nullable=False),
        sa.Column("memo", sa.String(length=300), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
        sa.UniqueConstraint("kind", "ref", name=op.f("uq_ledger_postings_kind_ref")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column(
            "posting_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("account", sa.String(length=80), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("minor_digits", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["posting_id"],
            ["ledger_postings.id"],
            name=op.f("fk_ledger_entries_posting_id_ledger_postings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_account_currency", ["account", "currency"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_posting_id"), ["posting_id"], unique=False
        )

    with op.batch_alter_table("billing_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("margin_ppm", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("payment_terms_days", sa.Integer(), server_default="14", nullable=False)
        )
        batch_op.create_check_constraint("margin", "margin_ppm BETWEEN 0 AND 1000000")
        batch_op.create_check_constraint("terms", "payment_terms_days BETWEEN 0 AND 366")

    with op.batch_alter_table("statements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("paid_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("statements", schema=None) as batch_op:
        batch_op.drop_column("paid_at")
        batch_op.drop_column("paid_minor")
        batch_op.drop_column("due_at")

    with op.batch_alter_table("billing_settings", schema=None) as batch_op:
        batch_op.drop_constraint("terms", type_="check")
        batch_op.drop_constraint("margin", type_="check")
        batch_op.drop_column("payment_terms_days")
        batch_op.drop_column("margin_ppm")

    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_posting_id"))
        batch_op.drop_index("ix_ledger_entries_account_currency")

    op.drop_table("ledger_entries")
    op.drop_table("ledger_postings")
