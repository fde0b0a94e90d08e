"""A user's saved segmentation profiles (claim c12): several by name, one the default; a
statement is rendered with any of them (docs/billing.md, "Profiles")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.clock import resolve_now
from broker.errors import InvalidInput, NotFound, NotYours
from broker.models import StatementProfile, User
from broker.profiles import DEFAULT_PROFILE, Profile

MAX_PROFILES = 50


def _require_user(session: Session, actor: Actor, user_id: int, what: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (actor.is_admin or actor.speaks_for_user(user_id)):
        raise NotYours(f"{actor} may not {what} of user {user_id}", where=f"user {user_id}")
    return user


def list_profiles(session: Session, actor: Actor, user_id: int) -> list[StatementProfile]:
    _require_user(session, actor, user_id, "see the profiles")
    return list(
        session.scalars(
            select(StatementProfile)
            .where(StatementProfile.user_id == user_id)
            .order_by(StatementProfile.name)
        )
    )


def get_profile(session: Session, actor: Actor, user_id: int, name: str) -> StatementProfile:
    _require_user(session, actor, user_id, "see the profiles")
    row = session.scalar(
        select(StatementProfile).where(
            StatementProfile.user_id == user_id, StatementProfile.name == name
        )
    )
    if row is None:
        raise NotFound("profile", name)
    return row


def put_profile(
    session: Session,
    actor: Actor,
    user_id: int,
    name: str,
    doc: dict,
    *,
    default: bool = False,
    now: datetime | None = None,
) -> StatementProfile:
    """Save the profile ``name`` (made or replaced: a retry changes nothing more). With
    ``default`` it becomes the user's default, and the one before stops being it."""
    now = resolve_now(now)
    _require_user(session, actor, user_id, "change the profiles")
    if not isinstance(doc, dict):
        raise InvalidInput("a profile is a JSON object", field="profile")
    if doc.get("name", name) != name:
        raise InvalidInput(
            f"the profile is named {doc.get('name')!r} but saved as {name!r}", field="name"
        )
    profile = Profile.from_json({**doc, "name": name})
    row = session.scalar(
        select(StatementProfile)
        .where(StatementProfile.user_id == user_id, StatementProfile.name == name)
        .with_for_update()
    )
    if row is None:
        count = len(list_profiles(session, actor, user_id))
        if count >= MAX_PROFILES:
            raise InvalidInput(f"a user keeps at most {MAX_PROFILES} profiles", field="name")
        row = StatementProfile(
            user_id=user_id,
            name=name,
            is_default=False,
            doc=profile.to_json(),
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    elif row.doc != profile.to_json():
        row.doc, row.updated_at = profile.to_json(), now
    if default and not row.is_default:
        session.execute(
            update(StatementProfile)
            .where(StatementProfile.user_id == user_id, StatementProfile.is_default)
            .values(is_default=False)
        )
        session.flush()
        row.is_default = True
    session.flush()
    return row


def delete_profile(session: Session, actor: Actor, user_id: int, name: str) -> None:
    """Forget a profile (deleting one that is gone is not an error: a retry is safe)."""
    _require_user(session, actor, user_id, "change the profiles")
    session.execute(
        delete(StatementProfile).where(
            StatementProfile.user_id == user_id, StatementProfile.name == name
        )
    )


def profile_for(session: Session, user_id: int, name: str | None) -> Profile:
    """The user's profile ``name``; without a name its default, else `DEFAULT_PROFILE`."""
    query = select(StatementProfile.doc).where(StatementProfile.user_id == user_id)
    if name is None:
        doc = session.scalar(query.where(StatementProfile.is_default))
        return Profile.from_json(doc) if doc is not None else DEFAULT_PROFILE
    doc = session.scalar(query.where(StatementProfile.name == name))
    if doc is None:
        raise NotFound("profile", name)
    return Profile.from_json(doc)


def profile_view(row: StatementProfile) -> dict:
    return {
        "user_id": row.user_id,
        "name": row.name,
        "default": row.is_default,
        "profile": row.doc,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
