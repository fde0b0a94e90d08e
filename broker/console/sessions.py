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

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from broker.actors import Actor, actor_for, authenticate
from broker.clock import resolve_now
from broker.errors import CsrfRefused
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


def start(session: Session, api_token: str, *, now: datetime | None = None) -> tuple[str, Signed]:
    """Check ``api_token`` as the API does and open a session for it; returns the cookie's
    token (shown to the browser only) and the session. `NotAuthenticated` for a bad key."""
    now = resolve_now(now)
    actor = authenticate(session, api_token)
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
    )
    session.add(row)
    session.flush()
    return token, Signed(actor, row.csrf_token, row.id)


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
    return Signed(actor_for(session, kind, ident), row.csrf_token, row.id)


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
