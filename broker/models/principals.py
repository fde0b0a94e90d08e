"""Who takes part: networks, providers and their price policies, users, devices, phones, admins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.models.base import Base, Currency, HasCreated, HasId, Minor


class Network(HasId, HasCreated, Base):
    """A communications network; its providers sell services, its users are their customers."""

    __tablename__ = "networks"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    providers: Mapped[list[Provider]] = relationship(
        back_populates="network", order_by="Provider.id"
    )


class Provider(HasId, HasCreated, Base):
    """A service provider of one network: what it offers, how much it can carry, how it prices."""

    __tablename__ = "providers"
    __table_args__ = (CheckConstraint("capacity_bps >= 0", name="capacity"),)

    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    capacity_bps: Mapped[int] = mapped_column(BigInteger)

    network: Mapped[Network] = relationship(back_populates="providers")
    services: Mapped[list[ProviderService]] = relationship(
        cascade="all, delete-orphan", order_by="ProviderService.service"
    )
    policy: Mapped[PricePolicy] = relationship(uselist=False, cascade="all, delete-orphan")

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(s.service for s in self.services)


class ProviderService(Base):
    __tablename__ = "provider_services"

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    service: Mapped[str] = mapped_column(String(40), primary_key=True)


class PricePolicy(Base):
    """How a provider quotes and concedes (see docs/broker.md, "Negotiation").

    List prices are per gigabyte (volume requests) and per Mbit/s-hour (blocks of time). The
    reservation price is ``reservation_ppm`` millionths of the list price: the lowest the policy
    accepts. ``concession_beta_ppm`` is the exponent of the time-dependent concession curve in
    millionths (below 1e6 holds out, "Boulware"; above concedes early, "Conceder"). With
    ``mode = 'manual'`` a person at the provider answers offers through the API instead.
    """

    __tablename__ = "price_policies"
    __table_args__ = (
        CheckConstraint("reservation_ppm BETWEEN 0 AND 1000000", name="reservation"),
        CheckConstraint("concession_beta_ppm > 0", name="beta"),
        CheckConstraint("mode IN ('policy', 'manual')", name="mode"),
        CheckConstraint("per_gb_minor >= 0 AND per_mbps_hour_minor >= 0", name="prices"),
    )

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(Currency)
    per_gb_minor: Mapped[int] = mapped_column(Minor)
    per_mbps_hour_minor: Mapped[int] = mapped_column(Minor)
    reservation_ppm: Mapped[int] = mapped_column(Integer, default=800_000)
    concession_beta_ppm: Mapped[int] = mapped_column(Integer, default=1_000_000)
    mode: Mapped[str] = mapped_column(String(10), default="policy")


class User(HasId, HasCreated, Base):
    """A customer of its home provider, which serves or brokers its requests and bills it."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), index=True)

    home_provider: Mapped[Provider] = relationship()
    devices: Mapped[list[Device]] = relationship(back_populates="user", order_by="Device.id")
    phone_numbers: Mapped[list[PhoneNumber]] = relationship(
        back_populates="user", order_by="PhoneNumber.id"
    )


class Device(HasId, HasCreated, Base):
    """A client communications device of a user; requests originate from one."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))

    user: Mapped[User] = relationship(back_populates="devices")


class PhoneNumber(HasId, HasCreated, Base):
    """A telephone number of a user in E.164 form, optionally tied to one of its devices."""

    __tablename__ = "phone_numbers"

    e164: Mapped[str] = mapped_column(String(16), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True)

    user: Mapped[User] = relationship(back_populates="phone_numbers")


class Admin(HasId, HasCreated, Base):
    """An operator of the broker: bootstraps networks, providers, users and keys."""

    __tablename__ = "admins"

    name: Mapped[str] = mapped_column(String(100), unique=True)


PRINCIPAL_COLUMNS = (
    "admin_id",
    "network_id",
    "provider_id",
    "user_id",
    "device_id",
    "phone_number_id",
)


class ApiKey(HasId, HasCreated, Base):
    """An API key of exactly one principal, stored as the SHA-256 of the secret token.

    The token reads ``pktx_<prefix>_<secret>``; the prefix is stored in clear to find the row,
    the hash is compared in constant time. The token itself is shown once, at issue.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            " + ".join(f"(CASE WHEN {c} IS NULL THEN 0 ELSE 1 END)" for c in PRINCIPAL_COLUMNS)
            + " = 1",
            name="one_principal",
        ),
    )

    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100), default="")
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("admins.id"), index=True)
    network_id: Mapped[int | None] = mapped_column(ForeignKey("networks.id"), index=True)
    provider_id: Mapped[int | None] = mapped_column(ForeignKey("providers.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True)
    phone_number_id: Mapped[int | None] = mapped_column(ForeignKey("phone_numbers.id"), index=True)
    revoked_at: Mapped[datetime | None]

    @property
    def principal(self) -> tuple[str, int]:
        for column in PRINCIPAL_COLUMNS:
            value = getattr(self, column)
            if value is not None:
                return column.removesuffix("_id"), value
        raise AssertionError("api key without a principal")  # the check constraint forbids it


__all__ = [
    "PRINCIPAL_COLUMNS",
    "Admin",
    "ApiKey",
    "Device",
    "Network",
    "PhoneNumber",
    "PricePolicy",
    "Provider",
    "ProviderService",
    "User",
]
