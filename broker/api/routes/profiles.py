"""Segmentation profile routes: a user's saved ways of presenting its statements."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from broker import profile_book
from broker.api.deps import CurrentActor, IdemKey, id_path, store_of
from broker.api.statement_models import ProfileIn, ProfileOut

router = APIRouter(tags=["statements"])
UserId = Annotated[int, id_path("a user's id")]
Name = Annotated[str, Path(min_length=1, max_length=100, description="the profile's name")]


@router.get("/users/{user_id}/profiles", response_model=list[ProfileOut])
def list_profiles(user_id: UserId, request: Request, actor: CurrentActor) -> list[dict]:
    """The user's profiles by name (the user, its devices, an admin)."""
    with store_of(request).read() as s:
        return [profile_book.profile_view(p) for p in profile_book.list_profiles(s, actor, user_id)]


@router.get("/users/{user_id}/profiles/{name}", response_model=ProfileOut)
def get_profile(user_id: UserId, name: Name, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return profile_book.profile_view(profile_book.get_profile(s, actor, user_id, name))


@router.put("/users/{user_id}/profiles/{name}", response_model=ProfileOut)
def put_profile(
    user_id: UserId,
    name: Name,
    body: ProfileIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Save a profile under its name (made or replaced; the same body again changes nothing).
    A profile with an unknown grouping key, column, sort key, locale or time zone is 422
    naming the field (``profile.group_by[2]``)."""
    from broker.errors import InvalidInput

    with store_of(request).write() as s:
        try:
            row = profile_book.put_profile(
                s, actor, user_id, name, body.profile, default=body.default
            )
        except InvalidInput as exc:  # name the field as the body spells it
            if exc.field is not None and exc.field != "profile":
                exc.field = f"profile.{exc.field}"
            raise
        return profile_book.profile_view(row)


@router.delete("/users/{user_id}/profiles/{name}", status_code=204, response_class=Response)
def delete_profile(
    user_id: UserId, name: Name, request: Request, actor: CurrentActor, key: IdemKey = None
) -> Response:
    """Forget a profile; one that is gone already is not an error (a retry is safe)."""
    with store_of(request).write() as s:
        profile_book.delete_profile(s, actor, user_id, name)
    return Response(status_code=204)
