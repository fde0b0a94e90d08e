"""Events for a user's devices (claim c08): a finalized statement is announced to every device
of its user over a server-sent events stream; the event id lets a device that was offline
pick up where it left off (docs/billing.md, "Sent to the device")."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.errors import NotYours
from broker.models import DeviceEvent

_AFTER = (
    select(DeviceEvent.id, DeviceEvent.kind, DeviceEvent.payload, DeviceEvent.created_at)
    .where(DeviceEvent.user_id == bindparam("user"), DeviceEvent.id > bindparam("after"))
    .order_by(DeviceEvent.id)
    .limit(bindparam("limit"))
)


def events_user(actor: Actor) -> int:
    """The user whose events the caller receives: a device's or phone's user, or the user."""
    if actor.user_id is None:
        raise NotYours(f"{actor} has no device events: they are a user's and its devices'")
    return actor.user_id


def events_after(session: Session, user_id: int, after: int, limit: int = 100) -> list[dict]:
    """The user's events with ids above ``after``, oldest first, at most ``limit``."""
    rows = session.connection().execute(_AFTER, {"user": user_id, "after": after, "limit": limit})
    return [
        {"id": r.id, "kind": r.kind, "payload": r.payload, "created_at": r.created_at} for r in rows
    ]
