"""tariffs, usage reports, charges: the money side's first tables

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 06:44:10.319591

A provider's tariff versions (each `Tariff.to_json()`), the usage reports of delivery jobs
((job, sequence) unique: taken in exactly once) and the charge lines to payers that award
prices and usage reports produce (docs/billing.md). New tables only; nothing existing changes.
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tariffs",
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("services", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_tariffs_version")),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_tariffs_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariffs")),
        sa.UniqueConstraint(
            "provider_id",
            "services",
            "active_from",
            name=op.f("uq_tariffs_provider_id_services_active_from"),
        ),
        sa.UniqueConstraint(
            "provider_id",
            "services",
            "version",
            name=op.f("uq_tariffs_provider_id_services_version"),
        ),
    )
    op.create_table(
        "usage_reports",
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("award_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("usage_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("packets_in", sa.BigInteger(), nullable=False),
        sa.Column("packets_out", sa.BigInteger(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("windows_met", sa.BigInteger(), nullable=False),
        sa.Column("windows_missed", sa.BigInteger(), nullable=False),
        sa.Column("service_counters", sa.JSON(), nullable=False),
        sa.Column("tariff_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("charged_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("bytes_in >= 0", name=op.f("ck_usage_reports_bytes_in")),
        sa.CheckConstraint("bytes_out >= 0", name=op.f("ck_usage_reports_bytes_out")),
        sa.CheckConstraint("packets_in >= 0", name=op.f("ck_usage_reports_packets_in")),
        sa.CheckConstraint("packets_out >= 0", name=op.f("ck_usage_reports_packets_out")),
        sa.CheckConstraint("seconds >= 0", name=op.f("ck_usage_reports_seconds")),
        sa.CheckConstraint("sequence >= 1", name=op.f("ck_usage_reports_sequence")),
        sa.CheckConstraint("windows_met >= 0", name=op.f("ck_usage_reports_windows_met")),
        sa.CheckConstraint("windows_missed >= 0", name=op.f("ck_usage_reports_windows_missed")),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_usage_reports_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["delivery_jobs.id"], name=op.f("fk_usage_reports_job_id_delivery_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["tariff_id"], ["tariffs.id"], name=op.f("fk_usage_reports_tariff_id_tariffs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_reports")),
        sa.UniqueConstraint("job_id", "sequence", name=op.f("uq_usage_reports_job_id_sequence")),
    )
    with op.batch_alter_table("usage_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_reports_award_id"), ["award_id"], unique=False)

    op.create_table(
        "charges",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("award_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "usage_report_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("minor_digits", sa.Integer(), nullable=False),
        sa.Column("tariff_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("tariff_version", sa.Integer(), nullable=True),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "(kind = 'price') = (usage_report_id IS NULL)", name=op.f("ck_charges_source")
        ),
        sa.CheckConstraint("minor_digits BETWEEN 0 AND 18", name=op.f("ck_charges_digits")),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_charges_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_charges_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["delivery_jobs.id"], name=op.f("fk_charges_job_id_delivery_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_charges_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(
            ["tariff_id"], ["tariffs.id"], name=op.f("fk_charges_tariff_id_tariffs")
        ),
        sa.ForeignKeyConstraint(
            ["usage_report_id"],
            ["usage_reports.id"],
            name=op.f("fk_charges_usage_report_id_usage_reports"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_charges_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charges")),
    )
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_charges_award_id"), ["award_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_charges_home_provider_id"), ["home_provider_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_charges_usage_report_id"), ["usage_report_id"], unique=False
        )
        batch_op.create_index("ix_charges_user_id_rated_at", ["user_id", "rated_at"], unique=False)
        batch_op.create_index(
            "uq_charges_award_price",
            ["award_id", "user_id"],
            unique=True,
            sqlite_where=sa.text("kind = 'price'"),
            postgresql_where=sa.text("kind = 'price'"),
        )


def downgrade() -> None:
    # dropping a table drops its indexes with it
    op.drop_table("charges")
    op.drop_table("usage_reports")
    op.drop_table("tariffs")
