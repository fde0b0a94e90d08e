"""one award per request share, one open auction or negotiation per request, passed-over bids

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 06:30:00.000000

An auction of k blocks now splits the request into k shares (awards.share of awards.shares);
the unique (request_id, share) index makes a second award of the same share impossible, and the
partial unique indexes on open auctions and negotiations keep a request brokered one way at a
time. A winner that can no longer carry its share at the close is passed over (bids.passed_over).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("awards") as batch:
        batch.add_column(sa.Column("share", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("shares", sa.Integer(), server_default="1", nullable=False))
        batch.create_unique_constraint("uq_awards_request_id_share", ["request_id", "share"])
        batch.create_check_constraint("share", "share >= 0 AND share < shares")
    with op.batch_alter_table("bids") as batch:
        batch.add_column(sa.Column("passed_over", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("share", sa.Integer(), nullable=True))
    open_only = sa.text("status = 'open'")
    op.create_index(
        "uq_auctions_open_request",
        "auctions",
        ["request_id"],
        unique=True,
        sqlite_where=open_only,
        postgresql_where=open_only,
    )
    op.create_index(
        "uq_negotiations_open_request",
        "negotiations",
        ["request_id"],
        unique=True,
        sqlite_where=open_only,
        postgresql_where=open_only,
    )


def downgrade() -> None:
    op.drop_index("uq_negotiations_open_request", table_name="negotiations")
    op.drop_index("uq_auctions_open_request", table_name="auctions")
    with op.batch_alter_table("bids") as batch:
        batch.drop_column("share")
        batch.drop_column("passed_over")
    with op.batch_alter_table("awards") as batch:
        batch.drop_constraint(op.f("ck_awards_share"), type_="check")
        batch.drop_constraint("uq_awards_request_id_share", type_="unique")
        batch.drop_column("shares")
        batch.drop_column("share")
