"""settlements: batches between home and delivering providers, their lines, nettings

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 10:10:00

A home provider's settlement batch per delivering provider and period (numbered per pair,
with audit totals, what is due, the margin and a content hash), the statement lines it settles
(each once), and the nettings that settle both directions between two providers
(docs/billing.md, "Settlement").
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_nettings",
        sa.Column(
            "provider_low_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "provider_high_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("amounts", sa.JSON(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "provider_low_id < provider_high_id", name=op.f("ck_settlement_nettings_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["provider_high_id"],
            ["providers.id"],
            name=op.f("fk_settlement_nettings_provider_high_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_low_id"],
            ["providers.id"],
            name=op.f("fk_settlement_nettings_provider_low_id_providers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_nettings")),
    )
    with op.batch_alter_table("settlement_nettings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_nettings_pair",
            ["provider_low_id", "provider_high_id", "period"],
            unique=False,
        )

    op.create_table(
        "settlement_batches",
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.Column("due", sa.JSON(), nullable=False),
        sa.Column("margin", sa.JSON(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "netting_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('issued', 'acknowledged', 'settled')",
            name=op.f("ck_settlement_batches_status"),
        ),
        sa.CheckConstraint(
            "home_provider_id <> provider_id", name=op.f("ck_settlement_batches_pair")
        ),
        sa.CheckConstraint("number >= 1", name=op.f("ck_settlement_batches_number")),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_settlement_batches_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["netting_id"],
            ["settlement_nettings.id"],
            name=op.f("fk_settlement_batches_netting_id_settlement_nettings"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_settlement_batches_provider_id_providers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_batches")),
        sa.UniqueConstraint(
            "home_provider_id",
            "provider_id",
            "number",
            name=op.f("uq_settlement_batches_home_provider_id_provider_id_number"),
        ),
    )
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_batches_home_provider_id_period",
            ["home_provider_id", "period"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_settlement_batches_netting_id"), ["netting_id"], unique=False
        )
        batch_op.create_index(
            "ix_settlement_batches_provider_id_period", ["provider_id", "period"], unique=False
        )

    op.create_table(
        "settlement_lines",
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "statement_line_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column(
            "statement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_lines_batch_id_settlement_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"],
            ["statements.id"],
            name=op.f("fk_settlement_lines_statement_id_statements"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_line_id"],
            ["statement_lines.id"],
            name=op.f("fk_settlement_lines_statement_line_id_statement_lines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_lines")),
        sa.UniqueConstraint(
            "batch_id", "position", name=op.f("uq_settlement_lines_batch_id_position")
        ),
        sa.UniqueConstraint(
            "statement_line_id", name=op.f("uq_settlement_lines_statement_line_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("settlement_lines")
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_batches_provider_id_period")
        batch_op.drop_index(batch_op.f("ix_settlement_batches_netting_id"))
        batch_op.drop_index("ix_settlement_batches_home_provider_id_period")

    op.drop_table("settlement_batches")
    with op.batch_alter_table("settlement_nettings", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_nettings_pair")

    op.drop_table("settlement_nettings")
