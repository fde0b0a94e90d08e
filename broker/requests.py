"""Service requests: a device asks its home provider, which serves it or brokers it.

The home provider serves a request itself when it offers every service of the chain, its spare
capacity over the request's time covers the required rate, it quotes in the request's currency,
and its list price is within the user's ``max_price_minor`` (if any). Otherwise the request is
``brokering``: open to negotiation (`broker.negotiation`) or auction (`broker.auctions`) with the
providers of other networks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.awards import make_award
from broker.bandwidth import granted_rate
from broker.bounds import INT64_MAX
from broker.brokering import lock_request, stop_brokering
from broker.capacity import committed_bps, share_rate
from broker.catalog import format_chain, parse_chain
from broker.clock import as_utc, resolve_now
from broker.credit import check_credit, has_profile
from broker.currency import check_amount, check_currency
from broker.directory import parse_e164
from broker.endpoints import check_endpoint
from broker.errors import GroupUnderfunded, InvalidInput, NotFound, NotYours, WrongState
from broker.groups import fail, get_group, pledged_total
from broker.idempotency import once
from broker.models import (
    Award,
    Device,
    Group,
    PhoneNumber,
    PricePolicy,
    Provider,
    ProviderService,
    RequestMember,
    ServiceRequest,
    User,
)
from broker.pricing import list_price, required_rate_bps
from broker.sealing import check_names


def _positive(value, field: str) -> int | None:
    return None if value is None else check_amount(value, field=field, allow_zero=False)


def _members(session: Session, items: Iterable[dict]) -> list[RequestMember]:
    out = []
    for n, item in enumerate(items):
        field = f"members[{n}]"
        entry: dict[str, Any] = item or {}
        kind, value = entry.get("kind"), cast(Any, entry.get("value"))  # checked per kind
        if kind in ("user", "device") and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInput(
                f"a {kind} member's value is its id (an integer), not {value!r}",
                field=f"{field}.value",
            )
        if kind == "user":
            if session.get(User, value) is None:
                raise NotFound("user", value)
            out.append(RequestMember(kind="user", user_id=value))
        elif kind == "device":
            if session.get(Device, value) is None:
                raise NotFound("device", value)
            out.append(RequestMember(kind="device", device_id=value))
        elif kind == "phone":
            e164 = parse_e164(value, item.get("region"), field=field)
            known = session.scalar(select(PhoneNumber.id).where(PhoneNumber.e164 == e164))
            out.append(RequestMember(kind="phone", e164=e164, phone_number_id=known))
        elif kind == "address":
            if not isinstance(value, str) or not 0 < len(value) <= 300:
                raise InvalidInput("an address is text of 1..300 characters", field=field)
            out.append(RequestMember(kind="address", address=value))
        else:
            raise InvalidInput(
                f"member kind is user, device, phone or address, not {kind!r}", field=field
            )
    return out


def submit_request(
    session: Session,
    actor: Actor,
    *,
    services,
    device_id: int | None = None,
    volume_bytes: int | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    min_rate_bps: int | None = None,
    max_rate_bps: int | None = None,
    data_cap_bytes: int | None = None,
    max_price_minor: int | None = None,
    currency: str | None = None,
    members: Iterable[dict] = (),
    group: bool = False,
    source: str | None = None,
    sink: str | None = None,
    sealed_params: list[str] | None = None,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> ServiceRequest:
    """A user's (or its device's) request to its home provider; decided at once.

    With ``group=True`` the request waits for pledges (`broker.groups`) and is decided by
    `close_pledges`. Without members the requesting device (else the user) is the recipient.
    ``source`` and ``sink`` are where the stream comes from and goes to (`broker.endpoints`).
    ``sealed_params`` names secret service parameters (``encrypt.key``) the requester seals to
    the winner after the award; its job waits for them (`broker.sealing`).
    """
    now = resolve_now(now)
    if actor.user_id is None:
        raise NotYours(f"{actor} is not a user or a user's device; only they request service")
    device_id = actor.device_id if device_id is None else device_id
    if device_id is not None:
        device = session.get(Device, device_id)
        if device is None:
            raise NotFound("device", device_id)
        if device.user_id != actor.user_id:
            raise NotYours(f"device {device_id} is not {actor}'s", where=f"device {device_id}")
    chain = parse_chain(services)
    source, sink = check_endpoint(source, field="source"), check_endpoint(sink, field="sink")
    sealed = check_names(sealed_params, chain)
    if (volume_bytes is None) == (starts_at is None and ends_at is None):
        raise InvalidInput(
            "give either volume_bytes or a block of time (starts_at and "
            "ends_at), not both and not neither",
            field="volume_bytes",
        )
    if volume_bytes is None:
        if starts_at is None or ends_at is None:
            raise InvalidInput(
                "a block of time needs both ends",
                field="ends_at" if starts_at is not None else "starts_at",
            )
        starts_at, ends_at = as_utc(starts_at, field="starts_at"), as_utc(ends_at, field="ends_at")
        if ends_at <= starts_at:
            raise InvalidInput("ends_at must be after starts_at", field="ends_at")
        if min_rate_bps is None and max_rate_bps is None:
            raise InvalidInput(
                "a block of time needs max_rate_bps and/or min_rate_bps", field="max_rate_bps"
            )
    elif data_cap_bytes is not None:
        raise InvalidInput(
            "a data cap applies to a block of time, not to a volume", field="data_cap_bytes"
        )
    min_rate, max_rate = (
        _positive(min_rate_bps, "min_rate_bps"),
        _positive(max_rate_bps, "max_rate_bps"),
    )
    if min_rate is not None and max_rate is not None and min_rate > max_rate:
        raise InvalidInput(
            f"min_rate_bps {min_rate} exceeds max_rate_bps {max_rate}", field="min_rate_bps"
        )
    volume_bytes = _positive(volume_bytes, "volume_bytes")
    data_cap_bytes = _positive(data_cap_bytes, "data_cap_bytes")
    if max_price_minor is not None:
        check_amount(max_price_minor, field="max_price_minor")
    user = session.get_one(User, actor.user_id)
    currency = check_currency(user.home_provider.policy.currency if currency is None else currency)
    members = list(members)
    params = {
        "services": chain,
        "device": device_id,
        "volume": volume_bytes,
        "starts": starts_at,
        "ends": ends_at,
        "min": min_rate,
        "max": max_rate,
        "cap": data_cap_bytes,
        "limit": max_price_minor,
        "currency": currency,
        "group": group,
        "members": members,
    }
    if source is not None or sink is not None:
        params.update(source=source, sink=sink)
    if sealed is not None:
        params.update(sealed=sealed)

    def run() -> ServiceRequest:
        # Against the clock after the idempotency key was looked up: a late retry of a request
        # whose block is over by now still gets the request the first call made.
        if ends_at is not None and ends_at <= now:
            raise InvalidInput(
                f"the block ended at {ends_at.isoformat()}, before now "
                f"({now.isoformat()}); ask for a block still to come",
                field="ends_at",
            )
        request = ServiceRequest(
            user_id=user.id,
            device_id=device_id,
            home_provider_id=user.home_provider_id,
            services=format_chain(chain),
            volume_bytes=volume_bytes,
            starts_at=starts_at,
            ends_at=ends_at,
            min_rate_bps=min_rate,
            max_rate_bps=max_rate,
            data_cap_bytes=data_cap_bytes,
            max_price_minor=max_price_minor,
            currency=currency,
            status="pledging" if group else "brokering",
            source=source,
            sink=sink,
            sealed_params=sealed,
            created_at=now,
        )
        request.members = _members(session, members) or [
            RequestMember(kind="device", device_id=device_id)
            if device_id is not None
            else RequestMember(kind="user", user_id=user.id)
        ]
        session.add(request)
        session.flush()
        if not group:
            _credit_and_bandwidth(session, request, now)
        if group:
            session.add(
                Group(
                    request_id=request.id, organizer_id=user.id, currency=currency, created_at=now
                )
            )
            session.flush()
        else:
            decide(session, request, now)
        return request

    return once(session, actor, idempotency_key, "request", params, ServiceRequest, run)


def _credit_and_bandwidth(session: Session, request: ServiceRequest, now: datetime) -> None:
    """The user's credit decided now (users with a credit profile only, docs/billing.md,
    "Credit"): a request whose price limit (else the home provider's list price) passes the
    available credit is refused, and the bandwidth grant raises the request's max rate (the
    price stays that of the rate asked for)."""
    if not has_profile(session, request.user_id):
        return
    amount = request.max_price_minor
    if amount is None:
        amount = list_price(session.get_one(Provider, request.home_provider_id).policy, request)
    check = check_credit(session, request.user_id, amount, request.currency, now)
    assert check is not None  # the user has a credit profile (above)
    grant = check.decision.bandwidth_grant_pct
    if grant and request.max_rate_bps is not None:
        request.base_max_rate_bps = request.max_rate_bps
        request.max_rate_bps = granted_rate(request.max_rate_bps, grant)
        request.bandwidth_grant_pct = grant
        session.flush()


@dataclass(frozen=True)
class Capability:
    """What a provider's eligibility for a request is judged on."""

    provider_id: int
    network_id: int
    capacity_bps: int
    currency: str
    services: frozenset[str]


_CAPABILITY = (
    select(
        Provider.network_id, Provider.capacity_bps, PricePolicy.currency, ProviderService.service
    )
    .join(PricePolicy, PricePolicy.provider_id == Provider.id)
    .outerjoin(ProviderService, ProviderService.provider_id == Provider.id)
    .where(Provider.id == bindparam("provider"))
)


def capability(session: Session | Connection, provider_id: int) -> Capability | None:
    """A provider's `Capability` in one query (None when there is no such provider)."""
    rows = session.execute(_CAPABILITY, {"provider": provider_id}).all()
    if not rows:
        return None
    first = rows[0]
    return Capability(
        provider_id,
        first.network_id,
        first.capacity_bps,
        first.currency,
        frozenset(r.service for r in rows if r.service is not None),
    )


def why_not(
    session: Session | Connection,
    provider: Provider | Capability,
    request,
    now: datetime,
    *,
    shares: int = 1,
) -> str | None:
    """Why ``provider`` cannot take ``request`` (one of ``shares`` equal shares of it), or None
    when it can.

    ``request`` is a `ServiceRequest` or anything with its ``services``, ``starts_at``,
    ``ends_at``, ``min_rate_bps``, ``max_rate_bps`` and ``currency``. A share needing no rate
    needs no spare capacity.
    """
    if isinstance(provider, Provider):
        provider = Capability(
            provider.id,
            provider.network_id,
            provider.capacity_bps,
            provider.policy.currency,
            frozenset(provider.service_names),
        )
    missing = [s for s in request.services.split(",") if s not in provider.services]
    if missing:
        return f"provider {provider.provider_id} does not offer {', '.join(missing)}"
    needed = share_rate(required_rate_bps(request), shares)
    spare = (
        provider.capacity_bps
        - committed_bps(session, provider.provider_id, request.starts_at, request.ends_at, now)
        if needed
        else 0
    )
    if needed > spare:
        return (
            f"provider {provider.provider_id} has {max(spare, 0)} bit/s spare, the request "
            f"needs {needed}"
        )
    if provider.currency != request.currency:
        return (
            f"provider {provider.provider_id} quotes in {provider.currency}, not {request.currency}"
        )
    return None


def decide(session: Session, request: ServiceRequest, now: datetime) -> Award | None:
    """Serve at home if the home provider can and its price is acceptable, else broker."""
    home = session.get_one(Provider, request.home_provider_id)
    reason = why_not(session, home, request, now)
    price = list_price(home.policy, request) if reason is None else None
    limit = request.max_price_minor
    if price is not None and limit is not None and price > limit:
        reason = f"home provider {home.id} asks {price}, above the limit {limit}"
    if reason is None:
        assert price is not None  # priced when no reason was found
        try:
            return make_award(session, request, home.id, price, source="home", now=now)
        except GroupUnderfunded as exc:
            reason = str(exc)
    request.status, request.reason = "brokering", f"brokered: {reason}"[:300]
    session.flush()
    return None


def eligible_providers(
    session: Session,
    request: ServiceRequest,
    now: datetime | None = None,
    *,
    after: int | None = None,
    limit: int | None = None,
    shares: int = 1,
) -> list[Provider]:
    """Providers of other networks that could take the request (for brokering), by id;
    ``after``/``limit`` page through them."""
    now = resolve_now(now)
    home_network = session.get_one(Provider, request.home_provider_id).network_id
    query = select(Provider).where(Provider.network_id != home_network).order_by(Provider.id)
    if after is not None:
        query = query.where(Provider.id > after)
    found = []
    for provider in session.scalars(query.execution_options(yield_per=200)):
        if why_not(session, provider, request, now, shares=shares) is None:
            found.append(provider)
            if limit is not None and len(found) >= limit:
                break
    return found


def get_request(session: Session, actor: Actor, request_id: int) -> ServiceRequest:
    """A request, for its user (and the user's devices) and its home provider."""
    request = session.get(ServiceRequest, request_id)
    if request is None:
        raise NotFound("request", request_id)
    if not is_request_party(actor, request):
        raise NotYours(f"request {request_id} is not {actor}'s", where=f"request {request_id}")
    return request


def is_request_party(actor: Actor, request: ServiceRequest) -> bool:
    """The request's user (and its devices), its home provider, an admin."""
    return (
        actor.is_admin
        or actor.speaks_for_user(request.user_id)
        or actor.speaks_for_provider(request.home_provider_id)
    )


def list_requests(
    session: Session, actor: Actor, *, after: int | None = None, limit: int = 100
) -> list[ServiceRequest]:
    """The actor's requests (a provider: its customers'), newest first; ``after`` is the id of
    the last one of the page before."""
    query = select(ServiceRequest).order_by(ServiceRequest.id.desc()).limit(limit)
    if after is not None:
        query = query.where(ServiceRequest.id < after)
    if actor.user_id is not None:
        query = query.where(ServiceRequest.user_id == actor.user_id)
    elif actor.provider_ids:
        query = query.where(ServiceRequest.home_provider_id.in_(actor.provider_ids))
    elif not actor.is_admin:
        return []
    return list(session.scalars(query))


def close_pledges(
    session: Session,
    actor: Actor,
    group_id: int,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> ServiceRequest:
    """The organizer ends pledging: the request is then decided with the pledges as budget.

    The budget is the pledged total (and the user's limit, if lower). No pledges at all: the
    group fails and the request with it, and nobody is charged.
    """
    now = resolve_now(now)
    group = get_group(session, group_id)
    if not actor.speaks_for_user(group.organizer_id):
        raise NotYours(
            f"only the organizer (user {group.organizer_id}) closes pledging",
            where=f"group {group_id}",
        )
    return once(
        session,
        actor,
        idempotency_key,
        "group.close",
        {"group": group_id},
        ServiceRequest,
        lambda: _close_pledges(session, group, now),
    )


def _close_pledges(session: Session, group: Group, now: datetime) -> ServiceRequest:
    group_id = group.id
    lock_request(session, group.request_id)
    session.refresh(group)
    if group.status != "pledging":
        raise WrongState(f"group {group_id} is {group.status} already", where=f"group {group_id}")
    request = group.request
    total = pledged_total(session, group_id)
    if total == 0:
        fail(group, "nobody pledged", now)
        request.status, request.reason = "failed", "group: nobody pledged"
        session.flush()
        return request
    group.status, group.closed_at = "closed", now
    if request.max_price_minor is None or request.max_price_minor > total:
        # Many large pledges may add up past what a column keeps; the budget is capped there.
        request.max_price_minor = min(total, INT64_MAX)
    decide(session, request, now)
    if request.status == "served":
        group.status = "funded"
    session.flush()
    return request


def cancel_request(
    session: Session,
    actor: Actor,
    request_id: int,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> ServiceRequest:
    """The user (or one of its devices) withdraws a request still pledging or brokering: its
    open auction or negotiation ends with it, and nothing of it is awarded afterwards. The home
    provider cannot cancel its customer's request."""
    now = resolve_now(now)
    request = session.get(ServiceRequest, request_id)
    if request is None:
        raise NotFound("request", request_id)
    if not actor.speaks_for_user(request.user_id):
        raise NotYours(
            f"only the request's user (or its devices) cancels request "
            f"{request_id}; {actor} is not",
            where=f"request {request_id}",
        )

    def run() -> ServiceRequest:
        locked = lock_request(session, request_id)
        if locked.status not in ("pledging", "brokering"):
            raise WrongState(
                f"request {request_id} is {locked.status}; only a request still "
                f"pledging or brokering can be cancelled",
                where=f"request {request_id}",
            )
        locked.status, locked.reason = "cancelled", f"cancelled by {actor}"
        stop_brokering(session, locked, f"request {request_id} cancelled by {actor}", now)
        group = session.scalar(select(Group).where(Group.request_id == request_id))
        if group is not None and group.status in ("pledging", "closed"):
            fail(group, "request cancelled", now)
        session.flush()
        return locked

    return once(
        session,
        actor,
        idempotency_key,
        "request.cancel",
        {"request": request_id},
        ServiceRequest,
        run,
    )
