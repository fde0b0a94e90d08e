"""indexes for speed: negotiations by status and deadline; drop the redundant bids.auction_id

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:10:00.000000

The server expires overdue negotiations on a timer; (status, deadline) finds them without a
scan. Bids are looked up by auction through the unique (auction_id, provider_id) index, so the
single-column index on auction_id only cost every bid an extra write.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_negotiations_status_deadline", "negotiations", ["status", "deadline"], unique=False
    )
    op.drop_index(op.f("ix_bids_auction_id"), table_name="bids")


def downgrade() -> None:
    op.create_index(op.f("ix_bids_auction_id"), "bids", ["auction_id"], unique=False)
    op.drop_index("ix_negotiations_status_deadline", table_name="negotiations")
