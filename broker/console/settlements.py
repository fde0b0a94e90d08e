"""A provider's settlements in the console: its batches period by period with their audit
totals, a batch's lines, issuing a period's batches (the home provider) and acknowledging one
(the delivering provider), and the balance due between providers; the same functions as the
API's settlement routes (`broker.settlements`)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from broker import settlements
from broker.api.deps import id_path, store_of
from broker.console.forms import Form
from broker.console.site import ConsoleRoute, Posted, Signed, provider_names, render, require_side
from broker.errors import BrokerError, Conflict, InvalidInput, NotFound, NotYours

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
SettlementId = Annotated[int, id_path("a settlement batch's id")]
Period = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")]
ProviderChoice = Annotated[int | None, Query(ge=1)]


def _providers_of(signed, chosen: int | None) -> list[int]:
    """The providers whose settlements the page lists: the one chosen (which the API checks),
    else every provider the caller speaks for."""
    if chosen is not None:
        return [chosen]
    if signed.actor.is_admin:
        return []
    return sorted(signed.actor.provider_ids)


def _list_page(
    request: Request,
    signed,
    provider: int | None,
    period: str | None,
    *,
    form: Form | None = None,
    status: int = 200,
) -> Response:
    require_side(signed, "provider", "admin")
    actor = signed.actor
    chosen = _providers_of(signed, provider)
    with store_of(request).read() as s:
        batches: dict[int, dict] = {}
        balances = []
        for pid in chosen:
            for b in settlements.list_batches(s, actor, pid, period=period, limit=1000):
                batches[b.id] = settlements.batch_summary(b)
            balances.append(settlements.provider_balance(s, actor, pid))
        names = provider_names(
            s,
            set(chosen)
            | {b["home_provider_id"] for b in batches.values()}
            | {b["provider_id"] for b in batches.values()}
            | {row["counterparty_id"] for bal in balances for row in bal["balances"]},
        )
        everyone = provider_names(s, actor.provider_ids) if not actor.is_admin else {}
    by_period: dict[str, list[dict]] = defaultdict(list)
    for summary in sorted(batches.values(), key=lambda x: x["id"]):
        by_period[summary["period"]].append(summary)
    return render(
        request,
        "settlements.html",
        signed,
        status=status,
        periods=sorted(by_period.items(), reverse=True),
        balances=balances,
        names=names,
        chosen=chosen,
        provider=provider,
        period=period or "",
        homes=sorted(everyone.items()) if not actor.is_admin else [],
        form=form or Form({}),
    )


@router.get("/settlements")
def settlement_list(
    request: Request, signed: Signed, provider: ProviderChoice = None, period: Period = None
) -> Response:
    return _list_page(request, signed, provider, period)


@router.post("/settlements/issue")
def issue(request: Request, signed: Signed, form: Posted) -> Response:
    """The home provider issues its batches for a period (issuing again issues nothing)."""
    require_side(signed, "provider", "admin")
    home = form.integer("home_provider_id", required=True)
    period = form.text("period")
    if not period:
        form.refuse("period", "required, e.g. 2030-01")
    if not form.errors:
        assert home is not None  # required
        try:
            with store_of(request).write() as s:
                settlements.issue(s, signed.actor, home, period)
        except (NotYours, NotFound):
            raise
        except InvalidInput as exc:
            form.refuse("period", exc.message)
        except BrokerError as exc:
            form.refuse("_form", exc.message)
    if form.errors:
        return _list_page(request, signed, home, None, form=form, status=422)
    return RedirectResponse(f"/settlements?provider={home}&period={period}", status_code=303)


def _batch_page(
    request: Request, signed, batch_id: int, *, form: Form | None = None, status: int = 200
) -> Response:
    actor = signed.actor
    with store_of(request).read() as s:
        batch = settlements.get_batch(s, actor, batch_id)
        doc = settlements.batch_document(s, batch)
        netting = settlements.netting_view(settlements.get_netting(s, batch.netting_id))
        names = provider_names(s, {batch.home_provider_id, batch.provider_id})
        shows_statements = actor.is_admin or actor.speaks_for_provider(batch.home_provider_id)
        may_acknowledge = batch.status == settlements.ISSUED and (
            actor.is_admin or actor.speaks_for_provider(batch.provider_id)
        )
    return render(
        request,
        "settlement.html",
        signed,
        status=status,
        b=doc,
        netting=netting,
        names=names,
        shows_statements=shows_statements,
        may_acknowledge=may_acknowledge,
        document=json.dumps(doc, default=str, indent=1, sort_keys=True),
        form=form or Form({}),
    )


@router.get("/settlements/{settlement_id}")
def batch_page(request: Request, signed: Signed, settlement_id: SettlementId) -> Response:
    return _batch_page(request, signed, settlement_id)


@router.post("/settlements/{settlement_id}/acknowledge")
def acknowledge(
    request: Request, signed: Signed, settlement_id: SettlementId, form: Posted
) -> Response:
    """The delivering provider imports the batch: with the document it received (pasted),
    or with the batch as the page showed it (its SHA-256 sent back with the form: a batch that
    is not the one shown is refused). Audit totals that do not add up are refused beside the
    document, naming the total."""
    pasted = form.text("document")
    try:
        with store_of(request).write() as s:
            batch = settlements.get_batch(s, signed.actor, settlement_id)
            if pasted:
                try:
                    doc = json.loads(pasted)
                except ValueError as exc:
                    raise InvalidInput(f"not JSON: {exc}", field="document") from None
                if not isinstance(doc, dict):
                    raise InvalidInput("a settlement document is a JSON object", field="document")
            else:
                doc = settlements.batch_document(s, batch)
                if form.text("content_sha256") != batch.content_sha256:
                    raise Conflict(
                        f"settlement {settlement_id} is not the batch the page showed "
                        f"(sha256 {batch.content_sha256}); look at it again",
                        where=f"settlement {settlement_id}",
                    )
            try:
                settlements.acknowledge(s, signed.actor, settlement_id, doc)
            except (KeyError, TypeError, AttributeError) as exc:  # lines that are not lines
                raise InvalidInput(
                    f"not a settlement document: {type(exc).__name__} {exc}", field="document"
                ) from None
    except (NotYours, NotFound):
        raise
    except BrokerError as exc:
        form.refuse("document", exc.message)
        return _batch_page(request, signed, settlement_id, form=form, status=exc.http_status)
    return RedirectResponse(f"/settlements/{settlement_id}", status_code=303)
