"""The statement of the period under way in the console: what a user's statement holds so far,
before its home provider closes the period (the API's ``/v1/users/{id}/statements/current``),
laid out by one of the user's profiles, as PDF, and its charges by service and by provider.

A user (or its device) sees its own at ``/statements/current``; its home provider and an admin
name the user (``?user=ID``). Who may see it is decided by `statements.current_statement`, as
for the API."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from broker import statements
from broker.api.deps import store_of
from broker.bounds import INT64_MAX
from broker.console.charts import bar_chart
from broker.console.forms import amount
from broker.console.site import ConsoleRoute, Signed, render
from broker.console.statements import DOCUMENT, SVG, ProfileName, charges_by
from broker.errors import InvalidInput
from broker.profile_book import list_profiles
from broker.rendering import MEDIA_TYPES

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
UserQuery = Annotated[int | None, Query(ge=1, le=INT64_MAX)]


def _user_of(signed, user: int | None) -> int:
    if user is not None:
        return user
    if signed.actor.user_id is not None:  # a user, its device or its phone number
        return signed.actor.user_id
    raise InvalidInput(
        "the statement under way is a user's: name one (/statements/current?user=ID)",
        field="user",
    )


@router.get("/statements/current")
def current_page(
    request: Request, signed: Signed, user: UserQuery = None, profile: ProfileName = None
) -> Response:
    user_id = _user_of(signed, user)
    # A write, as the API's: the home provider's default billing settings may be made.
    with store_of(request).write() as s:
        draft = statements.current_statement(s, signed.actor, user_id)
        document = statements.statement_document(s, draft)
        profiles = (
            [p.name for p in list_profiles(s, signed.actor, user_id)]
            if signed.actor.speaks_for_user(user_id)
            else []
        )
    shown = {
        "user_id": user_id,
        "period": draft.period,
        "start": draft.period_start,
        "end": draft.period_end,
        "totals": document.get("totals") or {},
        "lines": len(document["lines"]),
    }
    return render(
        request,
        "statement_current.html",
        signed,
        st=shown,
        profiles=profiles,
        profile=profile or "",
        breakdown=charges_by(document["lines"]),
        # The user's own needs no ?user= (and its links carry none).
        who="" if user is None else f"user={user_id}",
    )


@router.get("/statements/current/document")
def current_document(
    request: Request,
    signed: Signed,
    user: UserQuery = None,
    profile: ProfileName = None,
    format: Literal["html", "pdf"] = "html",
) -> Response:
    user_id = _user_of(signed, user)
    with store_of(request).write() as s:
        draft = statements.current_statement(s, signed.actor, user_id)
        body = statements.rendered(s, draft, profile, format)
        period = draft.period
    headers = dict(DOCUMENT)
    if format == "pdf":
        headers["Content-Disposition"] = f'inline; filename="statement-{period}-so-far.pdf"'
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)


@router.get("/statements/current/charges.svg")
def current_chart(
    request: Request,
    signed: Signed,
    user: UserQuery = None,
    by: Literal["service", "provider"] = "service",
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> Response:
    user_id = _user_of(signed, user)
    with store_of(request).write() as s:
        draft = statements.current_statement(s, signed.actor, user_id)
        grouped = charges_by(statements.statement_document(s, draft)["lines"])[by]
        period = draft.period
    currency = currency or next(iter(grouped), "EUR")
    svg = bar_chart(
        [(name, minor, amount(minor, currency)) for name, minor in grouped.get(currency, [])],
        title=f"{period} so far: charges by {by} ({currency})",
        value_label=f"charged, {currency}",
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)
