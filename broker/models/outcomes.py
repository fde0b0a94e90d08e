"""What the market decided and what came of it: awards, payers, delivery jobs (with their
transitions and measured delivery), ratings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
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
        CheckConstraint("status IN ('active', 'delivered', 'failed', 'cancelled')", name="status"),
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
        back_populates="award", cascade="all, delete-orphan", order_by="AwardPayer.id"
    )
    job: Mapped[DeliveryJob] = relationship(back_populates="award", uselist=False)


class AwardPayer(HasId, Base):
    """Who owes what of an award's price: the requesting user, or a group's payers' shares.

    The money side turns these into charges; the amounts add up to the award's price.
    """

    __tablename__ = "award_payers"
    __table_args__ = (
        UniqueConstraint("award_id", "user_id"),
        CheckConstraint("share_minor >= 0", name="share"),
    )

    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    share_minor: Mapped[int] = mapped_column(Minor)

    award: Mapped[Award] = relationship(back_populates="payers")


class DeliveryJob(HasId, HasCreated, Base):
    """The job a delivery daemon of the awarded provider claims; ``spec`` is what it needs.

    Status: ``queued`` -> ``claimed`` -> ``running`` -> ``done`` | ``failed``; a job handed
    back, or whose lease lapsed and was claimed again, goes through ``queued`` once more
    (docs/daemon.md). ``token`` is the fencing token: the number of claims so far, so a new
    claim always holds a larger one than every claim before it. ``daemon`` names the daemon
    that holds (or last held) the job and ``lease_expires_at`` when its lease ends unless
    renewed (or, once released, when it ended).
    """

    __tablename__ = "delivery_jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'claimed', 'running', 'done', 'failed')", name="status"
        ),
        CheckConstraint("token >= 0", name="token"),
    )

    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), unique=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    spec: Mapped[dict] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    daemon: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]

    award: Mapped[Award] = relationship(back_populates="job")


class JobEvent(HasId, Base):
    """One transition of a delivery job: who (daemon, under which token) moved it from what to
    what, when and why. Heartbeats renew a lease and are not transitions."""

    __tablename__ = "job_events"
    __table_args__ = (
        CheckConstraint(
            "event IN ('claim', 'start', 'complete', 'fail', 'handback', 'lapse', "
            "'status', 'expire')",
            name="event",
        ),
        Index("ix_job_events_job_id_id", "job_id", "id"),
    )

    job_id: Mapped[int] = mapped_column(ForeignKey("delivery_jobs.id"))
    event: Mapped[str] = mapped_column(String(10))
    from_status: Mapped[str | None] = mapped_column(String(10))
    to_status: Mapped[str] = mapped_column(String(10))
    token: Mapped[int] = mapped_column(BigInteger)
    daemon: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime]
    detail: Mapped[str] = mapped_column(String(300), default="")


class JobMeasurement(HasCreated, Base):
    """A finished job's delivery as its daemon measured it, judged against its award.

    ``windows`` min-rate windows, ``windows_met`` of them at or above the award's min rate;
    ``honoured``: the block's time was kept (started within the grace after its start, ran to
    its end or delivered its volume); ``score_ppm`` the job's evidence for the provider's
    measured reputation (`broker.delivery_record`).
    """

    __tablename__ = "job_measurements"
    __table_args__ = (
        CheckConstraint("outcome IN ('done', 'failed')", name="outcome"),
        CheckConstraint("windows_met >= 0 AND windows_met <= windows", name="windows"),
        CheckConstraint("score_ppm BETWEEN 0 AND 1000000", name="score"),
    )

    job_id: Mapped[int] = mapped_column(ForeignKey("delivery_jobs.id"), primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(6))
    token: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    packets: Mapped[int] = mapped_column(BigInteger)
    windows: Mapped[int] = mapped_column(BigInteger)
    windows_met: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    errors: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str] = mapped_column(String(300), default="")
    honoured: Mapped[bool] = mapped_column(Boolean)
    score_ppm: Mapped[int] = mapped_column(Integer)


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
