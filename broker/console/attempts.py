"""Limits on console sign-in attempts: per client address and per key prefix, kept in the
database (`SignInFailure`) so that restarting the broker does not reset them."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from broker.errors import BrokerError
from broker.models import SignInFailure

WINDOW = timedelta(minutes=15)
# One address may mistype a few keys; a prefix is one key, whose owner needs few tries. Keys
# carry a 256-bit secret, so the limits are not what stops guessing: they keep a guesser from
# costing the broker a database round trip per try, and leave a trace in the log.
PER_ADDRESS = 10
PER_PREFIX = 5


class TooManyAttempts(BrokerError):
    """Too many refused sign-ins from an address or for a key: try again after a while."""

    http_status = 429
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, field="api_key")
        self.retry_after = retry_after


def prefix_of(api_token: str) -> str | None:
    """The prefix of a typed key (``pktx_<prefix>_<secret>``), or None when it has none."""
    parts = api_token.split("_", 2)
    if len(parts) != 3 or parts[0] != "pktx" or not parts[1]:
        return None
    return parts[1][:32]


def _retry_after(session: Session, where, limit: int, now: datetime) -> int | None:
    """Seconds until the failures matching ``where`` in the window drop below ``limit``, or
    None when they are below it already."""
    times = session.scalars(
        select(SignInFailure.created_at)
        .where(where, SignInFailure.created_at > now - WINDOW)
        .order_by(SignInFailure.created_at.desc())
        .limit(limit)
    ).all()
    if len(times) < limit:
        return None
    # The oldest of the last `limit` failures leaving the window frees one try.
    return max(1, math.ceil((times[-1] + WINDOW - now).total_seconds()))


def check(session: Session, address: str, api_token: str, now: datetime) -> None:
    """`TooManyAttempts` (429, with the seconds to wait) when ``address`` or the typed key's
    prefix has used up its refused sign-ins in the window. Checked before the key is."""
    waits = [(_retry_after(session, SignInFailure.address == address, PER_ADDRESS, now), "")]
    prefix = prefix_of(api_token)
    if prefix is not None:
        waits.append(
            (
                _retry_after(session, SignInFailure.key_prefix == prefix, PER_PREFIX, now),
                f" for key {prefix}",
            )
        )
    refused = [(wait, what) for wait, what in waits if wait is not None]
    if refused:
        wait, what = max(refused)
        raise TooManyAttempts(
            f"too many refused sign-ins{what or ' from this address'}; "
            f"try again in {wait} s (at most {PER_ADDRESS} per address and {PER_PREFIX} per "
            f"key in {int(WINDOW.total_seconds()) // 60} minutes)",
            retry_after=wait,
        )


def record_failure(session: Session, address: str, api_token: str, now: datetime) -> None:
    """Count one refused sign-in; failures older than the window are deleted on the way."""
    session.execute(delete(SignInFailure).where(SignInFailure.created_at <= now - WINDOW))
    session.add(
        SignInFailure(address=address[:64], key_prefix=prefix_of(api_token), created_at=now)
    )


def failures(session: Session, address: str, now: datetime) -> int:
    """Refused sign-ins from ``address`` in the window (for tests and the log)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(SignInFailure)
            .where(SignInFailure.address == address, SignInFailure.created_at > now - WINDOW)
        )
        or 0
    )
