"""The directory of participants: networks, providers, users, devices, phone numbers, admins."""

from __future__ import annotations

from collections.abc import Iterable

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.actors import Actor, require_admin, require_provider, require_user
from broker.catalog import parse_chain
from broker.currency import check_amount, check_currency
from broker.errors import AlreadyExists, InvalidInput, NotFound, NotYours
from broker.models import (
    Admin,
    Device,
    Network,
    PhoneNumber,
    PricePolicy,
    Provider,
    ProviderService,
    User,
)


def _name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 100:
        raise InvalidInput("give a non-empty name of at most 100 characters", field=field)
    return value.strip()


def _unique(session: Session, model, column, value, what: str) -> None:
    if session.scalar(select(model.id).where(column == value)) is not None:
        raise AlreadyExists(f"{what} {value!r} exists already", where=f"{what} {value}")


def get(session: Session, model, ident: int, kind: str):
    row = session.get(model, ident)
    if row is None:
        raise NotFound(kind, ident)
    return row


def create_admin(session: Session, name: str) -> Admin:
    """Bootstrap only (command line): the first admin has nobody to be authorised by."""
    name = _name(name)
    _unique(session, Admin, Admin.name, name, "admin")
    admin = Admin(name=name)
    session.add(admin)
    session.flush()
    return admin


def create_network(session: Session, actor: Actor, name: str) -> Network:
    require_admin(actor, "create networks")
    name = _name(name)
    _unique(session, Network, Network.name, name, "network")
    network = Network(name=name)
    session.add(network)
    session.flush()
    return network


def create_provider(
    session: Session,
    actor: Actor,
    *,
    network_id: int,
    name: str,
    services: str | Iterable[str],
    capacity_bps: int,
    currency: str,
    per_gb_minor: int,
    per_mbps_hour_minor: int,
    reservation_ppm: int = 800_000,
    concession_beta_ppm: int = 1_000_000,
    mode: str = "policy",
) -> Provider:
    """A provider of ``network_id``; an admin or that network adds it."""
    if not (actor.is_admin or (actor.kind == "network" and actor.network_id == network_id)):
        raise NotYours(
            f"{actor} may not add providers to network {network_id}", where=f"network {network_id}"
        )
    get(session, Network, network_id, "network")
    name = _name(name)
    _unique(session, Provider, Provider.name, name, "provider")
    provider = Provider(
        network_id=network_id,
        name=name,
        capacity_bps=check_amount(capacity_bps, field="capacity_bps"),
    )
    provider.services = [ProviderService(service=s) for s in sorted(set(parse_chain(services)))]
    provider.policy = _policy(
        currency, per_gb_minor, per_mbps_hour_minor, reservation_ppm, concession_beta_ppm, mode
    )
    session.add(provider)
    session.flush()
    return provider


def _policy(
    currency, per_gb_minor, per_mbps_hour_minor, reservation_ppm, concession_beta_ppm, mode
) -> PricePolicy:
    if mode not in ("policy", "manual"):
        raise InvalidInput(f"mode is 'policy' or 'manual', not {mode!r}", field="mode")
    if (
        isinstance(reservation_ppm, bool)
        or not isinstance(reservation_ppm, int)
        or not (0 <= reservation_ppm <= 1_000_000)
    ):
        raise InvalidInput(
            "reservation price in millionths of the list price, 0..1000000", field="reservation_ppm"
        )
    if (
        isinstance(concession_beta_ppm, bool)
        or not isinstance(concession_beta_ppm, int)
        or (concession_beta_ppm <= 0)
    ):
        raise InvalidInput(
            "concession exponent in millionths, positive (1000000 = linear)",
            field="concession_beta_ppm",
        )
    return PricePolicy(
        currency=check_currency(currency),
        per_gb_minor=check_amount(per_gb_minor, field="per_gb_minor"),
        per_mbps_hour_minor=check_amount(per_mbps_hour_minor, field="per_mbps_hour_minor"),
        reservation_ppm=reservation_ppm,
        concession_beta_ppm=concession_beta_ppm,
        mode=mode,
    )


def update_provider(
    session: Session,
    actor: Actor,
    provider_id: int,
    *,
    services: str | Iterable[str] | None = None,
    capacity_bps: int | None = None,
    **policy,
) -> Provider:
    """Change what a provider offers, its capacity or its price policy (the provider itself)."""
    provider = get(session, Provider, provider_id, "provider")
    require_provider(actor, provider_id, "change the offer")
    if services is not None:
        names = sorted(set(parse_chain(services)))
        provider.services = [ProviderService(service=s) for s in names]
    if capacity_bps is not None:
        provider.capacity_bps = check_amount(capacity_bps, field="capacity_bps")
    if policy:
        current = {
            c: getattr(provider.policy, c)
            for c in (
                "currency",
                "per_gb_minor",
                "per_mbps_hour_minor",
                "reservation_ppm",
                "concession_beta_ppm",
                "mode",
            )
        }
        unknown = set(policy) - set(current)
        if unknown:
            raise InvalidInput(
                f"unknown price policy field(s) {', '.join(sorted(unknown))}",
                field=sorted(unknown)[0],
            )
        fresh = _policy(**{**current, **policy})
        for column in current:
            setattr(provider.policy, column, getattr(fresh, column))
    session.flush()
    return provider


def create_user(session: Session, actor: Actor, *, name: str, home_provider_id: int) -> User:
    """A customer of ``home_provider_id``: an admin, that provider or its network adds it."""
    get(session, Provider, home_provider_id, "provider")
    if not actor.is_admin:
        require_provider(actor, home_provider_id, "add customers")
    name = _name(name)
    _unique(session, User, User.name, name, "user")
    user = User(name=name, home_provider_id=home_provider_id)
    session.add(user)
    session.flush()
    return user


def add_device(session: Session, actor: Actor, *, user_id: int, name: str) -> Device:
    get(session, User, user_id, "user")
    if not actor.is_admin:
        require_user(actor, user_id, "add devices")
    name = _name(name)
    if (
        session.scalar(select(Device.id).where(Device.user_id == user_id, Device.name == name))
        is not None
    ):
        raise AlreadyExists(
            f"user {user_id} has a device named {name!r} already", where=f"user {user_id}"
        )
    device = Device(user_id=user_id, name=name)
    session.add(device)
    session.flush()
    return device


def parse_e164(number: str, region: str | None = None, *, field: str = "number") -> str:
    """``'+44 20 7946 0958'`` (or a national number with its region) -> ``'+442079460958'``."""
    if region is not None and (
        not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS
    ):
        raise InvalidInput(
            f"{str(region)[:20]!r} is not an ISO 3166 region code with a "
            f"numbering plan (e.g. 'DE', 'US')",
            field="region",
        )
    try:
        parsed = phonenumbers.parse(number, region)
    except (phonenumbers.NumberParseException, TypeError) as exc:
        raise InvalidInput(
            f"{number!r} is not a phone number ({exc}); write it as "
            f"+<country code><number> or give its region",
            field=field,
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidInput(f"{number!r} is not a valid number in its numbering plan", field=field)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def add_phone_number(
    session: Session,
    actor: Actor,
    *,
    user_id: int,
    number: str,
    region: str | None = None,
    device_id: int | None = None,
) -> PhoneNumber:
    get(session, User, user_id, "user")
    if not actor.is_admin:
        require_user(actor, user_id, "add phone numbers")
    if device_id is not None:
        device = get(session, Device, device_id, "device")
        if device.user_id != user_id:
            raise NotYours(
                f"device {device_id} is not one of user {user_id}'s", where=f"device {device_id}"
            )
    e164 = parse_e164(number, region)
    _unique(session, PhoneNumber, PhoneNumber.e164, e164, "phone number")
    phone = PhoneNumber(e164=e164, user_id=user_id, device_id=device_id)
    session.add(phone)
    session.flush()
    return phone
