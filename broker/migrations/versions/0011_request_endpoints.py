"""request endpoints: where a request's stream comes from and goes to

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 12:30:00

A service request names its stream's source and sink (udp://, zmq://, iface: or a capture
file's name in the delivering daemon's files folder; broker/endpoints.py), handed to the
delivering provider's daemon in the job's spec. Two nullable columns; nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("sink", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("service_requests", schema=None) as batch_op:
        batch_op.drop_column("sink")
        batch_op.drop_column("source")
