"""Directory routes: networks, providers, users, devices, phone numbers, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from broker import directory
from broker.actors import issue_key, revoke_key
from broker.api.deps import CurrentActor, IdemKey, id_path, policy_of, store_of
from broker.api.responses import (
    DeviceOut,
    KeyIssued,
    KeyRevoked,
    Me,
    NetworkOut,
    PhoneOut,
    ProviderOut,
    UserOut,
)
from broker.api.schemas import (
    DeviceIn,
    KeyIn,
    NetworkIn,
    PhoneIn,
    ProviderIn,
    ProviderPatch,
    UserIn,
)
from broker.idempotency import once
from broker.models import ApiKey, Device, Network, PhoneNumber, Provider, User
from broker.views import provider_view, user_view

router = APIRouter(tags=["directory"])
ProviderId = Annotated[int, id_path("a provider's id")]
UserId = Annotated[int, id_path("a user's id")]


@router.get("/me", response_model=Me)
def me(actor: CurrentActor) -> dict:
    """Who the API key authenticates as."""
    return {
        "kind": actor.kind,
        "id": actor.id,
        "user_id": actor.user_id,
        "device_id": actor.device_id,
        "network_id": actor.network_id,
        "provider_ids": sorted(actor.provider_ids),
    }


@router.post("/networks", status_code=201, response_model=NetworkOut)
def post_network(
    body: NetworkIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        n = once(
            s,
            actor,
            key,
            "network.create",
            body.model_dump(),
            Network,
            lambda: directory.create_network(s, actor, body.name),
        )
        return {"id": n.id, "name": n.name}


@router.post("/providers", status_code=201, response_model=ProviderOut)
def post_provider(
    body: ProviderIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        p = once(
            s,
            actor,
            key,
            "provider.create",
            body.model_dump(),
            Provider,
            lambda: directory.create_provider(
                s,
                actor,
                network_id=body.network_id,
                name=body.name,
                services=body.services,
                capacity_bps=body.capacity_bps,
                currency=body.currency,
                per_gb_minor=body.per_gb_minor,
                per_mbps_hour_minor=body.per_mbps_hour_minor,
                reservation_ppm=body.reservation_ppm,
                concession_beta_ppm=body.concession_beta_ppm,
                mode=body.mode,
            ),
        )
        return provider_view(s, p.id, policy=policy_of(request))


@router.patch("/providers/{provider_id}", response_model=ProviderOut)
def patch_provider(
    provider_id: ProviderId,
    body: ProviderPatch,
    request: Request,
    actor: CurrentActor,
    key: IdemKey = None,
) -> dict:
    changes = body.model_dump(exclude_none=True)
    with store_of(request).write() as s:
        once(
            s,
            actor,
            key,
            "provider.update",
            {"provider": provider_id, **changes},
            Provider,
            lambda: directory.update_provider(s, actor, provider_id, **changes),
        )
        return provider_view(s, provider_id, policy=policy_of(request))


@router.get("/providers/{provider_id}", response_model=ProviderOut)
def get_provider(provider_id: ProviderId, request: Request, _actor: CurrentActor) -> dict:
    """A provider's public card with its reputation (score and rating count)."""
    with store_of(request).read() as s:
        return provider_view(s, provider_id, policy=policy_of(request))


@router.post("/users", status_code=201, response_model=UserOut)
def post_user(body: UserIn, request: Request, actor: CurrentActor, key: IdemKey = None) -> dict:
    with store_of(request).write() as s:
        u = once(
            s,
            actor,
            key,
            "user.create",
            body.model_dump(),
            User,
            lambda: directory.create_user(
                s, actor, name=body.name, home_provider_id=body.home_provider_id
            ),
        )
        return user_view(s, actor, u.id, policy=policy_of(request))


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: UserId, request: Request, actor: CurrentActor) -> dict:
    with store_of(request).read() as s:
        return user_view(s, actor, user_id, policy=policy_of(request))


@router.post("/users/{user_id}/devices", status_code=201, response_model=DeviceOut)
def post_device(
    user_id: UserId, body: DeviceIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        d = once(
            s,
            actor,
            key,
            "device.create",
            {"user": user_id, **body.model_dump()},
            Device,
            lambda: directory.add_device(s, actor, user_id=user_id, name=body.name),
        )
        return {"id": d.id, "user_id": d.user_id, "name": d.name}


@router.post("/users/{user_id}/phone-numbers", status_code=201, response_model=PhoneOut)
def post_phone(
    user_id: UserId, body: PhoneIn, request: Request, actor: CurrentActor, key: IdemKey = None
) -> dict:
    with store_of(request).write() as s:
        p = once(
            s,
            actor,
            key,
            "phone.create",
            {"user": user_id, **body.model_dump()},
            PhoneNumber,
            lambda: directory.add_phone_number(
                s,
                actor,
                user_id=user_id,
                number=body.number,
                region=body.region,
                device_id=body.device_id,
            ),
        )
        return {"id": p.id, "user_id": p.user_id, "e164": p.e164, "device_id": p.device_id}


@router.post("/keys", status_code=201, response_model=KeyIssued)
def post_key(body: KeyIn, request: Request, actor: CurrentActor, key: IdemKey = None) -> dict:
    """Issue an API key; the token is in this response only (it is stored hashed)."""
    token: list[str] = []

    def run() -> ApiKey:
        row, secret = issue_key(s, actor, body.kind, body.id, body.label)
        token.append(secret)
        return row

    with store_of(request).write() as s:
        row = once(s, actor, key, "key.issue", body.model_dump(), ApiKey, run)
        return {
            "prefix": row.prefix,
            "kind": body.kind,
            "id": body.id,
            "label": row.label,
            "token": token[0] if token else None,
            "note": "store the token now: it is not shown again"
            if token
            else "a retry: the token was returned by the first call only",
        }


@router.delete("/keys/{prefix}", response_model=KeyRevoked)
def delete_key(prefix: str, request: Request, actor: CurrentActor, key: IdemKey = None) -> dict:
    with store_of(request).write() as s:
        row = once(
            s,
            actor,
            key,
            "key.revoke",
            {"prefix": prefix},
            ApiKey,
            lambda: revoke_key(s, actor, prefix),
        )
        return {"prefix": row.prefix, "revoked_at": row.revoked_at}
