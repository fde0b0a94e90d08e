"""void undelivered: an award that delivered nothing is failed and its price undone

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 16:00:00

A charge of kind ``void`` is the negative of an award's price line, written once per payer when
the award's block ended with nothing delivered (broker/charging.py ``void_price``); like a price
it comes from no usage report. An award's status may be ``failed``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_charges_source"), type_="check")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.create_check_constraint(
            "source", "(kind IN ('price', 'void')) = (usage_report_id IS NULL)"
        )
        batch_op.create_index(
            "uq_charges_award_void",
            ["award_id", "user_id"],
            unique=True,
            sqlite_where=sa.text("kind = 'void'"),
            postgresql_where=sa.text("kind = 'void'"),
        )
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_awards_status"), type_="check")
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.create_check_constraint(
            "status", "status IN ('active', 'delivered', 'failed', 'cancelled')"
        )


def downgrade() -> None:
    voids = op.get_bind().scalar(sa.text("SELECT count(*) FROM charges WHERE kind = 'void'"))
    if voids:  # money written: never dropped by a schema step
        raise RuntimeError(f"{voids} void charges exist; 0012 cannot be downgraded over them")
    op.execute("UPDATE awards SET status = 'active' WHERE status = 'failed'")
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_awards_status"), type_="check")
    with op.batch_alter_table("awards", schema=None) as batch_op:
        batch_op.create_check_constraint("status", "status IN ('active', 'delivered', 'cancelled')")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_charges_award_void",
            sqlite_where=sa.text("kind = 'void'"),
            postgresql_where=sa.text("kind = 'void'"),
        )
        batch_op.drop_constraint(op.f("ck_charges_source"), type_="check")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.create_check_constraint("source", "(kind = 'price') = (usage_report_id IS NULL)")
