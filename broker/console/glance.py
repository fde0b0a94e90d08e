"""The admin's glance at the market: open auctions, jobs by status, bids lately, principals."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.actors import Actor, require_admin
from broker.api.deps import store_of
from broker.clock import utcnow
from broker.console.site import ConsoleRoute, Signed, render
from broker.models import ApiKey, Auction, Bid, DeliveryJob, Network, Provider, User

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def market_glance(session: Session, actor: Actor) -> dict:
    """What an operator looks at first; for admins only."""
    require_admin(actor, "see the whole market")
    now = utcnow()
    jobs = dict(
        session.execute(select(DeliveryJob.status, func.count()).group_by(DeliveryJob.status)).all()
    )
    return {
        "open_auctions": list(
            session.scalars(
                select(Auction).where(Auction.status == "open").order_by(Auction.closes_at)
            )
        ),
        "jobs": jobs,
        "bids_last_hour": session.scalar(
            select(func.count()).select_from(Bid).where(Bid.updated_at >= now - timedelta(hours=1))
        ),
        "networks": list(session.scalars(select(Network).order_by(Network.id))),
        "providers": list(session.scalars(select(Provider).order_by(Provider.id))),
        "users": list(session.scalars(select(User).order_by(User.id))),
        "keys": [
            {
                "prefix": k.prefix,
                "principal": "{} {}".format(*k.principal),
                "label": k.label,
                "created_at": k.created_at,
                "revoked_at": k.revoked_at,
            }
            for k in session.scalars(select(ApiKey).order_by(ApiKey.id.desc()).limit(100))
        ],
        "live_keys": session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        ),
        "now": now,
    }


@router.get("/market")
def market(request: Request, signed: Signed) -> Response:
    with store_of(request).read() as s:
        glance = market_glance(s, signed.actor)
        return render(request, "market.html", signed, g=glance)
