"""Who is calling: API keys (issued, hashed, checked) and the `Actor` they resolve to.

Every domain function that reads or changes something takes the calling `Actor` and checks
that the thing is the actor's own; the HTTP API and the command line only authenticate.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from broker.clock import utcnow
from broker.errors import InvalidInput, NotAuthenticated, NotFound, NotYours
from broker.models import (
    PRINCIPAL_COLUMNS,
    Admin,
    ApiKey,
    Device,
    Network,
    PhoneNumber,
    Provider,
    User,
)

KINDS = tuple(c.removesuffix("_id") for c in PRINCIPAL_COLUMNS)
_MODELS = {
    "admin": Admin,
    "network": Network,
    "provider": Provider,
    "user": User,
    "device": Device,
    "phone_number": PhoneNumber,
}


@dataclass(frozen=True)
class Actor:
    """A resolved principal. Devices and phone numbers act for their user; a network acts for
    every provider in it."""

    kind: str
    id: int
    user_id: int | None = None
    device_id: int | None = None
    network_id: int | None = None
    provider_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def scope(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    def speaks_for_provider(self, provider_id: int) -> bool:
        return provider_id in self.provider_ids

    def speaks_for_user(self, user_id: int) -> bool:
        return self.user_id is not None and self.user_id == user_id


def require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise NotYours(f"only an admin may {what}; {actor} is not one")


def require_provider(actor: Actor, provider_id: int, what: str) -> None:
    if not actor.speaks_for_provider(provider_id):
        raise NotYours(
            f"{actor} may not {what} for provider {provider_id}", where=f"provider {provider_id}"
        )


def require_user(actor: Actor, user_id: int, what: str) -> None:
    if not actor.speaks_for_user(user_id):
        raise NotYours(f"{actor} may not {what} for user {user_id}", where=f"user {user_id}")


def actor_for(session: Session, kind: str, ident: int) -> Actor:
    """The actor of principal ``kind`` ``ident`` (what a key of it authenticates as)."""
    if kind not in _MODELS:
        raise InvalidInput(
            f"unknown principal kind {kind!r}; one of {', '.join(KINDS)}", field="kind"
        )
    row = session.get(_MODELS[kind], ident)
    if row is None:
        raise NotFound(kind.replace("_", " "), ident)
    if kind == "admin":
        return Actor("admin", ident)
    if kind == "network":
        ids = frozenset(session.scalars(select(Provider.id).where(Provider.network_id == ident)))
        return Actor("network", ident, network_id=ident, provider_ids=ids)
    if kind == "provider":
        assert isinstance(row, Provider)
        return Actor("provider", ident, network_id=row.network_id, provider_ids=frozenset({ident}))
    if kind == "user":
        return Actor("user", ident, user_id=ident)
    if kind == "device":
        assert isinstance(row, Device)
        return Actor("device", ident, user_id=row.user_id, device_id=ident)
    assert isinstance(row, PhoneNumber)
    return Actor("phone_number", ident, user_id=row.user_id, device_id=row.device_id)


def _manages(actor: Actor, target: Actor) -> bool:
    """Whether ``actor`` may issue and revoke the keys of ``target``."""
    return (
        actor.is_admin
        or (actor.kind == "network" and target.network_id == actor.network_id)
        or (actor.kind == "provider" and target.kind == "provider" and target.id == actor.id)
        or (
            actor.kind == "user"
            and target.user_id == actor.user_id
            and target.kind in ("user", "device", "phone_number")
        )
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_key(
    session: Session, actor: Actor, kind: str, ident: int, label: str = ""
) -> tuple[ApiKey, str]:
    """A new key for principal ``kind`` ``ident``; returns the row and the token (shown once).

    An admin issues any key; a network for itself and its providers; a provider for itself; a
    user for itself, its devices and its phone numbers.
    """
    if not _manages(actor, actor_for(session, kind, ident)):
        raise NotYours(f"{actor} may not issue keys for {kind} {ident}", where=f"{kind} {ident}")
    prefix = secrets.token_hex(6)
    token = f"pktx_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        prefix=prefix, secret_sha256=_digest(token), label=_label(label), **{f"{kind}_id": ident}
    )
    session.add(key)
    session.flush()
    return key, token


def _label(label: object) -> str:
    """A key's label, kept whole or refused (never cut short without a word)."""
    if not isinstance(label, str) or len(label) > 100:
        raise InvalidInput("a key's label is text of at most 100 characters", field="label")
    return label


def revoke_key(session: Session, actor: Actor, prefix: str) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise NotFound("api key", prefix)
    kind, ident = key.principal
    if not _manages(actor, actor_for(session, kind, ident)):
        raise NotYours(f"{actor} may not revoke key {prefix}", where=f"api key {prefix}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


# The key and whom it speaks for in one statement, built once: every API call runs it first.
_KEY_AND_PRINCIPAL = (
    select(
        ApiKey.secret_sha256,
        ApiKey.revoked_at,
        ApiKey.prefix,
        *(getattr(ApiKey, c) for c in PRINCIPAL_COLUMNS),
        Provider.network_id.label("provider_network"),
        Device.user_id.label("device_user"),
        PhoneNumber.user_id.label("phone_user"),
        PhoneNumber.device_id.label("phone_device"),
    )
    .outerjoin(Provider, Provider.id == ApiKey.provider_id)
    .outerjoin(Device, Device.id == ApiKey.device_id)
    .outerjoin(PhoneNumber, PhoneNumber.id == ApiKey.phone_number_id)
    .where(ApiKey.prefix == bindparam("prefix"))
)


def authenticate(session: Session, token: str | None) -> Actor:
    """The actor an API key token belongs to; `NotAuthenticated` for anything else."""
    if not token:
        raise NotAuthenticated(
            "no API key: send 'Authorization: Bearer pktx_...' "
            "(ask an admin for a key: pktx broker admin key ...)"
        )
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "pktx":
        raise NotAuthenticated("malformed API key: it reads pktx_<prefix>_<secret>")
    key = session.connection().execute(_KEY_AND_PRINCIPAL, {"prefix": parts[1]}).first()
    # Compare even when the prefix is unknown, so that timing says nothing about prefixes.
    stored = key.secret_sha256 if key is not None else _digest("pktx_unknown")
    if not hmac.compare_digest(stored, _digest(token)) or key is None:
        raise NotAuthenticated("unknown API key")
    if key.revoked_at is not None:
        raise NotAuthenticated(f"API key {key.prefix} was revoked at {key.revoked_at.isoformat()}")
    kind, ident = next(
        (c.removesuffix("_id"), getattr(key, c))
        for c in PRINCIPAL_COLUMNS
        if getattr(key, c) is not None
    )
    # The key's foreign key vouches that its principal exists; only a network's providers
    # take another query.
    if kind == "admin":
        return Actor("admin", ident)
    if kind == "user":
        return Actor("user", ident, user_id=ident)
    if kind == "provider":
        return Actor(
            "provider", ident, network_id=key.provider_network, provider_ids=frozenset({ident})
        )
    if kind == "device":
        return Actor("device", ident, user_id=key.device_user, device_id=ident)
    if kind == "phone_number":
        return Actor("phone_number", ident, user_id=key.phone_user, device_id=key.phone_device)
    return actor_for(session, kind, ident)
