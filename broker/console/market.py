"""The market's pages: requests, auctions (bids, reputations, the close), awards and jobs.

Every read and write goes through the domain functions the API routes call, with the signed-in
`Actor`: a page shows what the same key would get from ``/v1`` and nothing more, and a form does
what the matching API call does (its refusals shown beside the field they name).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select

from broker import auctions, awards, groups, negotiation, requests
from broker.api.deps import id_path, policy_of, store_of
from broker.bounds import INT64_MAX
from broker.clock import utcnow
from broker.console.forms import FIELDS, Form, major
from broker.console.paging import newest_page, rows_of
from broker.console.site import ConsoleRoute, Posted, Signed, provider_names, render, require_side
from broker.errors import BrokerError, Conflict, InvalidInput, NotFound
from broker.models import Auction, Award, DeliveryJob, Negotiation, Provider, User
from broker.views import (
    auction_view,
    award_view,
    job_view,
    negotiation_view,
    request_view,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
LISTED = 50  # rows per list page: the newest
RequestId = Annotated[int, id_path("a request's id")]
AuctionId = Annotated[int, id_path("an auction's id")]


def _refusal(form: Form, exc: InvalidInput) -> None:
    form.refuse(FIELDS.get(exc.field or "", "_form"), exc.message)


# -- requests ------------------------------------------------------------------------------


# A list page's ``?after=ID``: the rows older than that id (the "older" link's target).
After = Annotated[int | None, Query(ge=1, le=INT64_MAX)]


def _page(found: list, after: int | None) -> tuple[list, int | None]:
    """The newest `LISTED` of ``found`` (fetched one longer) and the id the "older" link
    starts after, or None when there is nothing older."""
    return found[:LISTED], found[LISTED - 1].id if len(found) > LISTED else None


@router.get("/requests")
def request_list(request: Request, signed: Signed, after: After = None) -> Response:
    with store_of(request).read() as s:
        found = requests.list_requests(s, signed.actor, after=after, limit=LISTED + 1)
        shown, older = _page(found, after)
        rows = [request_view(r) for r in shown]
    return render(request, "requests.html", signed, rows=rows, older=older, after=after)


def _home_currency(request: Request, signed) -> str:
    with store_of(request).read() as s:
        if signed.actor.user_id is None:
            return "EUR"
        return s.get_one(User, signed.actor.user_id).home_provider.policy.currency


def _request_form(request: Request, signed, form: Form, *, status: int = 200) -> Response:
    return render(
        request,
        "request_new.html",
        signed,
        status=status,
        form=form,
        currency=_home_currency(request, signed),
    )


@router.get("/requests/new")
def request_new(request: Request, signed: Signed) -> Response:
    require_side(signed, "user")
    start = utcnow().replace(second=0, microsecond=0) + timedelta(hours=1)
    form = Form(
        {
            "services": "anonymize",
            "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "max_rate": "10",
        }
    )
    return _request_form(request, signed, form)


@router.post("/requests/new")
def request_create(request: Request, signed: Signed, form: Posted) -> Response:
    require_side(signed, "user")
    currency = _home_currency(request, signed)
    services = [s.strip() for s in form.text("services").split(",") if s.strip()]
    if not services:
        form.refuse("services", "name at least one service")
    starts_at, ends_at = form.utc_time("starts_at"), form.utc_time("ends_at")
    volume_bytes = form.integer("volume_bytes")
    min_rate, max_rate = form.rate("min_rate"), form.rate("max_rate")
    max_price = form.money("max_price", currency)
    members = form.members("members")
    data_cap = form.integer("data_cap")
    group = form.text("group") == "yes"
    source, sink = form.text("source") or None, form.text("sink") or None
    sealed = [n.strip() for n in form.text("sealed_params").split(",") if n.strip()]
    if not form.errors:
        try:
            with store_of(request).write() as s:
                made = requests.submit_request(
                    s,
                    signed.actor,
                    services=services,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    volume_bytes=volume_bytes,
                    min_rate_bps=min_rate,
                    max_rate_bps=max_rate,
                    max_price_minor=max_price,
                    members=members,
                    data_cap_bytes=data_cap,
                    group=group,
                    source=source,
                    sink=sink,
                    sealed_params=sealed or None,
                )
                made_id = made.id
        except InvalidInput as exc:
            if (exc.field or "").startswith("members"):
                form.refuse("members", exc.message)
            else:
                _refusal(form, exc)
        except NotFound as exc:  # a recipient that is not there
            form.refuse("members", exc.message)
    if form.errors:
        return _request_form(request, signed, form, status=422)
    return RedirectResponse(f"/requests/{made_id}", status_code=303)


def request_page_with(request: Request, signed, request_id: int, **extra) -> Response:
    """The request's page; ``form``/``negotiation_form``: a refused form shown again."""
    actor = signed.actor
    with store_of(request).read() as s:
        r = requests.get_request(s, actor, request_id)
        shown = request_view(r)
        sold = list(
            s.scalars(select(Auction).where(Auction.request_id == r.id).order_by(Auction.id))
        )
        its_auctions = [
            {"id": a.id, "status": a.status, "closes_at": a.closes_at, "reason": a.reason}
            for a in sold
        ]
        its_awards = [
            award_view(a)
            for a in s.scalars(select(Award).where(Award.request_id == r.id).order_by(Award.id))
        ]
        its_negotiations = [
            negotiation_view(negotiation.get_negotiation(s, actor, n.id))
            for n in s.scalars(
                select(Negotiation).where(Negotiation.request_id == r.id).order_by(Negotiation.id)
            )
        ]
        may_negotiate = r.status == "brokering" and actor.speaks_for_user(r.user_id)
        may_cancel = r.status in ("pledging", "brokering") and actor.speaks_for_user(r.user_id)
        pledges = groups.group_of_request(s, r.id)
        group_id = pledges.id if pledges is not None else None
        negotiable = (
            [(p.id, p.name) for p in requests.eligible_providers(s, r, limit=LISTED)]
            if may_negotiate
            else []
        )
        may_auction = (
            r.status == "brokering"
            and r.is_block
            and not any(a.status == "open" for a in sold)
            and (actor.speaks_for_user(r.user_id) or actor.speaks_for_provider(r.home_provider_id))
        )
        names = provider_names(
            s,
            [r.home_provider_id]
            + [w["provider_id"] for w in its_awards]
            + [n["provider_id"] for n in its_negotiations],
        )
    form = extra.pop("form", None) or Form({"closes_in": "600", "quantity": "1"})
    return render(
        request,
        "request.html",
        signed,
        names=names,
        status=extra.pop("status", 200),
        r=shown,
        auctions=its_auctions,
        awards=its_awards,
        may_auction=may_auction,
        form=form,
        negotiations=its_negotiations,
        may_cancel=may_cancel,
        group_id=group_id,
        message=extra.pop("message", ""),
        negotiable=negotiable,
        negotiation_form=extra.pop("negotiation_form", None)
        or Form({"deadline_in": "60", "mode": "user"}),
        reserve=major(shown["max_price_minor"], shown["currency"]),
    )


@router.get("/requests/{request_id}")
def request_page(request: Request, signed: Signed, request_id: RequestId) -> Response:
    return request_page_with(request, signed, request_id)


@router.post("/requests/{request_id}/auction")
def auction_open(request: Request, signed: Signed, form: Posted, request_id: RequestId) -> Response:
    with store_of(request).read() as s:
        currency = requests.get_request(s, signed.actor, request_id).currency
    seconds = form.integer("closes_in", low=5, required=True)
    reserve = form.money("reserve_price", currency, required=True)
    quantity = form.integer("quantity") or 1
    if reserve == 0:
        form.refuse("reserve_price", "more than zero")
    if not form.errors:
        assert seconds is not None and reserve is not None
        try:
            with store_of(request).write() as s:
                opened = auctions.open_auction(
                    s,
                    signed.actor,
                    request_id,
                    closes_at=utcnow() + timedelta(seconds=seconds),
                    reserve_price_minor=reserve,
                    quantity=quantity,
                )
                opened_id = opened.id
        except InvalidInput as exc:
            _refusal(form, exc)
    if form.errors:
        return request_page_with(request, signed, request_id, form=form, status=422)
    return RedirectResponse(f"/auctions/{opened_id}", status_code=303)


@router.post("/requests/{request_id}/cancel")
def request_cancel(
    request: Request, signed: Signed, _form: Posted, request_id: RequestId
) -> Response:
    try:
        with store_of(request).write() as s:
            requests.cancel_request(s, signed.actor, request_id)
    except Conflict as exc:
        return request_page_with(request, signed, request_id, status=409, message=exc.message)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


# -- auctions ------------------------------------------------------------------------------


AUCTION_STATES = ("open", "closed", "failed")


@router.get("/auctions")
def auction_list(
    request: Request,
    signed: Signed,
    status: Annotated[str | None, Query(pattern="^(open|closed|failed)$")] = None,
    after: After = None,
) -> Response:
    """All three lists, newest first; with ``status`` and ``after``, that list's older page."""
    actor, policy = signed.actor, policy_of(request)
    listed, older = {}, {}
    with store_of(request).read() as s:
        for state in (status,) if status else AUCTION_STATES:
            found = auctions.list_auctions(s, actor, status=state, after=after, limit=LISTED + 1)
            shown, older[state] = _page(found, after)
            listed[state] = [auction_view(s, actor, a.id, policy=policy) for a in shown]
    return render(
        request, "auctions.html", signed, listed=listed, older=older, after=after, now=utcnow()
    )


def _auction_page(request: Request, signed, auction_id: int, **extra) -> Response:
    actor = signed.actor
    now = utcnow()
    with store_of(request).read() as s:
        shown = auction_view(s, actor, auction_id, policy=policy_of(request), now=now)
        names = dict(
            s.execute(
                select(Provider.id, Provider.name).where(
                    Provider.id.in_(sorted(actor.provider_ids))
                )
            ).all()
        )
        a = auctions.get_auction(s, auction_id)
        is_open = a.status == "open"
        due = is_open and now >= a.closes_at
        may_close = due and (
            auctions.is_request_side(actor, a)
            or any(b["provider_id"] in actor.provider_ids for b in shown["bids"])
        )
    own_bids = [b for b in shown["bids"] if b["provider_id"] in actor.provider_ids]
    bidding_as = sorted(names.items())
    form = extra.pop("form", None) or Form(
        {
            "price": own_bids[0]["price_minor"]
            and major(own_bids[0]["price_minor"], shown["currency"])
        }
        if own_bids
        else {}
    )
    return render(
        request,
        "auction.html",
        signed,
        status=extra.pop("status", 200),
        a=shown,
        own_bids=own_bids,
        may_bid=is_open and not due and bool(bidding_as),
        bidding_as=bidding_as,
        may_close=may_close,
        due=due,
        form=form,
        message=extra.pop("message", ""),
    )


@router.get("/auctions/{auction_id}")
def auction_page(request: Request, signed: Signed, auction_id: AuctionId) -> Response:
    return _auction_page(request, signed, auction_id)


@router.post("/auctions/{auction_id}/bids")
def bid(request: Request, signed: Signed, form: Posted, auction_id: AuctionId) -> Response:
    require_side(signed, "provider")
    with store_of(request).read() as s:
        view = auction_view(s, signed.actor, auction_id, policy=policy_of(request))
    provider_id = form.integer("provider_id", required=True)
    price = form.money("price", view["currency"], required=True)
    if not form.errors:
        assert provider_id is not None and price is not None
        try:
            with store_of(request).write() as s:
                auctions.submit_bid(
                    s, signed.actor, auction_id, provider_id=provider_id, price_minor=price
                )
        except InvalidInput as exc:
            _refusal(form, exc)
        except Conflict as exc:
            return _auction_page(
                request, signed, auction_id, form=form, status=409, message=exc.message
            )
    if form.errors:
        return _auction_page(request, signed, auction_id, form=form, status=422)
    return RedirectResponse(f"/auctions/{auction_id}", status_code=303)


@router.post("/auctions/{auction_id}/close")
def close(request: Request, signed: Signed, _form: Posted, auction_id: AuctionId) -> Response:
    try:
        with store_of(request).write() as s:
            auctions.close_auction(s, signed.actor, auction_id, policy=policy_of(request))
    except Conflict as exc:
        return _auction_page(request, signed, auction_id, status=409, message=exc.message)
    return RedirectResponse(f"/auctions/{auction_id}", status_code=303)


def _viewable(request: Request, signed: Signed, auction_id: AuctionId) -> int:
    """Checked before the stream starts: a refusal is a page, not a stream cut short."""
    with store_of(request).read() as s:
        auction_view(s, signed.actor, auction_id, policy=policy_of(request))
    return auction_id


@router.get("/auctions/{auction_id}/events", response_class=EventSourceResponse)
async def auction_events(
    request: Request, signed: Signed, auction_id: Annotated[int, Depends(_viewable)]
) -> AsyncIterator[ServerSentEvent]:
    """The auction's status, bid count and bidders (reputation and measured record, never a
    price) as server-sent events, sent when they change, for as long as the actor may see it
    (the same `auction_view` as the page, every poll)."""
    options = request.app.state.event_stream
    ends = time.monotonic() + options["seconds"]
    store, policy = store_of(request), policy_of(request)

    def look() -> dict | None:
        try:
            with store.read() as s:
                view = auction_view(s, signed.actor, auction_id, policy=policy)
        except BrokerError:
            return None
        # The bidders as the page's table shows them: who, reputation, measured record; the
        # view has sealed the prices already, and none are sent here.
        bidders = [
            {
                "provider_id": b["provider_id"],
                "provider": b["provider"],
                "score": b["reputation"]["score"],
                "ratings": b["reputation"]["count"],
                "delivery": b["delivery"]["summary"],
            }
            for b in view["bidders"]
        ]
        return {"status": view["status"], "bid_count": view["bid_count"], "bidders": bidders}

    yield ServerSentEvent(comment="pktx console auction", retry=options["retry_ms"])
    last = None
    while time.monotonic() < ends and not await request.is_disconnected():
        now = await anyio.to_thread.run_sync(look)
        if now is None:
            return
        if now != last:
            last = now
            yield ServerSentEvent(event="update", data=now)
        await anyio.sleep(options["poll"])


# -- awards and jobs -----------------------------------------------------------------------


@router.get("/awards")
def award_list(
    request: Request, signed: Signed, after: After = None, jobs_after: After = None
) -> Response:
    """The awards (newest 50, ``after``: older ones) and, for a provider or network, its
    providers' delivery jobs (newest 50 of them all, ``jobs_after``: older ones), each job read
    through `awards.list_jobs` as ``GET /v1/providers/{id}/jobs``."""
    actor = signed.actor
    with store_of(request).read() as s:
        shown, older = _page(awards.list_awards(s, actor, after=after, limit=LISTED + 1), after)
        rows = [award_view(a) for a in shown]
        newest = (
            select(DeliveryJob.id, DeliveryJob.provider_id)
            .where(DeliveryJob.provider_id.in_(sorted(actor.provider_ids)))
            .order_by(DeliveryJob.id.desc())
            .limit(LISTED + 1)
        )
        if jobs_after is not None:
            newest = newest.where(DeliveryJob.id < jobs_after)
        found = s.execute(newest).all()
        job_ids, older_jobs = newest_page([job_id for job_id, _ in found])

        def fetch(provider_id: int) -> Callable[[int, int], list]:
            return lambda a, n: awards.list_jobs(s, actor, provider_id, after=a, limit=n)

        jobs = [
            job_view(j)
            for provider_id in sorted(actor.provider_ids)
            for j in rows_of(
                fetch(provider_id), [i for i, p in found if p == provider_id and i in job_ids]
            )
        ]
        jobs.sort(key=lambda j: j["id"], reverse=True)
        names = provider_names(
            s, [w["provider_id"] for w in rows] + [j["provider_id"] for j in jobs]
        )
    return render(
        request,
        "awards.html",
        signed,
        names=names,
        rows=rows,
        jobs=jobs,
        older=older,
        after=after,
        older_jobs=older_jobs,
        jobs_after=jobs_after,
    )


# A group request's pledges: their own module, served under this router.
from broker.console import pledging  # noqa: E402

router.include_router(pledging.router)
