"""payments: cards on file, payments of statements, refunds, the test gateway's book

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 09:52:07

Users' cards as their gateway's tokens (brand, last four digits, expiry; never the number), one
default per user; attempts to pay a statement (one in flight per statement: a partial unique
index), refunds against them, and the built-in test gateway's record of the calls it took by
idempotency key (docs/billing.md, "Payments"). New tables only; nothing existing changes.
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "test_gateway_operations",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("operation", sa.String(length=20), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("decline_code", sa.String(length=40), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_gateway_operations")),
        sa.UniqueConstraint("key", name=op.f("uq_test_gateway_operations_key")),
    )
    op.create_table(
        "payment_methods",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gateway", sa.String(length=40), nullable=False),
        sa.Column("token", sa.String(length=200), nullable=False),
        sa.Column("brand", sa.String(length=20), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("exp_month BETWEEN 1 AND 12", name=op.f("ck_payment_methods_exp_month")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_payment_methods_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_methods")),
    )
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_methods_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            "uq_payment_methods_default",
            ["user_id"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.create_table(
        "payments",
        sa.Column(
            "statement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "method_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("gateway", sa.String(length=40), nullable=False),
        sa.Column("gateway_key", sa.String(length=100), nullable=False),
        sa.Column("gateway_ref", sa.String(length=200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("minor_digits", sa.Integer(), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("decline_code", sa.String(length=40), nullable=True),
        sa.Column("decline_message", sa.String(length=300), nullable=True),
        sa.Column("next_retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'canceled', 'unknown')",
            name=op.f("ck_payments_status"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payments_amount")),
        sa.CheckConstraint(
            "refunded_minor BETWEEN 0 AND amount_minor", name=op.f("ck_payments_refunded")
        ),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_payments_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["method_id"],
            ["payment_methods.id"],
            name=op.f("fk_payments_method_id_payment_methods"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"], ["statements.id"], name=op.f("fk_payments_statement_id_statements")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_payments_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("gateway_key", name=op.f("uq_payments_gateway_key")),
        sa.UniqueConstraint(
            "statement_id", "attempt", name=op.f("uq_payments_statement_id_attempt")
        ),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_next_retry_at"), ["next_retry_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payments_statement_id"), ["statement_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_payments_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            "uq_payments_in_flight",
            ["statement_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'unknown')"),
            postgresql_where=sa.text("status IN ('pending', 'unknown')"),
        )

    op.create_table(
        "refunds",
        sa.Column(
            "payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "statement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("gateway_key", sa.String(length=100), nullable=False),
        sa.Column("gateway_ref", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("decline_code", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'canceled', 'unknown')",
            name=op.f("ck_refunds_status"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_refunds_amount")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"], ["statements.id"], name=op.f("fk_refunds_statement_id_statements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("gateway_key", name=op.f("uq_refunds_gateway_key")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refunds_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_refunds_statement_id"), ["statement_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refunds_statement_id"))
        batch_op.drop_index(batch_op.f("ix_refunds_payment_id"))

    op.drop_table("refunds")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_payments_in_flight",
            sqlite_where=sa.text("status IN ('pending', 'unknown')"),
            postgresql_where=sa.text("status IN ('pending', 'unknown')"),
        )
        batch_op.drop_index(batch_op.f("ix_payments_user_id"))
        batch_op.drop_index(batch_op.f("ix_payments_statement_id"))
        batch_op.drop_index(batch_op.f("ix_payments_next_retry_at"))

    op.drop_table("payments")
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_payment_methods_default",
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )
        batch_op.drop_index(batch_op.f("ix_payment_methods_user_id"))

    op.drop_table("payment_methods")
    op.drop_table("test_gateway_operations")
