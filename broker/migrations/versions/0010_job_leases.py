"""job leases: claims with fencing tokens, every transition recorded, the measured delivery

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:30:00

Delivery jobs are claimed under a lease by a named daemon with a fencing token (the claim
count); ``picked`` becomes ``claimed``. Each transition goes to ``job_events``; a finished
job's measured delivery, judged against its award, to ``job_measurements`` (docs/daemon.md).
"""

# ruff: noqa: E501
# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_delivery_jobs_status"), type_="check")
        batch_op.add_column(sa.Column("token", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("daemon", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute("UPDATE delivery_jobs SET status = 'claimed' WHERE status = 'picked'")
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.create_check_constraint(
            "status", "status IN ('queued', 'claimed', 'running', 'done', 'failed')"
        )
        batch_op.create_check_constraint("token", "token >= 0")

    op.create_table(
        "job_events",
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("event", sa.String(length=10), nullable=False),
        sa.Column("from_status", sa.String(length=10), nullable=True),
        sa.Column("to_status", sa.String(length=10), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("daemon", sa.String(length=100), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=False),
        sa.Column("id", _ID, nullable=False),
        sa.CheckConstraint(
            "event IN ('claim', 'start', 'complete', 'fail', 'handback', 'lapse', 'status', 'expire')",
            name=op.f("ck_job_events_event"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["delivery_jobs.id"], name=op.f("fk_job_events_job_id_delivery_jobs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.create_index("ix_job_events_job_id_id", ["job_id", "id"], unique=False)

    op.create_table(
        "job_measurements",
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("provider_id", _ID, nullable=False),
        sa.Column("outcome", sa.String(length=6), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("packets", sa.BigInteger(), nullable=False),
        sa.Column("windows", sa.BigInteger(), nullable=False),
        sa.Column("windows_met", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=False),
        sa.Column("honoured", sa.Boolean(), nullable=False),
        sa.Column("score_ppm", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('done', 'failed')", name=op.f("ck_job_measurements_outcome")
        ),
        sa.CheckConstraint(
            "score_ppm BETWEEN 0 AND 1000000", name=op.f("ck_job_measurements_score")
        ),
        sa.CheckConstraint(
            "windows_met >= 0 AND windows_met <= windows", name=op.f("ck_job_measurements_windows")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["delivery_jobs.id"], name=op.f("fk_job_measurements_job_id_delivery_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_job_measurements_provider_id_providers"),
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_measurements")),
    )
    with op.batch_alter_table("job_measurements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_measurements_provider_id"), ["provider_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("job_measurements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_measurements_provider_id"))
    op.drop_table("job_measurements")
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_index("ix_job_events_job_id_id")
    op.drop_table("job_events")
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_delivery_jobs_token"), type_="check")
        batch_op.drop_constraint(op.f("ck_delivery_jobs_status"), type_="check")
    op.execute("UPDATE delivery_jobs SET status = 'picked' WHERE status = 'claimed'")
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("daemon")
        batch_op.drop_column("token")
        batch_op.create_check_constraint(
            "status", "status IN ('queued', 'picked', 'running', 'done', 'failed')"
        )
