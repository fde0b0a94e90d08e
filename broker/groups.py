"""Group negotiation: members willing to pay pledge, and sponsor the members who are not.

The service goes to every member of the request. Its price is split among the payers by the
**equal share, capped** rule: everyone pays the same amount, except that nobody pays more than
they pledged; what a payer's cap leaves uncovered is shared equally by the others (water-filling,
as in max-min fairness). In integers: payers are taken in increasing order of their cap; each
pays ``min(cap, remaining // payers_left)``; once everyone left can afford the equal share,
``remaining`` is divided equally and the leftover minor units (fewer than the number of payers)
go one each to the earliest pledges. When the pledges add up to less than the price the group
fails: no award is made and nobody is charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.clock import resolve_now
from broker.currency import check_amount
from broker.errors import GroupUnderfunded, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.models import Device, Group, PhoneNumber, Pledge, ServiceRequest


def split_equal_capped(price: int, caps: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Split ``price`` among ``(payer, cap)`` pairs given in pledge order; see the module doc.

    Returns ``(payer, share)`` in the same order; shares add up to ``price``, none exceeds its
    cap. Raises `GroupUnderfunded` when the caps add up to less than the price.
    """
    total = sum(cap for _, cap in caps)
    if total < price:
        raise GroupUnderfunded(
            f"pledges cover {total} of the price {price}; {price - total} more must be pledged"
        )
    order = sorted(range(len(caps)), key=lambda i: (caps[i][1], i))
    shares = [0] * len(caps)
    remaining = price
    for position, i in enumerate(order):
        left = len(order) - position
        if caps[i][1] * left >= remaining:
            # Everyone from here on can afford the equal share.
            rest = sorted(order[position:])
            base, extra = divmod(remaining, left)
            for rank, j in enumerate(rest):
                shares[j] = base + (1 if rank < extra else 0)
            break
        shares[i] = caps[i][1]
        remaining -= caps[i][1]
    return [(caps[i][0], shares[i]) for i in range(len(caps))]


def group_of_request(session: Session, request_id: int) -> Group | None:
    return session.scalar(select(Group).where(Group.request_id == request_id))


def get_group(session: Session, group_id: int) -> Group:
    group = session.get(Group, group_id)
    if group is None:
        raise NotFound("group", group_id)
    return group


def member_users(session: Session, request: ServiceRequest) -> set[int]:
    """Users who are members of the request directly or through a device or phone number."""
    users = {request.user_id}
    for m in request.members:
        if m.kind == "user":
            assert m.user_id is not None  # a user member names its user
            users.add(m.user_id)
        elif m.kind == "device":
            users.add(session.get_one(Device, m.device_id).user_id)
        elif m.kind == "phone" and m.phone_number_id is not None:
            users.add(session.get_one(PhoneNumber, m.phone_number_id).user_id)
    return users


def _user_of(session: Session, member) -> int | None:
    """The user a request member is, directly or through its device or registered phone."""
    if member.kind == "user":
        return member.user_id
    if member.kind == "device":
        return session.get_one(Device, member.device_id).user_id
    if member.kind == "phone" and member.phone_number_id is not None:
        return session.get_one(PhoneNumber, member.phone_number_id).user_id
    return None


def pledged_total(session: Session, group_id: int) -> int:
    """The pledges' sum, added in Python: a database SUM overflows on SQLite past 64 bits and
    comes back a Decimal on PostgreSQL."""
    return sum(session.scalars(select(Pledge.max_minor).where(Pledge.group_id == group_id)))


def pledge(
    session: Session,
    actor: Actor,
    group_id: int,
    max_minor: int,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> Pledge:
    """Pledge to pay up to ``max_minor`` of the group's price (a second pledge replaces)."""
    now = resolve_now(now)
    group = get_group(session, group_id)
    check_amount(max_minor, field="max_minor", allow_zero=False)
    if actor.user_id is None or actor.user_id not in member_users(session, group.request):
        raise NotYours(
            f"{actor} is not a member of group {group_id}; only members pledge",
            where=f"group {group_id}",
        )

    def run() -> Pledge:
        if group.status != "pledging":
            raise WrongState(
                f"group {group_id} is {group.status}; pledges are taken while it is pledging",
                where=f"group {group_id}",
            )
        row = session.scalar(
            select(Pledge).where(Pledge.group_id == group_id, Pledge.user_id == actor.user_id)
        )
        if row is None:
            row = Pledge(group_id=group_id, user_id=actor.user_id)
            session.add(row)
        row.max_minor, row.updated_at = max_minor, now
        session.flush()
        return row

    return once(
        session,
        actor,
        idempotency_key,
        "pledge",
        {"group": group_id, "max": max_minor},
        Pledge,
        run,
    )


def withdraw(
    session: Session, actor: Actor, group_id: int, *, idempotency_key: str | None = None
) -> Group:
    """Take back one's pledge while the group is still pledging.

    A caller that is not a member learns nothing of the group (404, as if there were none).
    """
    group = get_group(session, group_id)
    if actor.user_id is None or actor.user_id not in member_users(session, group.request):
        raise NotFound("group", group_id)

    def run() -> Group:
        if group.status != "pledging":
            raise WrongState(
                f"group {group_id} is {group.status}; pledges are binding once pledging closed",
                where=f"group {group_id}",
            )
        row = session.scalar(
            select(Pledge).where(Pledge.group_id == group_id, Pledge.user_id == actor.user_id)
        )
        if row is None:
            raise NotFound("pledge", f"of {actor} in group {group_id}")
        session.delete(row)
        session.flush()
        return group

    return once(session, actor, idempotency_key, "pledge.withdraw", {"group": group_id}, Group, run)


def payers_for(session: Session, request: ServiceRequest, price: int) -> list[tuple[int, int]]:
    """Who pays what of ``price`` for ``request``: the requester alone, or the group's split."""
    group = group_of_request(session, request.id)
    if group is None:
        return [(request.user_id, price)]
    caps = [(p.user_id, p.max_minor) for p in group.pledges]
    try:
        return split_equal_capped(price, caps)
    except GroupUnderfunded as exc:
        exc.where = f"group {group.id}"
        raise


def fail(group: Group, reason: str, now: datetime) -> None:
    group.status, group.reason, group.closed_at = "failed", reason[:300], now


def group_view(session: Session, actor: Actor, group_id: int) -> dict:
    """Members (payer or sponsored), pledges and their total, as a member or the home sees it."""
    group = get_group(session, group_id)
    request = group.request
    members = member_users(session, request)
    if not (
        actor.is_admin
        or actor.speaks_for_provider(request.home_provider_id)
        or (actor.user_id is not None and actor.user_id in members)
    ):
        raise NotYours(f"{actor} is not a member of group {group_id}", where=f"group {group_id}")
    payers = {p.user_id for p in group.pledges}
    return {
        "id": group.id,
        "request_id": request.id,
        "status": group.status,
        "reason": group.reason,
        "currency": group.currency,
        "split_rule": group.split_rule,
        "pledged_total_minor": pledged_total(session, group_id),
        "pledges": [{"user_id": p.user_id, "max_minor": p.max_minor} for p in group.pledges],
        "members": [
            dict(m.describe(), sponsored=_user_of(session, m) not in payers)
            for m in request.members
        ],
    }
