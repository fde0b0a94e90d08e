"""credit: users' external credit history, the credit model's versions, credit decisions; a
request's bandwidth grant

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 09:52:04

A user's external credit score and sign-up limit (`credit_profiles`), the credit model's
versions (prior or fitted, with coefficients and AUC), every credit decision (inputs, model
version, probability in millionths, score, limit, reasons, bandwidth grant); a service request
gains its bandwidth grant and the max rate it asked for (docs/billing.md, "Credit" and
"Bandwidth"). New tables and two new columns; nothing existing changes.
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_models",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("coefficients", sa.JSON(), nullable=False),
        sa.Column("outcomes", sa.Integer(), nullable=False),
        sa.Column("defaults", sa.Integer(), nullable=False),
        sa.Column("auc_ppm", sa.Integer(), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('prior', 'fitted')", name=op.f("ck_credit_models_kind")),
        sa.CheckConstraint(
            "auc_ppm IS NULL OR auc_ppm BETWEEN 0 AND 1000000", name=op.f("ck_credit_models_auc")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_models")),
        sa.UniqueConstraint("version", name=op.f("uq_credit_models_version")),
    )
    op.create_table(
        "credit_decisions",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("model_kind", sa.String(length=10), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("p_default_ppm", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("on_time_months", sa.Integer(), nullable=False),
        sa.Column("bandwidth_grant_pct", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "bandwidth_grant_pct IN (0, 25, 50)", name=op.f("ck_credit_decisions_grant")
        ),
        sa.CheckConstraint("limit_minor >= 0", name=op.f("ck_credit_decisions_limit")),
        sa.CheckConstraint(
            "p_default_ppm BETWEEN 0 AND 1000000", name=op.f("ck_credit_decisions_p_default")
        ),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_credit_decisions_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["credit_models.id"],
            name=op.f("fk_credit_decisions_model_id_credit_models"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_decisions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_decisions")),
    )
    with op.batch_alter_table("credit_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_credit_decisions_user_id_id", ["user_id", "id"], unique=False)

    op.create_table(
        "credit_profiles",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("external_score", sa.Integer(), nullable=True),
        sa.Column("prior_limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("set_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "external_score IS NULL OR external_score BETWEEN 300 AND 850",
            name=op.f("ck_credit_profiles_score"),
        ),
        sa.CheckConstraint("prior_limit_minor >= 0", name=op.f("ck_credit_profiles_prior_limit")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_profiles_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_credit_profiles")),
    )
    with op.batch_alter_table("service_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bandwidth_grant_pct", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("base_max_rate_bps", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("service_requests", schema=None) as batch_op:
        batch_op.drop_column("base_max_rate_bps")
        batch_op.drop_column("bandwidth_grant_pct")

    op.drop_table("credit_profiles")
    with op.batch_alter_table("credit_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_decisions_user_id_id")

    op.drop_table("credit_decisions")
    op.drop_table("credit_models")
