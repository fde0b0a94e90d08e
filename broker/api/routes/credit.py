"""Credit routes: a user's current credit decision and its history, and the external credit
history its home provider (or the admin) sets (docs/billing.md, "Credit")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from broker import credit
from broker.api.credit_models import (
    CreditDecisionOut,
    CreditNowOut,
    CreditProfileIn,
    CreditProfileOut,
)
from broker.api.deps import CurrentActor, IdemKey, Paging, id_path, store_of
from broker.api.responses import Page

router = APIRouter(tags=["credit"])
UserId = Annotated[int, id_path("a user's id")]


@router.get("/users/{user_id}/credit", response_model=CreditNowOut)
def current_credit(user_id: UserId, request: Request, actor: CurrentActor) -> dict:
    """The user's credit decided now with the current model: score, limit, what is owed and
    available, the bandwidth grant and the reasons that pulled the score down. Stored as a
    decision when it differs from the latest. The user, its devices, its home provider and
    the admin may read it."""
    with store_of(request).write() as s:
        decision = credit.current_decision(s, actor, user_id)
        view = credit.decision_view(decision)
        view["owed_minor"] = owed = credit.exposure(s, user_id)
        view["available_minor"] = decision.limit_minor - owed
        view["managed"] = credit.has_profile(s, user_id)
        return view


@router.get("/users/{user_id}/credit/decisions", response_model=Page[CreditDecisionOut])
def credit_decisions(user_id: UserId, request: Request, actor: CurrentActor, page: Paging) -> dict:
    """The user's stored credit decisions, newest first."""
    with store_of(request).read() as s:
        rows = credit.list_decisions(s, actor, user_id, after=page.after, limit=page.limit + 1)
        return page.answer(rows, credit.decision_view)


@router.put("/users/{user_id}/credit/profile", response_model=CreditProfileOut)
def put_credit_profile(
    user_id: UserId,
    body: CreditProfileIn,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    """Set the user's external credit score and sign-up limit (its home provider or the
    admin); from then on its requests are checked against its credit limit."""
    with store_of(request).write() as s:
        return credit.profile_view(
            credit.set_profile(
                s,
                actor,
                user_id,
                external_score=body.external_score,
                prior_limit_minor=body.prior_limit_minor,
                idempotency_key=key,
            )
        )
