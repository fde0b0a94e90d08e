"""Sealed service parameters: a provider's sealing key, an award's box (docs/daemon.md,
"Sealed service parameters"). No answer here ever holds a box: the claiming daemon gets it in
its claim's answer (`broker.api.routes.dispatch`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request

from broker import sealing
from broker.api.deps import CurrentActor, id_path, store_of
from broker.api.responses import AwardSealingOut, SealingKeyOut
from broker.api.schemas import SealedBoxIn, SealingKeyIn

router = APIRouter(tags=["sealing"])
AwardId = Annotated[int, id_path("an award's id")]
ProviderId = Annotated[int, id_path("a provider's id")]


@router.put("/providers/{provider_id}/sealing-key", response_model=SealingKeyOut)
def put_sealing_key(
    provider_id: ProviderId, body: SealingKeyIn, request: Request, actor: CurrentActor
) -> dict:
    """Publish the X25519 public key the provider's daemons hold the private key of (the
    provider's key only). The same key again: the same answer; another key: 409 unless
    ``replace`` (a rotation)."""
    with store_of(request).write() as s:
        return sealing.key_view(
            sealing.register_key(s, actor, provider_id, body.public_key, replace=body.replace)
        )


@router.get("/providers/{provider_id}/sealing-key", response_model=SealingKeyOut)
def get_sealing_key(provider_id: ProviderId, request: Request, actor: CurrentActor) -> dict:
    """The provider's public sealing key (404 before its daemons published one)."""
    with store_of(request).read() as s:
        return sealing.key_view(sealing.get_key(s, provider_id))


@router.get("/awards/{award_id}/sealed-params", response_model=AwardSealingOut)
def get_sealed_params(award_id: AwardId, request: Request, actor: CurrentActor) -> dict:
    """For the award's parties: the names of its sealed parameters, the delivering provider's
    key to seal them to, and whether they were sealed (never the box)."""
    with store_of(request).read() as s:
        return sealing.award_sealing(s, actor, award_id)


@router.put("/awards/{award_id}/sealed-params", response_model=AwardSealingOut)
def put_sealed_params(
    award_id: AwardId, body: SealedBoxIn, request: Request, actor: CurrentActor
) -> dict:
    """The award's secret parameters sealed to its provider's key (its requester or a payer
    only; while its job is queued). The job becomes claimable by a daemon holding that key."""
    with store_of(request).write() as s:
        return sealing.put_box(s, actor, award_id, body.sealed_to, body.box)
