"""The admin's glance at the market: open auctions, jobs by status, bids per minute and usage
per hour (charts), principals, and API keys (issued, shown once, and revoked through the same
functions as the API's ``/v1/keys``); and every principal's own keys (the Keys page)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.actors import KINDS, Actor, _manages, issue_key, require_admin, revoke_key
from broker.api.deps import store_of
from broker.clock import utcnow
from broker.console import sessions
from broker.console.charts import line_chart
from broker.console.forms import Form
from broker.console.paying import form_key
from broker.console.site import ConsoleRoute, Posted, Signed, render
from broker.errors import BrokerError, NotFound
from broker.idempotency import once
from broker.models import (
    ApiKey,
    Auction,
    Bid,
    ConsoleSession,
    DeliveryJob,
    Network,
    Provider,
    UsageReport,
    User,
)

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


BID_MINUTES, USAGE_HOURS = 60, 24  # how far back the two charts look
SVG = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _bucket(at: datetime, now: datetime, width: timedelta) -> int:
    """How many ``width``s before ``now`` ``at`` falls (0: the latest one)."""
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=now.tzinfo)
    return int((now - at) / width)


def bids_per_minute(session: Session, actor: Actor, now: datetime) -> list[tuple[int, int]]:
    """(minutes before now, bids placed or replaced in that minute) for the last
    `BID_MINUTES` minutes, oldest first; for admins only."""
    require_admin(actor, "see the whole market")
    counts = [0] * BID_MINUTES
    since = now - timedelta(minutes=BID_MINUTES)
    for (at,) in session.execute(select(Bid.updated_at).where(Bid.updated_at > since)):
        ago = _bucket(at, now, timedelta(minutes=1))
        if 0 <= ago < BID_MINUTES:
            counts[ago] += 1
    return [(-ago, counts[ago]) for ago in range(BID_MINUTES - 1, -1, -1)]


def usage_per_hour(session: Session, actor: Actor, now: datetime) -> list[tuple[int, int]]:
    """(hours before now, bytes delivered in that hour) for the last `USAGE_HOURS` hours,
    oldest first: each usage report's bytes out since its job's report before (reports are
    cumulative); for admins only."""
    require_admin(actor, "see the whole market")
    since = now - timedelta(hours=USAGE_HOURS)
    recent_jobs = select(UsageReport.job_id).where(UsageReport.usage_at > since).distinct()
    delta = (
        UsageReport.bytes_out
        - func.coalesce(
            func.lag(UsageReport.bytes_out).over(
                partition_by=UsageReport.job_id, order_by=UsageReport.sequence
            ),
            0,
        )
    ).label("delta")
    steps = (
        select(UsageReport.usage_at.label("at"), delta)
        .where(UsageReport.job_id.in_(recent_jobs))
        .subquery()
    )
    sums = [0] * USAGE_HOURS
    for at, sent in session.execute(select(steps.c.at, steps.c.delta).where(steps.c.at > since)):
        ago = _bucket(at, now, timedelta(hours=1))
        if 0 <= ago < USAGE_HOURS:
            sums[ago] += int(sent)
    return [(-ago, sums[ago]) for ago in range(USAGE_HOURS - 1, -1, -1)]


def _market_page(
    request: Request,
    signed,
    *,
    key_form: Form | None = None,
    issued: dict | None = None,
    status: int = 200,
) -> Response:
    now = utcnow()
    with store_of(request).read() as s:
        glance = market_glance(s, signed.actor)
        bids = bids_per_minute(s, signed.actor, now)
        usage = usage_per_hour(s, signed.actor, now)
        form = key_form or Form({})
        return render(
            request,
            "market.html",
            signed,
            status=status,
            g=glance,
            bids=bids,
            usage=usage,
            kinds=KINDS,
            key_form=form,
            key_key=form_key() if issued or not key_form else form.text("idempotency_key"),
            issued=issued,
        )


@router.get("/market")
def market(request: Request, signed: Signed) -> Response:
    return _market_page(request, signed)


@router.get("/market/bids.svg")
def bids_chart(request: Request, signed: Signed) -> Response:
    with store_of(request).read() as s:
        points = bids_per_minute(s, signed.actor, utcnow())
    svg = line_chart(
        [(float(x), float(n)) for x, n in points],
        title=f"Bids per minute, the last {BID_MINUTES} minutes",
        x_label="minutes from now",
        y_label="bids",
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)


@router.get("/market/usage.svg")
def usage_chart(request: Request, signed: Signed) -> Response:
    with store_of(request).read() as s:
        points = usage_per_hour(s, signed.actor, utcnow())
    svg = line_chart(
        [(float(x), n / 1e6) for x, n in points],
        title=f"Usage per hour, the last {USAGE_HOURS} hours",
        x_label="hours from now",
        y_label="MB delivered",
    )
    return Response(svg, media_type="image/svg+xml", headers=SVG)


# The domain's field names (`InvalidInput.field`) to the key form's fields.
KEY_FIELDS = {"kind": "kind", "label": "label", "idempotency_key": "_form"}


def _issue(
    request: Request, signed, form: Form, kind: str, ident: int, label: str
) -> dict | BrokerError:
    """`issue_key` under the form's idempotency key, as ``POST /v1/keys``: the issued key (its
    token only when this call made it: a form sent again gets ``None``), or the refusal."""
    token: list[str] = []
    try:
        with store_of(request).write() as s:

            def run() -> ApiKey:
                row, secret = issue_key(s, signed.actor, kind, ident, label)
                token.append(secret)
                return row

            row = once(
                s,
                signed.actor,
                form.text("idempotency_key") or None,
                "key.issue",
                {"kind": kind, "id": ident, "label": label},
                ApiKey,
                run,
            )
            issued = {"prefix": row.prefix, "kind": kind, "id": ident, "label": row.label}
    except BrokerError as exc:
        return exc
    issued["token"] = token[0] if token else None
    return issued


@router.post("/market/keys")
def key_issue(request: Request, signed: Signed, form: Posted) -> Response:
    """Issue an API key (as ``POST /v1/keys``, with the form's idempotency key): its token is
    shown on the answer only, never stored, never in an address; a form sent twice issues
    one key and the second answer says the token was shown by the first."""
    require_admin(signed.actor, "issue keys from the console")
    kind = form.text("kind")
    ident = form.integer("id", required=True)
    label = form.values.get("label", "")
    if kind not in KINDS:
        form.refuse("kind", f"one of {', '.join(KINDS)}")
    if form.errors:
        return _market_page(request, signed, key_form=form, status=422)
    assert ident is not None  # required
    issued = _issue(request, signed, form, kind, ident, label)
    if isinstance(issued, NotFound):  # the principal named
        form.refuse("id", issued.message)
        return _market_page(request, signed, key_form=form, status=422)
    if isinstance(issued, BrokerError):
        form.refuse(KEY_FIELDS.get(issued.field or "", "_form"), issued.message)
        return _market_page(request, signed, key_form=form, status=issued.http_status)
    return _market_page(request, signed, issued=issued, status=201 if issued["token"] else 200)


@router.post("/market/keys/{prefix}/revoke")
def key_revoke(request: Request, signed: Signed, prefix: str, _form: Posted) -> Response:
    """Revoke a key (as ``DELETE /v1/keys/{prefix}``): its sessions end at once; revoking it
    again changes nothing."""
    require_admin(signed.actor, "revoke keys from the console")
    with store_of(request).write() as s:
        revoke_key(s, signed.actor, prefix)
    return RedirectResponse("/market#keys", status_code=303)


# -- every principal's own keys (the Keys page) -------------------------------------------------


def own_keys(session: Session, actor: Actor) -> list[dict]:
    """The keys of the signed-in principal itself, newest first: prefix, label, issued,
    revoked (the secret is never kept; nor is a key's last use)."""
    column = getattr(ApiKey, f"{actor.kind}_id")
    return [
        {
            "prefix": k.prefix,
            "label": k.label,
            "created_at": k.created_at,
            "revoked_at": k.revoked_at,
        }
        for k in session.scalars(
            select(ApiKey).where(column == actor.id).order_by(ApiKey.id.desc())
        )
    ]


def _session_key(session: Session, signed) -> str:
    """The prefix of the key this console session signed in with."""
    return session.execute(
        select(ApiKey.prefix)
        .join(ConsoleSession, ConsoleSession.api_key_id == ApiKey.id)
        .where(ConsoleSession.id == signed.session_id)
    ).scalar_one()


def _keys_page(
    request: Request,
    signed,
    *,
    key_form: Form | None = None,
    issued: dict | None = None,
    status: int = 200,
) -> Response:
    actor = signed.actor
    with store_of(request).read() as s:
        mine = own_keys(s, actor)
        this_one = _session_key(s, signed)
    form = key_form or Form({})
    return render(
        request,
        "keys.html",
        signed,
        status=status,
        keys=mine,
        this_key=this_one,
        # Whom `issue_key` lets issue a key for itself (a device or phone number may not).
        may_issue=_manages(actor, actor),
        key_form=form,
        key_key=form_key() if issued or not key_form else form.text("idempotency_key"),
        issued=issued,
    )


@router.get("/keys")
def keys_page(request: Request, signed: Signed) -> Response:
    return _keys_page(request, signed)


@router.post("/keys")
def own_key_issue(request: Request, signed: Signed, form: Posted) -> Response:
    """A new key for the signed-in principal itself (as ``POST /v1/keys`` with its own kind
    and id): the token on this answer only; the same form sent twice issues one key."""
    actor = signed.actor
    label = form.values.get("label", "")
    issued = _issue(request, signed, form, actor.kind, actor.id, label)
    if isinstance(issued, BrokerError):
        if issued.http_status in (403, 404):
            raise issued
        form.refuse(KEY_FIELDS.get(issued.field or "", "_form"), issued.message)
        return _keys_page(request, signed, key_form=form, status=issued.http_status)
    return _keys_page(request, signed, issued=issued, status=201 if issued["token"] else 200)


@router.post("/keys/{prefix}/revoke")
def own_key_revoke(request: Request, signed: Signed, prefix: str, _form: Posted) -> Response:
    """Revoke one of the principal's keys (as ``DELETE /v1/keys/{prefix}``: another's is
    refused as the API refuses it); its console sessions end at once, this one among them
    when it signed in with that key."""
    with store_of(request).write() as s:
        ended_here = _session_key(s, signed) == prefix
        revoke_key(s, signed.actor, prefix)
    if ended_here:
        answer = RedirectResponse("/signin", status_code=303)
        answer.delete_cookie(sessions.COOKIE, path="/")
        return answer
    return RedirectResponse("/keys", status_code=303)
