"""Settlement routes: a provider's settlement batches (as home and as delivering provider),
issuing them for a period, the delivering provider's acknowledgement, and the balance due
between providers (docs/billing.md, "Settlement")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from broker import settlements
from broker.api.deps import CurrentActor, IdemKey, Paging, id_path, store_of
from broker.api.responses import Page
from broker.api.settlement_models import (
    AcknowledgedOut,
    AcknowledgeIn,
    BalanceOut,
    IssuedOut,
    IssueIn,
    SettlementOut,
    SettlementSummary,
)

router = APIRouter(tags=["settlements"])
ProviderId = Annotated[int, id_path("a provider's id")]
SettlementId = Annotated[int, id_path("a settlement batch's id")]


@router.get("/providers/{provider_id}/settlements", response_model=Page[SettlementSummary])
def list_settlements(
    provider_id: ProviderId,
    request: Request,
    actor: CurrentActor,
    page: Paging,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
) -> dict:
    """The provider's settlement batches, as home and as delivering provider, oldest first
    (the provider, its network, an admin)."""
    with store_of(request).read() as s:
        rows = settlements.list_batches(
            s, actor, provider_id, period=period, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, settlements.batch_summary)


@router.post("/providers/{provider_id}/settlements", response_model=IssuedOut)
def issue_settlements(
    provider_id: ProviderId,
    body: IssueIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """The home provider issues its batches for a period: one per delivering provider with
    lines not settled yet. Answers every batch of the period it issued, now or before, so a
    retry (the key is accepted, and not needed) answers the same and issues nothing new."""
    with store_of(request).write() as s:
        rows = settlements.issue(s, actor, provider_id, body.period, provider_id=body.provider_id)
        return {
            "home_provider_id": provider_id,
            "period": body.period,
            "items": [settlements.batch_summary(b) for b in rows],
        }


@router.get("/settlements/{settlement_id}", response_model=SettlementOut)
def get_settlement(settlement_id: SettlementId, request: Request, actor: CurrentActor) -> dict:
    """A batch's document (its home and its delivering provider, an admin)."""
    with store_of(request).read() as s:
        return settlements.batch_document(s, settlements.get_batch(s, actor, settlement_id))


@router.post("/settlements/{settlement_id}/acknowledge", response_model=AcknowledgedOut)
def acknowledge_settlement(
    settlement_id: SettlementId,
    body: AcknowledgeIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """The delivering provider imports the batch with the document it received: audit totals
    that do not add up are a 422 naming the total, the batch's number with other content a
    409, the same document again a copy (nothing changes; the batch as it stands). When every
    batch between the two providers for the period is acknowledged they are netted and
    posted."""
    with store_of(request).write() as s:
        batch = settlements.acknowledge(s, actor, settlement_id, body.model_dump())
        doc = settlements.batch_document(s, batch)
        doc["netting"] = settlements.netting_view(settlements.get_netting(s, batch.netting_id))
        return doc


@router.get("/providers/{provider_id}/balance", response_model=BalanceOut)
def provider_balance(provider_id: ProviderId, request: Request, actor: CurrentActor) -> dict:
    """What is due between the provider and each counterparty, per currency, from the ledger
    (the provider, its network, an admin)."""
    with store_of(request).read() as s:
        return settlements.provider_balance(s, actor, provider_id)
