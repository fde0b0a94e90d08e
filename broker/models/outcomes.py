"""What the market decided and what came of it: awards, payers, delivery jobs, ratings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.models.base import Base, Currency, HasCreated, HasId, Minor
from broker.models.market import ServiceRequest


class Award(HasId, HasCreated, Base):
    """Who delivers what to whom, at what price, under which rate limits.

    The terms are copied from the request (and the auction's block) so that an award reads on
    its own and never changes when the request does. Usage records, charges and settlement
    between ``home_provider_id`` and ``provider_id`` (the money side) refer to ``awards.id``.
    ``source`` says how it was decided: ``home`` (served by the home provider), ``negotiation``
    or ``auction`` (with the id of that negotiation or auction). An auction of ``quantity`` k
    splits the request into k shares: share ``i`` of ``shares`` k carries 1/k of the rates and
    the flows that ``engine.packet.flowhash.share_of_packets`` puts in share i. A request has at
    most one award per share (a unique index keeps it so whatever the code above it does).
    """

    __tablename__ = "awards"
    __table_args__ = (
        CheckConstraint("source IN ('home', 'negotiation', 'auction')", name="source"),
        CheckConstraint("status IN ('active', 'delivered', 'cancelled')", name="status"),
        CheckConstraint("price_minor >= 0", name="price"),
        CheckConstraint("share >= 0 AND share < shares", name="share"),
        UniqueConstraint("request_id", "share"),
    )

    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    source: Mapped[str] = mapped_column(String(12))
    negotiation_id: Mapped[int | None] = mapped_column(ForeignKey("negotiations.id"), index=True)
    auction_id: Mapped[int | None] = mapped_column(ForeignKey("auctions.id"), index=True)
    share: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    shares: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    price_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    services: Mapped[str] = mapped_column(String(200))
    volume_bytes: Mapped[int | None] = mapped_column(BigInteger)
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    min_rate_bps: Mapped[int | None] = mapped_column(BigInteger)
    max_rate_bps: Mapped[int | None] = mapped_column(BigInteger)
    data_cap_bytes: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10), default="active")

    request: Mapped[ServiceRequest] = relationship()
    payers: Mapped[list[AwardPayer]] = relationship(
        back_populates="award", cascade="all, delete-orphan", order_by="AwardPayer.id")
    job: Mapped[DeliveryJob] = relationship(back_populates="award", uselist=False)


class AwardPayer(HasId, Base):
    """Who owes what of an award's price: the requesting user, or a group's payers' shares.

    The money side turns these into charges; the amounts add up to the award's price.
    """

    __tablename__ = "award_payers"
    __table_args__ = (UniqueConstraint("award_id", "user_id"),
                      CheckConstraint("share_minor >= 0", name="share"))

    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    share_minor: Mapped[int] = mapped_column(Minor)

    award: Mapped[Award] = relationship(back_populates="payers")


class DeliveryJob(HasId, HasCreated, Base):
    """The job a delivery daemon of the awarded provider picks up; ``spec`` is what it needs."""

    __tablename__ = "delivery_jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'picked', 'running', 'done', 'failed')",
                        name="status"),
    )

    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), unique=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    spec: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime]

    award: Mapped[Award] = relationship(back_populates="job")


class Rating(HasId, HasCreated, Base):
    """One party's rating of the other on one award; a second rating by the same rater replaces.

    ``direction``: ``service`` (the user rates whether the provider delivered satisfactorily)
    or ``payment`` (the provider rates whether the user paid satisfactorily). ``score`` is 0..100,
    100 meaning fully satisfactory. ``rated_at`` is when the standing score was given; age, and so
    decay, runs from it.
    """

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("award_id", "direction", "user_id"),
        CheckConstraint("direction IN ('service', 'payment')", name="direction"),
        CheckConstraint("score BETWEEN 0 AND 100", name="score"),
    )

    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(String(500), default="")
    rated_at: Mapped[datetime]
