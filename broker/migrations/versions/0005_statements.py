"""statements: billing settings, statements and their lines, credit notes, profiles, device events

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:05:00

A home provider's billing period and statement counter, its users' statements (draft, then
finalized with a number, per-currency totals and a content hash) and their lines (each charge or
credit note on one statement only), credit notes that correct a finalized line on the next
statement, users' segmentation profiles, and the events sent to a user's devices
(docs/billing.md, "Statements"). New tables only; nothing existing changes.
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_settings",
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("period_months", sa.Integer(), nullable=False),
        sa.Column("cutoff_day", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("next_number", sa.BigInteger(), nullable=False),
        sa.Column("closed_through", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "cutoff_day BETWEEN 1 AND 28", name=op.f("ck_billing_settings_cutoff_day")
        ),
        sa.CheckConstraint("next_number >= 1", name=op.f("ck_billing_settings_next_number")),
        sa.CheckConstraint(
            "period_months IN (1, 2, 3, 4, 6, 12)", name=op.f("ck_billing_settings_period_months")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_billing_settings_provider_id_providers"),
        ),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_billing_settings")),
    )
    op.create_table(
        "device_events",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_device_events_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_events")),
    )
    with op.batch_alter_table("device_events", schema=None) as batch_op:
        batch_op.create_index("ix_device_events_user_id_id", ["user_id", "id"], unique=False)

    op.create_table(
        "statement_profiles",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_statement_profiles_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_profiles")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_statement_profiles_user_id_name")),
    )
    with op.batch_alter_table("statement_profiles", schema=None) as batch_op:
        batch_op.create_index(
            "uq_statement_profiles_default",
            ["user_id"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.create_table(
        "statements",
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=True),
        sa.Column("totals", sa.JSON(), nullable=True),
        sa.Column("line_count", sa.Integer(), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status = 'finalized') = (content_sha256 IS NOT NULL)",
            name=op.f("ck_statements_hashed"),
        ),
        sa.CheckConstraint(
            "(status = 'finalized') = (number IS NOT NULL)", name=op.f("ck_statements_numbered")
        ),
        sa.CheckConstraint("status IN ('draft', 'finalized')", name=op.f("ck_statements_status")),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_statements_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_statements_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint(
            "home_provider_id", "number", name=op.f("uq_statements_home_provider_id_number")
        ),
        sa.UniqueConstraint(
            "home_provider_id",
            "user_id",
            "period",
            name=op.f("uq_statements_home_provider_id_user_id_period"),
        ),
    )
    with op.batch_alter_table("statements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_statements_user_id"), ["user_id"], unique=False)

    op.create_table(
        "credit_notes",
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "corrects_charge_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("minor_digits", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_minor < 0", name=op.f("ck_credit_notes_negative")),
        sa.ForeignKeyConstraint(
            ["corrects_charge_id"],
            ["charges.id"],
            name=op.f("fk_credit_notes_corrects_charge_id_charges"),
        ),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_credit_notes_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_notes_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_notes_corrects_charge_id"), ["corrects_charge_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_credit_notes_user_id"), ["user_id"], unique=False)

    op.create_table(
        "statement_lines",
        sa.Column(
            "statement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("charge_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "credit_note_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("minor_digits", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "(charge_id IS NULL) <> (credit_note_id IS NULL)",
            name=op.f("ck_statement_lines_source"),
        ),
        sa.CheckConstraint("minor_digits BETWEEN 0 AND 18", name=op.f("ck_statement_lines_digits")),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_statement_lines_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_statement_lines_credit_note_id_credit_notes"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statements.id"],
            name=op.f("fk_statement_lines_statement_id_statements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statement_lines")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_statement_lines_charge_id")),
        sa.UniqueConstraint("credit_note_id", name=op.f("uq_statement_lines_credit_note_id")),
        sa.UniqueConstraint(
            "statement_id", "position", name=op.f("uq_statement_lines_statement_id_position")
        ),
    )


def downgrade() -> None:
    op.drop_table("statement_lines")
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_notes_user_id"))
        batch_op.drop_index(batch_op.f("ix_credit_notes_corrects_charge_id"))

    op.drop_table("credit_notes")
    with op.batch_alter_table("statements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_statements_user_id"))

    op.drop_table("statements")
    with op.batch_alter_table("statement_profiles", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_statement_profiles_default",
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.drop_table("statement_profiles")
    with op.batch_alter_table("device_events", schema=None) as batch_op:
        batch_op.drop_index("ix_device_events_user_id_id")

    op.drop_table("device_events")
    op.drop_table("billing_settings")
