"""initial schema: principals, market, awards, ratings, idempotency

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:29:22.000315
"""

# ruff: noqa: E501
# (generated constraint text is kept on one line, as Alembic wrote it)

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admins")),
        sa.UniqueConstraint("name", name=op.f("uq_admins_name")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("operation", sa.String(length=60), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("resource_kind", sa.String(length=40), nullable=False),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("scope", "key", name=op.f("uq_idempotency_keys_scope_key")),
    )
    op.create_table(
        "networks",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_networks")),
        sa.UniqueConstraint("name", name=op.f("uq_networks_name")),
    )
    op.create_table(
        "providers",
        sa.Column(
            "network_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("capacity_bps", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("capacity_bps >= 0", name=op.f("ck_providers_capacity")),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_providers_network_id_networks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("name", name=op.f("uq_providers_name")),
    )
    op.create_index(op.f("ix_providers_network_id"), "providers", ["network_id"], unique=False)
    op.create_table(
        "price_policies",
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("per_gb_minor", sa.BigInteger(), nullable=False),
        sa.Column("per_mbps_hour_minor", sa.BigInteger(), nullable=False),
        sa.Column("reservation_ppm", sa.Integer(), nullable=False),
        sa.Column("concession_beta_ppm", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.CheckConstraint("mode IN ('policy', 'manual')", name=op.f("ck_price_policies_mode")),
        sa.CheckConstraint("concession_beta_ppm > 0", name=op.f("ck_price_policies_beta")),
        sa.CheckConstraint(
            "per_gb_minor >= 0 AND per_mbps_hour_minor >= 0", name=op.f("ck_price_policies_prices")
        ),
        sa.CheckConstraint(
            "reservation_ppm BETWEEN 0 AND 1000000", name=op.f("ck_price_policies_reservation")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_price_policies_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("provider_id", name=op.f("pk_price_policies")),
    )
    op.create_table(
        "provider_services",
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_provider_services_provider_id_providers"),
        ),
        sa.PrimaryKeyConstraint("provider_id", "service", name=op.f("pk_provider_services")),
    )
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["home_provider_id"], ["providers.id"], name=op.f("fk_users_home_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_index(op.f("ix_users_home_provider_id"), "users", ["home_provider_id"], unique=False)
    op.create_table(
        "devices",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_devices_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_devices_user_id_name")),
    )
    op.create_index(op.f("ix_devices_user_id"), "devices", ["user_id"], unique=False)
    op.create_table(
        "phone_numbers",
        sa.Column("e164", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_phone_numbers_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_phone_numbers_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_numbers")),
        sa.UniqueConstraint("e164", name=op.f("uq_phone_numbers_e164")),
    )
    op.create_index(
        op.f("ix_phone_numbers_device_id"), "phone_numbers", ["device_id"], unique=False
    )
    op.create_index(op.f("ix_phone_numbers_user_id"), "phone_numbers", ["user_id"], unique=False)
    op.create_table(
        "service_requests",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("services", sa.String(length=200), nullable=False),
        sa.Column("volume_bytes", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("min_rate_bps", sa.BigInteger(), nullable=True),
        sa.Column("max_rate_bps", sa.BigInteger(), nullable=True),
        sa.Column("data_cap_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pledging', 'served', 'brokering', 'awarded', 'failed', 'cancelled')",
            name=op.f("ck_service_requests_status"),
        ),
        sa.CheckConstraint(
            "(volume_bytes IS NOT NULL) OR (starts_at IS NOT NULL AND ends_at IS NOT NULL)",
            name=op.f("ck_service_requests_volume_or_block"),
        ),
        sa.CheckConstraint(
            "min_rate_bps IS NULL OR max_rate_bps IS NULL OR min_rate_bps <= max_rate_bps",
            name=op.f("ck_service_requests_rates"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_service_requests_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_service_requests_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_service_requests_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_requests")),
    )
    op.create_index(
        op.f("ix_service_requests_device_id"), "service_requests", ["device_id"], unique=False
    )
    op.create_index(
        op.f("ix_service_requests_home_provider_id"),
        "service_requests",
        ["home_provider_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_service_requests_user_id"), "service_requests", ["user_id"], unique=False
    )
    op.create_table(
        "api_keys",
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("admin_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "network_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "phone_number_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(CASE WHEN admin_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN network_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN provider_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN user_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN device_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN phone_number_id IS NULL THEN 0 ELSE 1 END) = 1",
            name=op.f("ck_api_keys_one_principal"),
        ),
        sa.ForeignKeyConstraint(
            ["admin_id"], ["admins.id"], name=op.f("fk_api_keys_admin_id_admins")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_api_keys_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name=op.f("fk_api_keys_network_id_networks")
        ),
        sa.ForeignKeyConstraint(
            ["phone_number_id"],
            ["phone_numbers.id"],
            name=op.f("fk_api_keys_phone_number_id_phone_numbers"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_api_keys_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_admin_id"), "api_keys", ["admin_id"], unique=False)
    op.create_index(op.f("ix_api_keys_device_id"), "api_keys", ["device_id"], unique=False)
    op.create_index(op.f("ix_api_keys_network_id"), "api_keys", ["network_id"], unique=False)
    op.create_index(
        op.f("ix_api_keys_phone_number_id"), "api_keys", ["phone_number_id"], unique=False
    )
    op.create_index(op.f("ix_api_keys_provider_id"), "api_keys", ["provider_id"], unique=False)
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"], unique=False)
    op.create_table(
        "auctions",
        sa.Column(
            "request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "auctioneer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("reserve_price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reputation_weight_ppm", sa.Integer(), nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'closed', 'failed', 'cancelled')", name=op.f("ck_auctions_status")
        ),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_auctions_quantity")),
        sa.ForeignKeyConstraint(
            ["auctioneer_id"], ["providers.id"], name=op.f("fk_auctions_auctioneer_id_providers")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["service_requests.id"],
            name=op.f("fk_auctions_request_id_service_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auctions")),
    )
    op.create_index(op.f("ix_auctions_auctioneer_id"), "auctions", ["auctioneer_id"], unique=False)
    op.create_index(op.f("ix_auctions_request_id"), "auctions", ["request_id"], unique=False)
    op.create_table(
        "groups",
        sa.Column(
            "request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "organizer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("split_rule", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pledging', 'closed', 'funded', 'failed')", name=op.f("ck_groups_status")
        ),
        sa.ForeignKeyConstraint(
            ["organizer_id"], ["users.id"], name=op.f("fk_groups_organizer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["service_requests.id"],
            name=op.f("fk_groups_request_id_service_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("request_id", name=op.f("uq_groups_request_id")),
    )
    op.create_index(op.f("ix_groups_organizer_id"), "groups", ["organizer_id"], unique=False)
    op.create_table(
        "negotiations",
        sa.Column(
            "request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("buyer_mode", sa.String(length=8), nullable=False),
        sa.Column("seller_mode", sa.String(length=8), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("max_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("opening_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("min_reputation_ppm", sa.Integer(), nullable=False),
        sa.Column("buyer_beta_ppm", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_rounds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("agreed_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "buyer_mode IN ('user', 'agent')", name=op.f("ck_negotiations_buyer_mode")
        ),
        sa.CheckConstraint(
            "seller_mode IN ('policy', 'manual')", name=op.f("ck_negotiations_seller_mode")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'agreed', 'rejected', 'expired', 'failed')",
            name=op.f("ck_negotiations_status"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_negotiations_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["service_requests.id"],
            name=op.f("fk_negotiations_request_id_service_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_negotiations")),
    )
    op.create_index(
        op.f("ix_negotiations_provider_id"), "negotiations", ["provider_id"], unique=False
    )
    op.create_index(
        op.f("ix_negotiations_request_id"), "negotiations", ["request_id"], unique=False
    )
    op.create_table(
        "request_members",
        sa.Column(
            "request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "phone_number_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("e164", sa.String(length=16), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "(kind = 'user' AND user_id IS NOT NULL) OR (kind = 'device' AND device_id IS NOT NULL) OR (kind = 'phone' AND e164 IS NOT NULL) OR (kind = 'address' AND address IS NOT NULL)",
            name=op.f("ck_request_members_target"),
        ),
        sa.CheckConstraint(
            "kind IN ('user', 'device', 'phone', 'address')", name=op.f("ck_request_members_kind")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_request_members_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["phone_number_id"],
            ["phone_numbers.id"],
            name=op.f("fk_request_members_phone_number_id_phone_numbers"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["service_requests.id"],
            name=op.f("fk_request_members_request_id_service_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_request_members_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_members")),
    )
    op.create_index(
        op.f("ix_request_members_device_id"), "request_members", ["device_id"], unique=False
    )
    op.create_index(
        op.f("ix_request_members_request_id"), "request_members", ["request_id"], unique=False
    )
    op.create_index(
        op.f("ix_request_members_user_id"), "request_members", ["user_id"], unique=False
    )
    op.create_table(
        "awards",
        sa.Column(
            "request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "home_provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("source", sa.String(length=12), nullable=False),
        sa.Column(
            "negotiation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "auction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("services", sa.String(length=200), nullable=False),
        sa.Column("volume_bytes", sa.BigInteger(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("min_rate_bps", sa.BigInteger(), nullable=True),
        sa.Column("max_rate_bps", sa.BigInteger(), nullable=True),
        sa.Column("data_cap_bytes", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "source IN ('home', 'negotiation', 'auction')", name=op.f("ck_awards_source")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'delivered', 'cancelled')", name=op.f("ck_awards_status")
        ),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_awards_price")),
        sa.ForeignKeyConstraint(
            ["auction_id"], ["auctions.id"], name=op.f("fk_awards_auction_id_auctions")
        ),
        sa.ForeignKeyConstraint(
            ["home_provider_id"],
            ["providers.id"],
            name=op.f("fk_awards_home_provider_id_providers"),
        ),
        sa.ForeignKeyConstraint(
            ["negotiation_id"],
            ["negotiations.id"],
            name=op.f("fk_awards_negotiation_id_negotiations"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_awards_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["service_requests.id"],
            name=op.f("fk_awards_request_id_service_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_awards")),
    )
    op.create_index(op.f("ix_awards_auction_id"), "awards", ["auction_id"], unique=False)
    op.create_index(
        op.f("ix_awards_home_provider_id"), "awards", ["home_provider_id"], unique=False
    )
    op.create_index(op.f("ix_awards_negotiation_id"), "awards", ["negotiation_id"], unique=False)
    op.create_index(op.f("ix_awards_provider_id"), "awards", ["provider_id"], unique=False)
    op.create_index(op.f("ix_awards_request_id"), "awards", ["request_id"], unique=False)
    op.create_table(
        "bids",
        sa.Column(
            "auction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("won", sa.Boolean(), nullable=True),
        sa.Column("payment_minor", sa.BigInteger(), nullable=True),
        sa.Column("reputation_ppm", sa.Integer(), nullable=True),
        sa.Column("rating_count", sa.Integer(), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price_minor >= 0", name=op.f("ck_bids_price")),
        sa.ForeignKeyConstraint(
            ["auction_id"], ["auctions.id"], name=op.f("fk_bids_auction_id_auctions")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_bids_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bids")),
        sa.UniqueConstraint(
            "auction_id", "provider_id", name=op.f("uq_bids_auction_id_provider_id")
        ),
    )
    op.create_index(op.f("ix_bids_auction_id"), "bids", ["auction_id"], unique=False)
    op.create_index(op.f("ix_bids_provider_id"), "bids", ["provider_id"], unique=False)
    op.create_table(
        "offers",
        sa.Column(
            "negotiation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(length=6), nullable=False),
        sa.Column("action", sa.String(length=6), nullable=False),
        sa.Column("actor", sa.String(length=8), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('offer', 'accept', 'reject', 'expire')", name=op.f("ck_offers_action")
        ),
        sa.CheckConstraint(
            "actor IN ('user', 'agent', 'policy', 'provider', 'system')",
            name=op.f("ck_offers_actor"),
        ),
        sa.CheckConstraint("side IN ('buyer', 'seller')", name=op.f("ck_offers_side")),
        sa.ForeignKeyConstraint(
            ["negotiation_id"],
            ["negotiations.id"],
            name=op.f("fk_offers_negotiation_id_negotiations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offers")),
        sa.UniqueConstraint("negotiation_id", "round", name=op.f("uq_offers_negotiation_id_round")),
    )
    op.create_index(op.f("ix_offers_negotiation_id"), "offers", ["negotiation_id"], unique=False)
    op.create_table(
        "pledges",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("max_minor", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("max_minor >= 0", name=op.f("ck_pledges_max")),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_pledges_group_id_groups")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_pledges_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pledges")),
        sa.UniqueConstraint("group_id", "user_id", name=op.f("uq_pledges_group_id_user_id")),
    )
    op.create_index(op.f("ix_pledges_group_id"), "pledges", ["group_id"], unique=False)
    op.create_index(op.f("ix_pledges_user_id"), "pledges", ["user_id"], unique=False)
    op.create_table(
        "award_payers",
        sa.Column("award_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("share_minor", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("share_minor >= 0", name=op.f("ck_award_payers_share")),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_award_payers_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_award_payers_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_award_payers")),
        sa.UniqueConstraint("award_id", "user_id", name=op.f("uq_award_payers_award_id_user_id")),
    )
    op.create_index(op.f("ix_award_payers_award_id"), "award_payers", ["award_id"], unique=False)
    op.create_index(op.f("ix_award_payers_user_id"), "award_payers", ["user_id"], unique=False)
    op.create_table(
        "delivery_jobs",
        sa.Column("award_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'picked', 'running', 'done', 'failed')",
            name=op.f("ck_delivery_jobs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_delivery_jobs_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_delivery_jobs_provider_id_providers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_jobs")),
        sa.UniqueConstraint("award_id", name=op.f("uq_delivery_jobs_award_id")),
    )
    op.create_index(
        op.f("ix_delivery_jobs_provider_id"), "delivery_jobs", ["provider_id"], unique=False
    )
    op.create_table(
        "ratings",
        sa.Column("award_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "provider_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "direction IN ('service', 'payment')", name=op.f("ck_ratings_direction")
        ),
        sa.CheckConstraint("score BETWEEN 0 AND 100", name=op.f("ck_ratings_score")),
        sa.ForeignKeyConstraint(
            ["award_id"], ["awards.id"], name=op.f("fk_ratings_award_id_awards")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_ratings_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_ratings_provider_id_providers")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_ratings_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ratings")),
        sa.UniqueConstraint(
            "award_id", "direction", "user_id", name=op.f("uq_ratings_award_id_direction_user_id")
        ),
    )
    op.create_index(op.f("ix_ratings_award_id"), "ratings", ["award_id"], unique=False)
    op.create_index(op.f("ix_ratings_provider_id"), "ratings", ["provider_id"], unique=False)
    op.create_index(op.f("ix_ratings_user_id"), "ratings", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_ratings_user_id"), table_name="ratings")
    op.drop_index(op.f("ix_ratings_provider_id"), table_name="ratings")
    op.drop_index(op.f("ix_ratings_award_id"), table_name="ratings")
    op.drop_table("ratings")
    op.drop_index(op.f("ix_delivery_jobs_provider_id"), table_name="delivery_jobs")
    op.drop_table("delivery_jobs")
    op.drop_index(op.f("ix_award_payers_user_id"), table_name="award_payers")
    op.drop_index(op.f("ix_award_payers_award_id"), table_name="award_payers")
    op.drop_table("award_payers")
    op.drop_index(op.f("ix_pledges_user_id"), table_name="pledges")
    op.drop_index(op.f("ix_pledges_group_id"), table_name="pledges")
    op.drop_table("pledges")
    op.drop_index(op.f("ix_offers_negotiation_id"), table_name="offers")
    op.drop_table("offers")
    op.drop_index(op.f("ix_bids_provider_id"), table_name="bids")
    op.drop_index(op.f("ix_bids_auction_id"), table_name="bids")
    op.drop_table("bids")
    op.drop_index(op.f("ix_awards_request_id"), table_name="awards")
    op.drop_index(op.f("ix_awards_provider_id"), table_name="awards")
    op.drop_index(op.f("ix_awards_negotiation_id"), table_name="awards")
    op.drop_index(op.f("ix_awards_home_provider_id"), table_name="awards")
    op.drop_index(op.f("ix_awards_auction_id"), table_name="awards")
    op.drop_table("awards")
    op.drop_index(op.f("ix_request_members_user_id"), table_name="request_members")
    op.drop_index(op.f("ix_request_members_request_id"), table_name="request_members")
    op.drop_index(op.f("ix_request_members_device_id"), table_name="request_members")
    op.drop_table("request_members")
    op.drop_index(op.f("ix_negotiations_request_id"), table_name="negotiations")
    op.drop_index(op.f("ix_negotiations_provider_id"), table_name="negotiations")
    op.drop_table("negotiations")
    op.drop_index(op.f("ix_groups_organizer_id"), table_name="groups")
    op.drop_table("groups")
    op.drop_index(op.f("ix_auctions_request_id"), table_name="auctions")
    op.drop_index(op.f("ix_auctions_auctioneer_id"), table_name="auctions")
    op.drop_table("auctions")
    op.drop_index(op.f("ix_api_keys_user_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_provider_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_phone_number_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_network_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_device_id"), table_name="api_keys")
    op.drop_index(op.f("ix_api_keys_admin_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_service_requests_user_id"), table_name="service_requests")
    op.drop_index(op.f("ix_service_requests_home_provider_id"), table_name="service_requests")
    op.drop_index(op.f("ix_service_requests_device_id"), table_name="service_requests")
    op.drop_table("service_requests")
    op.drop_index(op.f("ix_phone_numbers_user_id"), table_name="phone_numbers")
    op.drop_index(op.f("ix_phone_numbers_device_id"), table_name="phone_numbers")
    op.drop_table("phone_numbers")
    op.drop_index(op.f("ix_devices_user_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index(op.f("ix_users_home_provider_id"), table_name="users")
    op.drop_table("users")
    op.drop_table("provider_services")
    op.drop_table("price_policies")
    op.drop_index(op.f("ix_providers_network_id"), table_name="providers")
    op.drop_table("providers")
    op.drop_table("networks")
    op.drop_table("idempotency_keys")
    op.drop_table("admins")
