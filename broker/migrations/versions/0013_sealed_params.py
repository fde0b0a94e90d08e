"""sealed service parameters: providers' sealing keys, boxes sealed to them per award

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 15:45:00

A provider's daemons publish one X25519 public key (``provider_sealing_keys``); a request may
name secret service parameters (``service_requests.sealed_params``) that its requester seals to
the winner after the award (``sealed_params``: ciphertext only). docs/daemon.md, "Sealed service
parameters". Two new tables and a nullable column; nothing existing changes.
"""

# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("service_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed_params", sa.String(length=200), nullable=True))

    op.create_table(
        "provider_sealing_keys",
        sa.Column("provider_id", _ID, nullable=False),
        sa.Column("public_key", sa.String(length=44), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_provider_sealing_keys_provider_id_providers"),
        ),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_provider_sealing_keys")),
    )

    op.create_table(
        "sealed_params",
        sa.Column("award_id", _ID, nullable=False),
        sa.Column("names", sa.String(length=200), nullable=False),
        sa.Column("sealed_to", sa.String(length=44), nullable=True),
        sa.Column("box", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_by_user_id", _ID, nullable=True),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_sealed_params_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["sealed_by_user_id"],
            ["users.id"],
            name=op.f("fk_sealed_params_sealed_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("award_id", name=op.f("pk_sealed_params")),
    )


def downgrade() -> None:
    op.drop_table("sealed_params")
    op.drop_table("provider_sealing_keys")
    with op.batch_alter_table("service_requests", schema=None) as batch_op:
        batch_op.drop_column("sealed_params")
