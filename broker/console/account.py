"""A user's account: its credit now (score, limit, what is owed and available, the reasons
that pulled the score down), its cards on file (`broker.console.paying` adds and removes
them) and its payments; the same functions as the API's credit and payment routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from broker import credit
from broker import payments as pm
from broker.api.deps import store_of
from broker.console.forms import Form
from broker.console.paying import cards_panel, form_key
from broker.console.site import ConsoleRoute, Signed, render, require_side

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def account_page_with(
    request: Request, signed, *, card_form: Form | None = None, status: int = 200
) -> Response:
    """The account page; ``card_form``: a refused card form shown again."""
    require_side(signed, "user")
    actor = signed.actor
    assert actor.user_id is not None  # a user's side
    # A write, as the API's GET: a decision that differs from the latest is stored.
    with store_of(request).write() as s:
        decision = credit.current_decision(s, actor, actor.user_id)
        now = credit.decision_view(decision)
        owed = credit.exposure(s, actor.user_id)
        now.update(owed_minor=owed, available_minor=decision.limit_minor - owed)
        paid = [pm.payment_view(p) for p in pm.list_payments(s, actor, actor.user_id, limit=100)]
        cards = cards_panel(s, actor, actor.user_id)
    form = card_form or Form({})
    return render(
        request,
        "account.html",
        signed,
        status=status,
        credit=now,
        payments=paid,
        cards=cards,
        card_form=form,
        card_key=form.text("idempotency_key") or form_key(),
    )


@router.get("/account")
def account(request: Request, signed: Signed) -> Response:
    return account_page_with(request, signed)
