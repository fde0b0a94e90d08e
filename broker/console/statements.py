"""Statements in the console: the list, one statement laid out by a chosen segmentation
profile (the same rendering as the API's ``/render``), and its PDF."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from broker import statements
from broker.api.deps import id_path, store_of
from broker.console.site import ConsoleRoute, Signed, render
from broker.profile_book import list_profiles
from broker.rendering import MEDIA_TYPES

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
StatementId = Annotated[int, id_path("a statement's id")]
ProfileName = Annotated[str | None, Query(min_length=1, max_length=100)]
# The statement's own document: its styles are inline, it runs nothing, and only the console's
# own pages may frame it.
DOCUMENT = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.get("/statements")
def statement_list(request: Request, signed: Signed) -> Response:
    with store_of(request).read() as s:
        rows = [
            {
                "id": st.id,
                "number": st.number,
                "status": st.status,
                "period": st.period,
                "user_id": st.user_id,
                "totals": st.totals or {},
                "line_count": st.line_count,
            }
            for st in statements.list_statements(s, signed.actor, limit=200)
        ]
    return render(request, "statements.html", signed, rows=rows)


@router.get("/statements/{statement_id}")
def statement_page(
    request: Request, signed: Signed, statement_id: StatementId, profile: ProfileName = None
) -> Response:
    with store_of(request).read() as s:
        st = statements.get_statement(s, signed.actor, statement_id)
        profiles = (
            [p.name for p in list_profiles(s, signed.actor, st.user_id)]
            if signed.actor.speaks_for_user(st.user_id)
            else []
        )
        shown = {
            "id": st.id,
            "number": st.number,
            "status": st.status,
            "period": st.period,
            "totals": st.totals or {},
        }
    return render(
        request, "statement.html", signed, st=shown, profiles=profiles, profile=profile or ""
    )


@router.get("/statements/{statement_id}/document")
def statement_document(
    request: Request,
    signed: Signed,
    statement_id: StatementId,
    profile: ProfileName = None,
    format: Literal["html", "pdf"] = "html",
) -> Response:
    with store_of(request).read() as s:
        st = statements.get_statement(s, signed.actor, statement_id)
        body = statements.rendered(s, st, profile, format)
    headers = dict(DOCUMENT)
    if format == "pdf":
        headers["Content-Disposition"] = f'inline; filename="statement-{statement_id}.pdf"'
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
