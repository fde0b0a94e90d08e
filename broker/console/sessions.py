"""Console sessions: sign-in with an API key, the session cookie, its CSRF token, sign-out.

The cookie holds a random token; the database keeps its SHA-256, the API key's row id and a
CSRF token (`broker.models.ConsoleSession`). Each page resolves the caller afresh from the key's
row, as `broker.actors.authenticate` does for the API: a revoked key ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from broker.actors import Actor, actor_for, authenticate
from broker.clock import resolve_now
from broker.console import attempts
from broker.errors import CsrfRefused, NotAuthenticated, NotFound
from broker.models import ApiKey, ConsoleSession

COOKIE = "pktx_console"
SIGNIN_COOKIE = "pktx_console_signin"  # the sign-in form's CSRF token (double submit)
LIFETIME = timedelta(hours=12)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Signed:
    """A signed-in browser: who it acts as, and the CSRF token its forms carry."""

    actor: Actor
    csrf_token: str
    session_id: int
    last_seen_at: datetime | None = None
    name: str = ""  # what the page header calls the principal ("alice", "far-b", a number)


def start(
    session: Session,
    api_token: str,
    *,
    address: str = "",
    user_agent: str = "",
    now: datetime | None = None,
) -> tuple[str, Signed]:
    """Check ``api_token`` as the API does and open a session for it; returns the cookie's
    token (shown to the browser only) and the session. `NotAuthenticated` for a bad key,
    `TooManyAttempts` when ``address`` or the key's prefix used up its refused tries (checked
    first, so a locked-out guess learns nothing about the key)."""
    now = resolve_now(now)
    attempts.check(session, address, api_token, now)
    try:
        actor = authenticate(session, api_token)
    except NotAuthenticated:
        attempts.record_failure(session, address, api_token, now)
        raise
    prefix = api_token.split("_", 2)[1]
    key_id = session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix))
    assert key_id is not None  # authenticate found it
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_sha256=_digest(token),
        api_key_id=key_id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + LIFETIME,
        created_at=now,
        last_seen_at=now,
        address=address[:64] or None,
        user_agent=user_agent[:200] or None,
    )
    session.add(row)
    session.flush()
    return token, Signed(actor, row.csrf_token, row.id, now, display_name(session, actor))


def resume(session: Session, token: str | None, *, now: datetime | None = None) -> Signed | None:
    """The session of a cookie's token, or None (no cookie, unknown, expired, key revoked)."""
    if not token:
        return None
    now = resolve_now(now)
    found = session.execute(
        select(ConsoleSession, ApiKey)
        .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
        .where(ConsoleSession.token_sha256 == _digest(token))
    ).first()
    if found is None:
        return None
    row, key = found
    if row.expires_at <= now or key.revoked_at is not None:
        return None
    kind, ident = key.principal
    actor = actor_for(session, kind, ident)
    return Signed(actor, row.csrf_token, row.id, row.last_seen_at, display_name(session, actor))


SEEN_EVERY = timedelta(minutes=1)


def seen_due(signed: Signed, *, now: datetime | None = None) -> bool:
    """Whether the session's last-seen time is older than `SEEN_EVERY` (a page view is a read
    otherwise, not a write)."""
    last = signed.last_seen_at
    return last is None or resolve_now(now) - last >= SEEN_EVERY


def seen(session: Session, signed: Signed, *, now: datetime | None = None) -> None:
    """Mark the session seen now."""
    session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == signed.session_id)
        .values(last_seen_at=resolve_now(now))
    )


def _principal_keys(actor: Actor):
    """The ids of the keys of ``actor``'s principal (any of them may have opened a session)."""
    return select(ApiKey.id).where(getattr(ApiKey, f"{actor.kind}_id") == actor.id)


@dataclass(frozen=True)
class SessionView:
    """One live console session of a principal, as its sessions page shows it."""

    id: int
    key_prefix: str
    created_at: datetime
    last_seen_at: datetime | None
    user_agent: str | None
    address: str | None
    expires_at: datetime
    current: bool


def list_sessions(
    session: Session, signed: Signed, *, now: datetime | None = None
) -> list[SessionView]:
    """The principal's live sessions (not expired, key not revoked), newest first."""
    now = resolve_now(now)
    rows = session.execute(
        select(ConsoleSession, ApiKey.prefix)
        .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
        .where(
            ConsoleSession.api_key_id.in_(_principal_keys(signed.actor)),
            ConsoleSession.expires_at > now,
            ApiKey.revoked_at.is_(None),
        )
        .order_by(ConsoleSession.created_at.desc(), ConsoleSession.id.desc())
    ).all()
    return [
        SessionView(
            row.id,
            prefix,
            row.created_at,
            row.last_seen_at,
            row.user_agent,
            row.address,
            row.expires_at,
            row.id == signed.session_id,
        )
        for row, prefix in rows
    ]


def end_session(session: Session, signed: Signed, session_id: int) -> None:
    """End one of the principal's sessions; `NotFound` for any other id (another principal's
    sessions are not there to see, as in the API)."""
    done = session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.id == session_id,
            ConsoleSession.api_key_id.in_(_principal_keys(signed.actor)),
        )
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        raise NotFound("console session", session_id)


def end_others(session: Session, signed: Signed) -> int:
    """End every session of the principal but this one; how many were ended."""
    done = session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.api_key_id.in_(_principal_keys(signed.actor)),
            ConsoleSession.id != signed.session_id,
        )
    )
    return done.rowcount  # type: ignore[attr-defined]


def end(session: Session, token: str | None) -> None:
    """Sign out: the session of ``token`` is deleted (nothing to do without one)."""
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == _digest(token)))


def check_csrf(expected: str | None, sent: object) -> None:
    """`CsrfRefused` unless ``sent`` is the expected token (compared in constant time)."""
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise CsrfRefused(
            "this form's security token is missing or stale; reload the page and send it again"
        )


def display_name(session: Session, actor: Actor) -> str:
    """The principal's own name (a user's, a provider's, a device's, a phone's number), as the
    page header shows it; its kind and id when it has none."""
    from broker.models import Admin, Device, Network, PhoneNumber, Provider, User

    model = {
        "user": User,
        "provider": Provider,
        "network": Network,
        "device": Device,
        "phone_number": PhoneNumber,
        "admin": Admin,
    }.get(actor.kind)
    row = session.get(model, actor.id) if model is not None else None
    name = getattr(row, "e164" if actor.kind == "phone_number" else "name", None)
    return str(name) if name else f"{actor.kind.replace('_', ' ')} {actor.id}"
