"""console sign-in limits and the sessions page

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 21:40:00

Refused console sign-ins (client address, key prefix, when), counted to refuse further tries
even across a restart of the broker; and, on each console session, when it was last seen, from
which address and user agent, for the page listing a principal's sessions (docs/console.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "console_signin_failures",
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=32), nullable=True),
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_signin_failures")),
    )
    with op.batch_alter_table("console_signin_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_console_signin_failures_address"), ["address"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_console_signin_failures_key_prefix"), ["key_prefix"], unique=False
        )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("user_agent", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("address", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_column("address")
        batch_op.drop_column("user_agent")
        batch_op.drop_column("last_seen_at")
    with op.batch_alter_table("console_signin_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_signin_failures_key_prefix"))
        batch_op.drop_index(batch_op.f("ix_console_signin_failures_address"))
    op.drop_table("console_signin_failures")
