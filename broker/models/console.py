"""Web console sessions: a signed-in browser, known by the hash of its cookie, never the key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, HasCreated, HasId


class ConsoleSession(HasId, HasCreated, Base):
    """A browser signed in to the console with an API key (docs/console.md).

    The cookie carries a random token; only its SHA-256 is stored, with the key it was opened
    with (so revoking the key ends the session) and the session's CSRF token. The API key
    itself is never kept: it is checked once, at sign-in.
    """

    __tablename__ = "console_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # What the principal sees on its sessions page (migration 0015); refreshed at most once a
    # minute, so a page view is not a write.
    last_seen_at: Mapped[datetime | None]
    user_agent: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(64))


class SignInFailure(HasId, HasCreated, Base):
    """A refused console sign-in: from which client address, for which key prefix (if the
    typed key had one). Counted over a window to refuse further tries (broker.console.attempts);
    kept in the database so a restart of the broker does not reset the count."""

    __tablename__ = "console_signin_failures"

    address: Mapped[str] = mapped_column(String(64), index=True)
    key_prefix: Mapped[str | None] = mapped_column(String(32), index=True)


__all__ = ["ConsoleSession", "SignInFailure"]
