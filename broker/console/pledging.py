"""A group request's page: its members, pledges and total; a member's pledge form, its
"withdraw my pledge" button and the organizer's "close pledging", through the same
`broker.groups` calls as ``/v1/groups``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from broker import groups, requests
from broker.api.deps import id_path, store_of
from broker.console.forms import Form
from broker.console.paying import form_key
from broker.console.site import ConsoleRoute, Posted, Signed, render
from broker.errors import Conflict, InvalidInput

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
GroupId = Annotated[int, id_path("a group's id")]


def _group_page(
    request: Request,
    signed,
    group_id: int,
    *,
    form: Form | None = None,
    status: int = 200,
    message: str = "",
) -> Response:
    actor = signed.actor
    with store_of(request).read() as s:
        shown = groups.group_view(s, actor, group_id)
        group = groups.get_group(s, group_id)
        organizer = actor.speaks_for_user(group.organizer_id)
        member = actor.user_id is not None and actor.user_id in groups.member_users(
            s, group.request
        )
    pledged = any(p["user_id"] == actor.user_id for p in shown["pledges"])
    return render(
        request,
        "group.html",
        signed,
        status=status,
        g=shown,
        may_pledge=member and shown["status"] == "pledging",
        may_withdraw=member and pledged and shown["status"] == "pledging",
        withdraw_key=form_key(),
        may_close=organizer and shown["status"] == "pledging",
        form=form or Form({}),
        message=message,
    )


@router.get("/groups/{group_id}")
def group_page(request: Request, signed: Signed, group_id: GroupId) -> Response:
    return _group_page(request, signed, group_id)


@router.post("/groups/{group_id}/pledge")
def pledge(request: Request, signed: Signed, form: Posted, group_id: GroupId) -> Response:
    with store_of(request).read() as s:
        currency = groups.group_view(s, signed.actor, group_id)["currency"]
    most = form.money("max", currency, required=True)
    if not form.errors:
        assert most is not None
        try:
            with store_of(request).write() as s:
                groups.pledge(s, signed.actor, group_id, most)
        except InvalidInput as exc:
            form.refuse("max", exc.message)
        except Conflict as exc:
            return _group_page(
                request, signed, group_id, form=form, status=409, message=exc.message
            )
    if form.errors:
        return _group_page(request, signed, group_id, form=form, status=422)
    return RedirectResponse(f"/groups/{group_id}", status_code=303)


@router.post("/groups/{group_id}/pledges/mine/withdraw")
def withdraw(request: Request, signed: Signed, form: Posted, group_id: GroupId) -> Response:
    """Take back one's pledge while pledging is open (as ``DELETE /v1/groups/{id}/pledges/mine``,
    with the form's idempotency key: a double click withdraws once and answers the same)."""
    try:
        with store_of(request).write() as s:
            groups.withdraw(
                s, signed.actor, group_id, idempotency_key=form.text("idempotency_key") or None
            )
    except Conflict as exc:  # pledging closed meanwhile
        return _group_page(request, signed, group_id, status=exc.http_status, message=exc.message)
    return RedirectResponse(f"/groups/{group_id}", status_code=303)


@router.post("/groups/{group_id}/close")
def close(request: Request, signed: Signed, _form: Posted, group_id: GroupId) -> Response:
    try:
        with store_of(request).write() as s:
            decided = requests.close_pledges(s, signed.actor, group_id)
            request_id = decided.id
    except Conflict as exc:
        return _group_page(request, signed, group_id, status=409, message=exc.message)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)
