"""What is traded: service requests and their members, negotiations, auctions, group pledges."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.models.base import Base, Currency, HasCreated, HasId, Minor


class ServiceRequest(HasId, HasCreated, Base):
    """A device's request to its home provider for a chain of services.

    Either a volume (``volume_bytes``) or a block of time (``starts_at``..``ends_at``, with an
    optional ``data_cap_bytes``); rates bound the transfer. ``max_price_minor`` is the user's
    ceiling, if any. Status: ``pledging`` (a group is collecting pledges), ``served`` (the home
    provider took it), ``brokering`` (open to other networks' providers), ``awarded``,
    ``failed``, ``cancelled``.
    """

    __tablename__ = "service_requests"
    __table_args__ = (
        CheckConstraint(
            "(volume_bytes IS NOT NULL) OR (starts_at IS NOT NULL AND ends_at IS NOT NULL)",
            name="volume_or_block",
        ),
        CheckConstraint(
            "min_rate_bps IS NULL OR max_rate_bps IS NULL OR min_rate_bps <= max_rate_bps",
            name="rates",
        ),
        CheckConstraint(
            "status IN ('pledging', 'served', 'brokering', 'awarded', 'failed', 'cancelled')",
            name="status",
        ),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True)
    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    services: Mapped[str] = mapped_column(String(200))
    volume_bytes: Mapped[int | None] = mapped_column(BigInteger)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    min_rate_bps: Mapped[int | None] = mapped_column(BigInteger)
    max_rate_bps: Mapped[int | None] = mapped_column(BigInteger)
    data_cap_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_price_minor: Mapped[int | None] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(String(300), default="")
    # More bandwidth from history (docs/billing.md, "Bandwidth"): the percentage the user's
    # credit decision added to the max rate it asked for (``base_max_rate_bps``; null: none).
    bandwidth_grant_pct: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    base_max_rate_bps: Mapped[int | None] = mapped_column(BigInteger)
    # Where the stream comes from and goes to (broker/endpoints.py): handed to the delivering
    # provider's daemon in the job's spec only.
    source: Mapped[str | None] = mapped_column(String(1000))
    sink: Mapped[str | None] = mapped_column(String(1000))
    # Secret service parameters the requester seals to the winner after the award
    # (``SERVICE.PARAM,...``; broker/sealing.py): the job waits for them.
    sealed_params: Mapped[str | None] = mapped_column(String(200))

    members: Mapped[list[RequestMember]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="RequestMember.id"
    )

    @property
    def service_chain(self) -> tuple[str, ...]:
        return tuple(self.services.split(","))

    @property
    def is_block(self) -> bool:
        return self.starts_at is not None


class RequestMember(HasId, Base):
    """One recipient sharing a request's service: a user, a device, a phone number, an address.

    A phone member keeps its E.164 text even when the number is not registered here; when it
    is, ``phone_number_id`` links it.
    """

    __tablename__ = "request_members"
    __table_args__ = (
        CheckConstraint("kind IN ('user', 'device', 'phone', 'address')", name="kind"),
        CheckConstraint(
            "(kind = 'user' AND user_id IS NOT NULL) OR (kind = 'device' AND device_id IS NOT "
            "NULL) OR (kind = 'phone' AND e164 IS NOT NULL) OR (kind = 'address' AND address "
            "IS NOT NULL)",
            name="target",
        ),
    )

    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True)
    phone_number_id: Mapped[int | None] = mapped_column(ForeignKey("phone_numbers.id"))
    e164: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(300))

    request: Mapped[ServiceRequest] = relationship(back_populates="members")

    def describe(self) -> dict:
        value = {
            "user": self.user_id,
            "device": self.device_id,
            "phone": self.e164,
            "address": self.address,
        }[self.kind]
        return {"kind": self.kind, "value": value}


class Negotiation(HasId, HasCreated, Base):
    """Alternating offers over one request between its user (or an agent) and one provider.

    ``buyer_mode``: ``user`` (a person moves through the API) or ``agent`` (moves within
    ``max_price_minor``, ``min_reputation_ppm`` and the deadline). ``seller_mode``: ``policy``
    or ``manual``, copied from the provider's price policy at the start. The negotiation ends
    when one side accepts the other's standing offer (``agreed``), either side rejects, the
    deadline or round limit passes (``expired``), or a group cannot pay (``failed``).
    """

    __tablename__ = "negotiations"
    __table_args__ = (
        CheckConstraint("buyer_mode IN ('user', 'agent')", name="buyer_mode"),
        CheckConstraint("seller_mode IN ('policy', 'manual')", name="seller_mode"),
        CheckConstraint(
            "status IN ('open', 'agreed', 'rejected', 'expired', 'failed')", name="status"
        ),
        # What the server's periodic expiry looks for: open negotiations past their deadline.
        Index("ix_negotiations_status_deadline", "status", "deadline"),
        # A request is brokered one way at a time: at most one open negotiation on it.
        Index(
            "uq_negotiations_open_request",
            "request_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    buyer_mode: Mapped[str] = mapped_column(String(8))
    seller_mode: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(Currency)
    max_price_minor: Mapped[int | None] = mapped_column(Minor)
    opening_price_minor: Mapped[int | None] = mapped_column(Minor)
    min_reputation_ppm: Mapped[int] = mapped_column(Integer, default=0)
    buyer_beta_ppm: Mapped[int] = mapped_column(Integer, default=1_000_000)
    deadline: Mapped[datetime]
    max_rounds: Mapped[int] = mapped_column(Integer, default=20)
    status: Mapped[str] = mapped_column(String(10), default="open")
    agreed_price_minor: Mapped[int | None] = mapped_column(Minor)
    ended_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(300), default="")

    offers: Mapped[list[Offer]] = relationship(
        back_populates="negotiation", cascade="all, delete-orphan", order_by="Offer.round"
    )
    request: Mapped[ServiceRequest] = relationship()


class Offer(HasId, HasCreated, Base):
    """One move: an offer (or counter-offer) at a price, an acceptance, or a rejection."""

    __tablename__ = "offers"
    __table_args__ = (
        UniqueConstraint("negotiation_id", "round"),
        CheckConstraint("side IN ('buyer', 'seller')", name="side"),
        CheckConstraint("action IN ('offer', 'accept', 'reject', 'expire')", name="action"),
        CheckConstraint("actor IN ('user', 'agent', 'policy', 'provider', 'system')", name="actor"),
    )

    negotiation_id: Mapped[int] = mapped_column(ForeignKey("negotiations.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    side: Mapped[str] = mapped_column(String(6))
    action: Mapped[str] = mapped_column(String(6))
    actor: Mapped[str] = mapped_column(String(8))
    price_minor: Mapped[int | None] = mapped_column(Minor)

    negotiation: Mapped[Negotiation] = relationship(back_populates="offers")


class Auction(HasId, HasCreated, Base):
    """A sealed-bid reverse auction of ``quantity`` identical blocks of a request.

    ``reserve_price_minor`` is the most the buyer pays per block; ``reputation_weight_ppm`` is
    ``w`` of the scoring rule in millionths (docs/broker.md, "Auctions").
    """

    __tablename__ = "auctions"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity"),
        CheckConstraint("status IN ('open', 'closed', 'failed', 'cancelled')", name="status"),
        # At most one open auction on a request (an open negotiation excludes one too: checked
        # under the request's row lock, see broker.brokering).
        Index(
            "uq_auctions_open_request",
            "request_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    auctioneer_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    reserve_price_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    reputation_weight_ppm: Mapped[int] = mapped_column(Integer, default=1_000_000)
    opens_at: Mapped[datetime]
    closes_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(10), default="open")
    closed_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(300), default="")

    request: Mapped[ServiceRequest] = relationship()
    bids: Mapped[list[Bid]] = relationship(back_populates="auction", order_by="Bid.id")


class Bid(HasId, HasCreated, Base):
    """One provider's sealed ask for one block; a resubmission before the close replaces it.

    The result columns are filled at the close, with the reputation the bid was scored by.
    """

    __tablename__ = "bids"
    __table_args__ = (
        UniqueConstraint("auction_id", "provider_id"),
        CheckConstraint("price_minor >= 0", name="price"),
    )

    # The unique (auction_id, provider_id) index serves lookups by auction too.
    auction_id: Mapped[int] = mapped_column(ForeignKey("auctions.id"))
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    price_minor: Mapped[int] = mapped_column(Minor)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime]
    rank: Mapped[int | None] = mapped_column(Integer)
    won: Mapped[bool | None] = mapped_column(Boolean)
    payment_minor: Mapped[int | None] = mapped_column(Minor)
    reputation_ppm: Mapped[int | None] = mapped_column(Integer)
    rating_count: Mapped[int | None] = mapped_column(Integer)
    # Set at the close when the bid ranked among the winners but its provider could no longer
    # carry the share (capacity booked meanwhile, a service dropped): why it was passed over.
    passed_over: Mapped[str | None] = mapped_column(String(300))
    share: Mapped[int | None] = mapped_column(Integer)

    auction: Mapped[Auction] = relationship(back_populates="bids")


class Group(HasId, HasCreated, Base):
    """A group negotiating one request together: payers pledge, the rest are sponsored."""

    __tablename__ = "groups"
    __table_args__ = (
        CheckConstraint("status IN ('pledging', 'closed', 'funded', 'failed')", name="status"),
    )

    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), unique=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    currency: Mapped[str] = mapped_column(Currency)
    split_rule: Mapped[str] = mapped_column(String(20), default="equal_capped")
    status: Mapped[str] = mapped_column(String(10), default="pledging")
    reason: Mapped[str] = mapped_column(String(300), default="")
    closed_at: Mapped[datetime | None]

    pledges: Mapped[list[Pledge]] = relationship(back_populates="group", order_by="Pledge.id")
    request: Mapped[ServiceRequest] = relationship()


class Pledge(HasId, HasCreated, Base):
    """A payer's promise to pay up to ``max_minor`` of the group's price; re-pledging replaces."""

    __tablename__ = "pledges"
    __table_args__ = (
        UniqueConstraint("group_id", "user_id"),
        CheckConstraint("max_minor >= 0", name="max"),
    )

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    max_minor: Mapped[int] = mapped_column(Minor)
    updated_at: Mapped[datetime]

    group: Mapped[Group] = relationship(back_populates="pledges")
