"""Service parameters sealed to the delivering provider (docs/daemon.md, "Sealed service
parameters").

A provider's daemons publish one X25519 public key (`register_key`). A request may name secret
service parameters (``sealed_params``: ``encrypt.key``, ``anonymize.key``); its award then
waits for them: its requester (or a payer) reads the winner's key (`award_sealing`), seals the
values to it on its own machine and posts the box (`put_box`). The broker keeps the box as it
came and hands it to one caller only: the daemon of the award's provider that claims the job
holding the key it was sealed to (`broker.dispatch.claim`, `claimed_box`). The box is in no
view, log line or error message; the broker never holds what opens it.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.awards import get_award
from broker.clock import resolve_now
from broker.errors import Conflict, InvalidInput, NotFound, NotYours, WrongState
from broker.models import Award, DeliveryJob, ProviderSealingKey, SealedParams, ServiceRequest
from engine.daemon.sealing import MAX_BOX, OVERHEAD, PUBLIC_SIZE, fingerprint

# A box: a version byte, an ephemeral public key, the ciphertext (of "{}" at least) and its tag.
BOX_SIZE = (OVERHEAD + 2, MAX_BOX)


def _raw(text: object, *, field: str, sizes: tuple[int, int], what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} is base64 text", field=field)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not base64", field=field) from None
    if not sizes[0] <= len(raw) <= sizes[1]:
        span = f"{sizes[0]}" if sizes[0] == sizes[1] else f"{sizes[0]}..{sizes[1]}"
        raise InvalidInput(f"{what} is {span} bytes, not {len(raw)}", field=field)
    return raw


def check_public_key(text: object, *, field: str = "public_key") -> str:
    """``text`` if it is an X25519 public key in base64 (32 bytes)."""
    raw = _raw(text, field=field, sizes=(PUBLIC_SIZE, PUBLIC_SIZE), what="a sealing key")
    return base64.b64encode(raw).decode()


def check_names(names, chain: tuple[str, ...], *, field: str = "sealed_params") -> str | None:
    """``SERVICE.PARAM`` names of secret parameters of services in ``chain``, as stored
    (comma-separated; None for none)."""
    from engine.services import ServiceError, service_class

    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise InvalidInput("sealed_params is a list of SERVICE.PARAM names", field=field)
    out: list[str] = []
    for name in names:
        service, dot, param = name.partition(".") if isinstance(name, str) else ("", "", "")
        if not (dot and service and param):
            raise InvalidInput(
                f"a sealed parameter is named SERVICE.PARAM, not {name!r}"[:200], field=field
            )
        if service not in chain:
            raise InvalidInput(
                f"sealed parameter {name}: {service} is not in the chain {','.join(chain)}",
                field=field,
            )
        try:
            declared = {p.name for p in service_class(service).params if p.secret}
        except ServiceError:
            declared = set()
        if param not in declared:
            raise InvalidInput(
                f"sealed parameter {name}: {service} has no secret parameter "
                f"{param!r} (secret: {', '.join(sorted(declared)) or 'none'})",
                field=field,
            )
        if name not in out:
            out.append(name)
    if not out:
        return None
    text = ",".join(out)
    if len(text) > 200:
        raise InvalidInput("sealed_params names at most 200 characters", field=field)
    return text


# -- the provider's key ------------------------------------------------------------------------
def register_key(
    session: Session,
    actor: Actor,
    provider_id: int,
    public_key: str,
    *,
    replace: bool = False,
    now: datetime | None = None,
) -> ProviderSealingKey:
    """Publish ``public_key`` as the sealing key of ``provider_id``'s daemons. The same key
    again changes nothing; another key replaces it only with ``replace`` (a rotation: boxes
    sealed to the old key no longer reach a daemon), else `Conflict`."""
    if not actor.speaks_for_provider(provider_id):
        raise NotYours(
            f"{actor} does not speak for provider {provider_id}", where=f"provider {provider_id}"
        )
    public_key = check_public_key(public_key)
    now = resolve_now(now)
    row = session.get(ProviderSealingKey, provider_id, with_for_update=True)
    if row is None:
        row = ProviderSealingKey(provider_id=provider_id, public_key=public_key, updated_at=now)
        session.add(row)
    elif row.public_key != public_key:
        if not replace:
            raise Conflict(
                f"provider {provider_id}'s daemons seal with key "
                f"{fingerprint(row.public_key)}, not {fingerprint(public_key)}: "
                f"give this daemon that key's file, or replace the key (a "
                f"rotation)",
                where=f"provider {provider_id}",
                field="public_key",
            )
        row.public_key, row.updated_at = public_key, now
    session.flush()
    return row


def get_key(session: Session, provider_id: int) -> ProviderSealingKey:
    row = session.get(ProviderSealingKey, provider_id)
    if row is None:
        raise NotFound("sealing key of provider", provider_id)
    return row


def key_view(row: ProviderSealingKey) -> dict:
    return {
        "provider_id": row.provider_id,
        "public_key": row.public_key,
        "fingerprint": fingerprint(row.public_key),
        "updated_at": row.updated_at,
    }


# -- an award's box ----------------------------------------------------------------------------
def _sealers(session: Session, award: Award) -> set[int]:
    requester = session.get_one(ServiceRequest, award.request_id).user_id
    return {requester, *(p.user_id for p in award.payers)}


def award_sealing(session: Session, actor: Actor, award_id: int) -> dict:
    """What a party of the award sees of its sealed parameters: their names, the key to seal
    them to (the delivering provider's), whether and when they were sealed; never the box."""
    award = get_award(session, actor, award_id)  # 403 unless a party of the award
    row = session.get(SealedParams, award_id)
    key = session.get(ProviderSealingKey, award.provider_id)
    return {
        "award_id": award.id,
        "job_id": award.job.id if award.job else None,
        "provider_id": award.provider_id,
        "names": row.names.split(",") if row is not None else [],
        "public_key": key.public_key if key is not None else None,
        "fingerprint": fingerprint(key.public_key) if key is not None else None,
        "sealed": row is not None and row.box is not None,
        "sealed_to": row.sealed_to if row is not None else None,
        "sealed_at": row.sealed_at if row is not None else None,
        "size": len(row.box) if row is not None and row.box is not None else None,
    }


def put_box(
    session: Session,
    actor: Actor,
    award_id: int,
    sealed_to: str,
    box: str,
    *,
    now: datetime | None = None,
) -> dict:
    """Keep ``box`` (base64), sealed to ``sealed_to``, for the award's delivering daemon.

    Only the award's requester or a payer seals (`NotYours` for anyone else, the delivering
    provider included); the award must wait for sealed parameters and its job still be
    queued (`WrongState`: a box never changes under a daemon that holds the job); the box must
    be sealed to the provider's current key (`Conflict`: read it again and seal again).
    """
    award = get_award(session, actor, award_id)
    if actor.user_id is None or actor.user_id not in _sealers(session, award):
        raise NotYours(
            f"{actor} may not seal award {award_id}'s parameters: only its "
            f"requester or a payer does",
            where=f"award {award_id}",
        )
    sealed_to = check_public_key(sealed_to, field="sealed_to")
    raw = _raw(box, field="box", sizes=BOX_SIZE, what="a sealed box")
    now = resolve_now(now)
    row = session.get(SealedParams, award_id, with_for_update=True)
    if row is None:
        raise WrongState(
            f"award {award_id}'s request named no sealed parameters "
            f"(sealed_params), so its job does not wait for any",
            where=f"award {award_id}",
        )
    job = session.get_one(DeliveryJob, award.job.id, with_for_update=True, populate_existing=True)
    if award.status != "active" or job.status != "queued":
        raise WrongState(
            f"award {award_id} is {award.status} and its job {job.status}: "
            f"sealed parameters are taken while the job is queued",
            where=f"award {award_id}",
        )
    key = session.get(ProviderSealingKey, award.provider_id)
    if key is None or key.public_key != sealed_to:
        current = fingerprint(key.public_key) if key is not None else "none yet"
        raise Conflict(
            f"the box is sealed to key {fingerprint(sealed_to)}, but provider "
            f"{award.provider_id}'s daemons hold {current}: read the award's "
            f"sealing key again and seal to it",
            where=f"award {award_id}",
            field="sealed_to",
        )
    row.sealed_to, row.box = sealed_to, raw
    row.sealed_by_user_id, row.sealed_at = actor.user_id, now
    session.flush()
    # Waiting claims of the provider look at once (broker/job_bell.py rings after commit).
    session.info.setdefault("pktx_ring", set()).add(award.provider_id)
    return award_sealing(session, actor, award_id)


def claimed_box(session: Session, job: DeliveryJob) -> dict | None:
    """The box of a job just claimed, for its claimer's answer only."""
    row = session.get(SealedParams, job.award_id)
    if row is None or row.box is None:
        return None
    return {
        "names": row.names.split(","),
        "sealed_to": row.sealed_to,
        "box": base64.b64encode(row.box).decode(),
    }
