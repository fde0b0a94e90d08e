"""Users' cards on file (docs/billing.md, "Payments", "Cards"): kept as the gateway's token,
brand, last four digits and expiry; a number is checked (`broker.cards`) and tokenized, never
kept. One default card per user."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.cards import check_card
from broker.clock import resolve_now
from broker.errors import InvalidInput, NotFound, NotYours
from broker.idempotency import once
from broker.models import PaymentMethod, User
from broker.payment_gateway import PaymentGateway


def _require_user(actor: Actor, user_id: int, what: str) -> None:
    if not (actor.is_admin or actor.speaks_for_user(user_id)):
        raise NotYours(f"{actor} may not {what} of user {user_id}", where=f"user {user_id}")


def add_method(
    session: Session,
    actor: Actor,
    user_id: int,
    gw: PaymentGateway,
    *,
    token: str | None = None,
    card_number: str | None = None,
    exp_month: int | None = None,
    exp_year: int | None = None,
    make_default: bool = False,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> PaymentMethod:
    """Keep a card for the user: by the gateway's token, or by number and expiry (checked
    here, then tokenized by the gateway; the number is not kept). The user's first card, or
    one with ``make_default``, becomes its default."""
    now = resolve_now(now)
    if session.get(User, user_id) is None:
        raise NotFound("user", user_id)
    _require_user(actor, user_id, "add cards")
    if (token is None) == (card_number is None):
        raise InvalidInput("give either a gateway token or a card number", field="token")
    if token is not None:
        card = gw.card(token)
        params = {"user": user_id, "token": token, "default": make_default}
    else:
        if not hasattr(gw, "tokenize"):
            raise InvalidInput(f"gateway {gw.name} takes tokens only", field="card_number")
        checked = check_card(card_number, exp_month, exp_year, now)
        card = gw.tokenize(checked)
        params = {
            "user": user_id,
            "token": card.token,
            "exp": [exp_month, exp_year],
            "default": make_default,
        }

    def run() -> PaymentMethod:
        has_default = session.scalar(
            select(PaymentMethod.id).where(
                PaymentMethod.user_id == user_id, PaymentMethod.is_default
            )
        )
        default = make_default or has_default is None
        if default and has_default is not None:
            session.execute(
                update(PaymentMethod)
                .where(PaymentMethod.id == has_default)
                .values(is_default=False)
            )
        method = PaymentMethod(
            user_id=user_id,
            gateway=gw.name,
            token=card.token,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            is_default=default,
            created_at=now,
        )
        session.add(method)
        session.flush()
        return method

    return once(session, actor, idempotency_key, "add_payment_method", params, PaymentMethod, run)


def list_methods(session: Session, actor: Actor, user_id: int) -> list[PaymentMethod]:
    _require_user(actor, user_id, "see the cards")
    return list(
        session.scalars(
            select(PaymentMethod)
            .where(PaymentMethod.user_id == user_id, PaymentMethod.deleted_at.is_(None))
            .order_by(PaymentMethod.id)
        )
    )


def delete_method(
    session: Session, actor: Actor, user_id: int, method_id: int, *, now: datetime | None = None
) -> None:
    """Forget a card (deleting it again changes nothing); when it was the default, the
    user's newest other card becomes the default."""
    now = resolve_now(now)
    _require_user(actor, user_id, "delete cards")
    method = session.get(PaymentMethod, method_id)
    if method is None or method.user_id != user_id:
        raise NotFound("payment method", method_id)
    if method.deleted_at is not None:
        return
    method.deleted_at, was_default, method.is_default = now, method.is_default, False
    session.flush()
    if was_default:
        other = session.scalar(
            select(PaymentMethod)
            .where(PaymentMethod.user_id == user_id, PaymentMethod.deleted_at.is_(None))
            .order_by(PaymentMethod.id.desc())
            .limit(1)
        )
        if other is not None:
            other.is_default = True


def method_view(m: PaymentMethod) -> dict:
    return {
        "id": m.id,
        "user_id": m.user_id,
        "gateway": m.gateway,
        "brand": m.brand,
        "last4": m.last4,
        "exp_month": m.exp_month,
        "exp_year": m.exp_year,
        "is_default": m.is_default,
        "created_at": m.created_at,
    }
