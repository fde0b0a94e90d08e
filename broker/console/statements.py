"""Statements in the console: the list, one statement laid out by a chosen segmentation
profile (the same rendering as the API's ``/render``), its PDF, its charges by service and by
provider as a chart, paying it (`broker.console.paying`), and a user's charges not yet on a
statement."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import exists, func, select

from broker import statements
from broker.api.deps import id_path, store_of
from broker.bounds import INT64_MAX
from broker.console.charts import bar_chart
from broker.console.forms import Form, amount
from broker.console.paging import LISTED, newest_page, rows_of
from broker.console.paying import form_key, payment_panel
from broker.console.site import ConsoleRoute, Signed, render
from broker.models import Charge, StatementLine
from broker.profile_book import list_profiles
from broker.rendering import MEDIA_TYPES

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
StatementId = Annotated[int, id_path("a statement's id")]
UserId = Annotated[int, id_path("a user's id")]
# The charges page's ``?after=ID``: the charges older than that id (the "Older" link's target).
After = Annotated[int | None, Query(ge=1, le=INT64_MAX)]
ProfileName = Annotated[str | None, Query(min_length=1, max_length=100)]
# A statement's charges are summed by one of these: what the chart's bars are.
GROUPINGS = {"service": "Service", "provider": "Provider"}
SVG = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# The statement's own document: its styles are inline, it runs nothing, and only the console's
# own pages may frame it.
DOCUMENT = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _group_name(line: dict, by: str) -> str:
    if by == "service":
        return " + ".join(line.get("services") or []) or "(no service)"
    return line.get("provider") or f"provider {line.get('provider_id')}"


def charges_by(lines: Iterable[dict]) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """The lines' sums by service chain and by provider, currency by currency, largest first
    (integer minor units; credit notes count against the line's group)."""
    sums: dict[str, dict[str, defaultdict[str, int]]] = {by: {} for by in GROUPINGS}
    for line in lines:
        for by in GROUPINGS:
            per = sums[by].setdefault(line["currency"], defaultdict(int))
            per[_group_name(line, by)] += line["amount_minor"]
    return {
        by: {
            currency: sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
            for currency, per in sorted(currencies.items())
        }
        for by, currencies in sums.items()
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


def statement_page_with(
    request: Request,
    signed,
    statement_id: int,
    *,
    profile: str | None = None,
    pay_form: Form | None = None,
    refund_form: tuple[int, Form] | None = None,
    status: int = 200,
) -> Response:
    """A statement's page; ``pay_form``: a refused pay form shown again; ``refund_form``: a
    payment's refused refund form shown again."""
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
        paying = payment_panel(s, signed.actor, st)
        breakdown = charges_by(statements.statement_document(s, st)["lines"])
    form = pay_form or Form({})
    refused_of, refused = refund_form or (0, Form({}))
    # A form drawn anew gets a new idempotency key; a refused one keeps the key it was sent with.
    refund_forms = {
        p["id"]: refused
        if p["id"] == refused_of
        else Form({"idempotency_key": form_key(), "left_minor": str(p["left_minor"])})
        for p in paying["refundable"]
    }
    return render(
        request,
        "statement.html",
        signed,
        status=status,
        st=shown,
        profiles=profiles,
        profile=profile or "",
        paying=paying,
        pay_form=form,
        pay_key=form.text("idempotency_key") or form_key(),
        refund_forms=refund_forms,
        breakdown=breakdown,
    )


@router.get("/statements/{statement_id}")
def statement_page(
    request: Request, signed: Signed, statement_id: StatementId, profile: ProfileName = None
) -> Response:
    return statement_page_with(request, signed, statement_id, profile=profile)


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


@router.get("/statements/{statement_id}/charges.svg")
def statement_chart(
    request: Request,
    signed: Signed,
    statement_id: StatementId,
    by: Literal["service", "provider"] = "service",
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> Response:
    """The statement's charges by service or by provider in one currency, as bars."""
    with store_of(request).read() as s:
        st = statements.get_statement(s, signed.actor, statement_id)
        grouped = charges_by(statements.statement_document(s, st)["lines"])[by]
        name = st.number or f"draft #{st.id}"
    currency = currency or next(iter(grouped), "EUR")
    rows = grouped.get(currency, [])
    svg = bar_chart(
        [(name, minor, amount(minor, currency)) for name, minor in rows],
        title=f"Statement {name}: charges by {by} ({currency})",
        value_label=f"charged, {currency}",
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)


@router.get("/users/{user_id}/charges")
def unbilled_charges(
    request: Request, signed: Signed, user_id: UserId, after: After = None
) -> Response:
    """The user's charges on no statement yet (a statement's lines are written when it is
    finalized), newest first, 50 a page, read through `statements.list_charges` as
    ``GET /v1/users/{id}/charges`` (the user, its devices, its home provider, an admin), with
    their totals per currency."""
    actor = signed.actor
    unbilled = (Charge.user_id == user_id, ~exists().where(StatementLine.charge_id == Charge.id))
    with store_of(request).read() as s:
        statements.list_charges(s, actor, user_id, limit=0)  # 404/403 as the API, first
        newest = select(Charge.id).where(*unbilled).order_by(Charge.id.desc()).limit(LISTED + 1)
        if after is not None:
            newest = newest.where(Charge.id < after)
        shown, older = newest_page(list(s.scalars(newest)))
        rows = [
            statements.charge_view(r)
            for r in rows_of(
                lambda a, n: statements.list_charges(s, actor, user_id, after=a, limit=n),
                shown,
                id_of=lambda r: r[0].id,
            )
            if r[1] is None  # on no statement (a charge billed meanwhile is not shown)
        ]
        totals = dict(
            s.execute(
                select(Charge.currency, func.sum(Charge.amount_minor))
                .where(*unbilled)
                .group_by(Charge.currency)
                .order_by(Charge.currency)
            ).all()
        )
    return render(
        request,
        "charges.html",
        signed,
        user_id=user_id,
        rows=rows,
        totals={currency: int(minor) for currency, minor in totals.items()},
        older=older,
        after=after,
    )
