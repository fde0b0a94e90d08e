"""Statement routes: a home provider's billing settings and period close, statements (list,
get, finalize), credit notes on a finalized statement's line."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from broker import statements
from broker.api.deps import CurrentActor, IdemKey, Paging, id_path, store_of
from broker.api.responses import Page
from broker.api.statement_models import (
    BillingSettingsIn,
    BillingSettingsOut,
    ChargeOut,
    CloseIn,
    CloseOut,
    CreditIn,
    CreditNoteOut,
    StatementOut,
    StatementSummary,
)
from broker.bounds import INT64_MAX
from broker.rendering import MEDIA_TYPES

router = APIRouter(tags=["statements"])
ProviderId = Annotated[int, id_path("a provider's id")]
StatementId = Annotated[int, id_path("a statement's id")]


def _summary(s) -> dict:
    return {
        "id": s.id,
        "number": s.number,
        "status": s.status,
        "home_provider_id": s.home_provider_id,
        "user_id": s.user_id,
        "period": s.period,
        "period_start": s.period_start,
        "period_end": s.period_end,
        "totals": s.totals,
        "line_count": s.line_count,
        "content_sha256": s.content_sha256,
        "finalized_at": s.finalized_at,
        "due_at": s.due_at,
    }


@router.get("/providers/{provider_id}/billing-settings", response_model=BillingSettingsOut)
def get_billing_settings(provider_id: ProviderId, request: Request, actor: CurrentActor) -> dict:
    """A home provider's billing period, cut-off day and time zone; anyone may read them."""
    with store_of(request).write() as s:
        return statements.settings_view(statements.billing_settings(s, provider_id))


@router.put("/providers/{provider_id}/billing-settings", response_model=BillingSettingsOut)
def put_billing_settings(
    provider_id: ProviderId,
    body: BillingSettingsIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Set the billing period (the provider or its network); fixed once a period closed.
    Setting the same values again changes nothing."""
    with store_of(request).write() as s:
        return statements.settings_view(
            statements.set_billing_settings(
                s,
                actor,
                provider_id,
                period_months=body.period_months,
                cutoff_day=body.cutoff_day,
                timezone=body.timezone,
                margin_ppm=body.margin_ppm,
                payment_terms_days=body.payment_terms_days,
            )
        )


@router.post("/providers/{provider_id}/billing/close", response_model=CloseOut)
def close_period(
    provider_id: ProviderId,
    body: CloseIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Close a billing period: every user with charges on no statement yet gets its statement
    for the period, finalized. Safe to call again (a retry, or after a failure midway: it
    finishes what is left); the key is accepted and not needed."""
    store = store_of(request)
    return statements.close_period(store.write, actor, provider_id, body.period)


@router.get("/statements", response_model=Page[StatementSummary])
def list_statements(
    request: Request,
    actor: CurrentActor,
    page: Paging,
    user_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    home_provider_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
    status: Literal["draft", "finalized"] | None = None,
) -> dict:
    """The statements the caller may see, oldest first: a user (or its device) its own, a
    home provider those it issues."""
    with store_of(request).read() as s:
        rows = statements.list_statements(
            s,
            actor,
            user_id=user_id,
            home_provider_id=home_provider_id,
            period=period,
            status=status,
            after=page.after,
            limit=page.limit + 1,
        )
        return page.answer(rows, _summary)


@router.get("/statements/{statement_id}", response_model=StatementOut)
def get_statement(statement_id: StatementId, request: Request, actor: CurrentActor) -> dict:
    """A statement as data, every line with where it comes from; a draft's lines as they
    stand now."""
    with store_of(request).read() as s:
        return statements.statement_document(s, statements.get_statement(s, actor, statement_id))


@router.get("/users/{user_id}/statements/current", response_model=StatementOut)
def current_statement(
    user_id: Annotated[int, id_path("a user's id")], request: Request, actor: CurrentActor
) -> dict:
    """The period under way so far: the user's charges and credit notes on no statement yet
    (a draft that is not stored; the user, its devices and its home provider may read it)."""
    with store_of(request).write() as s:  # may make the home provider's default settings
        return statements.current_draft(s, actor, user_id)


# OpenAPI 3.1: a PDF is raw bytes (no schema but its media type); JSON is the layout object.
_RENDERED_SCHEMA = {
    "json": {"type": "object"},
    "text": {"type": "string"},
    "html": {"type": "string"},
    "pdf": {},
}


@router.get(
    "/statements/{statement_id}/render",
    response_class=Response,
    responses={
        200: {
            "description": "the statement laid out by the profile",
            "content": {
                media: {"schema": _RENDERED_SCHEMA[fmt]} for fmt, media in MEDIA_TYPES.items()
            },
        }
    },
)
def render_statement(
    statement_id: StatementId,
    request: Request,
    actor: CurrentActor,
    profile: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="one of the user's profiles (default: its default)",
        ),
    ] = None,
    format: Literal["json", "text", "html", "pdf"] = "html",
) -> Response:
    """A statement laid out by one of its user's segmentation profiles, in the format the
    device asks for. Any two profiles give the same totals."""
    with store_of(request).read() as s:
        statement = statements.get_statement(s, actor, statement_id)
        body = statements.rendered(s, statement, profile, format)
    return Response(body, media_type=MEDIA_TYPES[format])


@router.get(
    "/users/{user_id}/statements/current/render",
    response_class=Response,
    responses={
        200: {
            "description": "the period under way laid out by the profile",
            "content": {
                media: {"schema": _RENDERED_SCHEMA[fmt]} for fmt, media in MEDIA_TYPES.items()
            },
        }
    },
)
def render_current_statement(
    user_id: Annotated[int, id_path("a user's id")],
    request: Request,
    actor: CurrentActor,
    profile: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="one of the user's profiles (default: its default)",
        ),
    ] = None,
    format: Literal["json", "text", "html", "pdf"] = "html",
) -> Response:
    """The statement of the period under way so far (as ``/statements/current``) laid out by
    one of the user's profiles: what the user will be billed, before the period closes."""
    with store_of(request).write() as s:  # may make the home provider's default settings
        draft = statements.current_statement(s, actor, user_id)
        body = statements.rendered(s, draft, profile, format)
    return Response(body, media_type=MEDIA_TYPES[format])


@router.get("/users/{user_id}/charges", response_model=Page[ChargeOut])
def list_charges(
    user_id: Annotated[int, id_path("a user's id")],
    request: Request,
    actor: CurrentActor,
    page: Paging,
) -> dict:
    """The user's charge lines (award prices, usage past the awards' terms), oldest first,
    each with the statement it is on; for the user, its devices and its home provider."""
    with store_of(request).read() as s:
        rows = statements.list_charges(s, actor, user_id, after=page.after, limit=page.limit + 1)
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        return {
            "items": [statements.charge_view(r) for r in rows],
            "next_cursor": page.encode(rows[-1][0].id) if more and rows else None,
        }


@router.post("/statements/{statement_id}/finalize", response_model=StatementOut)
def finalize(
    statement_id: StatementId, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """Finalize a draft (its home provider): numbered, immutable, hashed, sent to the user's
    devices. A finalized statement is answered as it is (a retry changes nothing)."""
    with store_of(request).write() as s:
        statement = statements.finalize(s, actor, statement_id)
        return statements.statement_document(s, statement)


@router.post(
    "/statements/{statement_id}/lines/{position}/credit-notes",
    status_code=201,
    response_model=CreditNoteOut,
)
def credit_line(
    statement_id: StatementId,
    position: Annotated[int, id_path("the line's position on the statement")],
    body: CreditIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Correct a finalized statement's line (its home provider): a credit note that goes on
    the user's next statement. The statement itself never changes."""
    with store_of(request).write() as s:
        note = statements.credit_line(
            s,
            actor,
            statement_id,
            position,
            amount_minor=body.amount_minor,
            reason=body.reason,
            idempotency_key=key,
        )
        return statements.credit_note_view(note, statement_id, position)
