"""Market routes: service requests and their groups (pledges)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from broker import groups, requests
from broker.api.deps import CurrentActor, IdemKey, Paging, id_path, policy_of, store_of
from broker.api.responses import GroupOut, Page, ProviderOut, RequestOut
from broker.api.schemas import PledgeIn, RequestIn
from broker.views import provider_view, request_view

router = APIRouter(tags=["market"])
RequestId = Annotated[int, id_path("a request's id")]
GroupId = Annotated[int, id_path("a group's id")]


def _request(s, r) -> dict:
    group = groups.group_of_request(s, r.id)
    return dict(request_view(r), group_id=group.id if group else None)


@router.post("/requests", status_code=201, response_model=RequestOut)
def post_request(
    body: RequestIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """Ask the home provider for a service; it serves it or opens it to brokering."""
    with store_of(request).write() as s:
        r = requests.submit_request(
            s,
            actor,
            services=body.services,
            device_id=body.device_id,
            volume_bytes=body.volume_bytes,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            min_rate_bps=body.min_rate_bps,
            max_rate_bps=body.max_rate_bps,
            data_cap_bytes=body.data_cap_bytes,
            max_price_minor=body.max_price_minor,
            currency=body.currency,
            members=[m.model_dump() for m in body.members],
            group=body.group,
            source=body.source,
            sink=body.sink,
            sealed_params=body.sealed_params,
            idempotency_key=key,
        )
        return _request(s, r)


@router.get("/requests", response_model=Page[RequestOut])
def get_requests(request: Request, actor: CurrentActor, page: Paging) -> dict:
    """The caller's requests (a provider: its customers'), newest first."""
    with store_of(request).read() as s:
        rows = requests.list_requests(s, actor, after=page.after, limit=page.limit + 1)
        return page.answer(rows, lambda r: _request(s, r))


@router.get("/requests/{request_id}", response_model=RequestOut)
def get_request(request_id: RequestId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return _request(s, requests.get_request(s, actor, request_id))


@router.get("/requests/{request_id}/candidates", response_model=Page[ProviderOut])
def get_candidates(
    request_id: RequestId, request: Request, actor: CurrentActor, page: Paging
) -> dict:
    """Providers of other networks that could take the request, with their reputations."""
    with store_of(request).read() as s:
        r = requests.get_request(s, actor, request_id)
        rows = requests.eligible_providers(s, r, after=page.after, limit=page.limit + 1)
        return page.answer(rows, lambda p: provider_view(s, p.id, policy=policy_of(request)))


@router.post("/requests/{request_id}/cancel", response_model=RequestOut)
def cancel(
    request_id: RequestId, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """The user (or one of its devices) withdraws a request still pledging or brokering."""
    with store_of(request).write() as s:
        return _request(s, requests.cancel_request(s, actor, request_id, idempotency_key=key))


@router.get("/groups/{group_id}", response_model=GroupOut)
def get_group(group_id: GroupId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return groups.group_view(s, actor, group_id)


@router.post("/groups/{group_id}/pledges", status_code=201, response_model=GroupOut)
def post_pledge(
    group_id: GroupId, body: PledgeIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        groups.pledge(s, actor, group_id, body.max_minor, idempotency_key=key)
        return groups.group_view(s, actor, group_id)


@router.delete("/groups/{group_id}/pledges/mine", response_model=GroupOut)
def delete_pledge(
    group_id: GroupId, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        groups.withdraw(s, actor, group_id, idempotency_key=key)
        return groups.group_view(s, actor, group_id)


@router.post("/groups/{group_id}/close", response_model=RequestOut)
def close_group(
    group_id: GroupId, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    """The organizer closes pledging; the request is decided with the pledges as budget."""
    with store_of(request).write() as s:
        return _request(s, requests.close_pledges(s, actor, group_id, idempotency_key=key))
