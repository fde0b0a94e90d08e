"""A small market to trade in: participants built with an admin's authority."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.actors import Actor, actor_for
from broker.catalog import SERVICE_NAMES
from broker.directory import (
    add_device,
    add_phone_number,
    create_admin,
    create_network,
    create_provider,
    create_user,
)
from broker.models import Award, AwardPayer, RequestMember, ServiceRequest, User
from broker.store import Store

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Market:
    """Builds participants with an admin's authority; every call is its own transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with store.write() as s:
            self.admin = Actor("admin", create_admin(s, "root").id)

    def actor(self, kind: str, ident: int) -> Actor:
        with self.store.read() as s:
            return actor_for(s, kind, ident)

    def network(self, name: str) -> int:
        with self.store.write() as s:
            return create_network(s, self.admin, name).id

    def provider(
        self,
        network_id: int,
        name: str,
        *,
        services=SERVICE_NAMES,
        capacity_bps: int = 1_000_000_000,
        currency: str = "EUR",
        per_gb: int = 100,
        per_mbps_hour: int = 10,
        reservation_ppm: int = 800_000,
        beta_ppm: int = 1_000_000,
        mode: str = "policy",
    ) -> int:
        with self.store.write() as s:
            return create_provider(
                s,
                self.admin,
                network_id=network_id,
                name=name,
                services=services,
                capacity_bps=capacity_bps,
                currency=currency,
                per_gb_minor=per_gb,
                per_mbps_hour_minor=per_mbps_hour,
                reservation_ppm=reservation_ppm,
                concession_beta_ppm=beta_ppm,
                mode=mode,
            ).id

    def user(self, name: str, home_provider_id: int) -> int:
        with self.store.write() as s:
            return create_user(s, self.admin, name=name, home_provider_id=home_provider_id).id

    def device(self, user_id: int, name: str = "phone") -> int:
        with self.store.write() as s:
            return add_device(s, self.admin, user_id=user_id, name=name).id

    def phone(self, user_id: int, number: str, device_id: int | None = None) -> int:
        with self.store.write() as s:
            return add_phone_number(
                s, self.admin, user_id=user_id, number=number, device_id=device_id
            ).id


def overdue_negotiation(world) -> int:
    """An open negotiation (alice with north, by hand) whose deadline passed an hour ago by the
    real clock: what the server's periodic expiry should find."""
    from broker.negotiation import start_negotiation
    from broker.requests import submit_request

    past = datetime.now(UTC) - 2 * HOUR
    with world.m.store.write() as s:
        request = submit_request(
            s,
            world.m.actor("device", world.alice_phone),
            services="anonymize",
            volume_bytes=10**9,
            now=past,
        )
        return start_negotiation(
            s,
            world.m.actor("user", world.alice),
            request.id,
            world.north,
            mode="user",
            deadline=past + HOUR,
            now=past,
        ).id


def negotiation_status(store: Store, negotiation_id: int) -> str:
    from broker.models import Negotiation

    with store.read() as s:
        return s.get(Negotiation, negotiation_id).status


def past_award(session, user_id: int, provider_id: int, at: datetime, *, price: int = 1):
    """A delivered award of a request of its own, written straight into the store: history for
    reputation tests (they add the ratings). The market itself awards a request only once."""
    user = session.get(User, user_id)
    request = ServiceRequest(
        user_id=user_id,
        home_provider_id=user.home_provider_id,
        services="identity",
        volume_bytes=1,
        currency="EUR",
        status="served",
        created_at=at,
        members=[RequestMember(kind="user", user_id=user_id)],
    )
    session.add(request)
    session.flush()
    award = Award(
        request_id=request.id,
        provider_id=provider_id,
        home_provider_id=user.home_provider_id,
        source="home",
        price_minor=price,
        currency="EUR",
        services="identity",
        volume_bytes=1,
        status="delivered",
        created_at=at,
        payers=[AwardPayer(user_id=user_id, share_minor=price)],
    )
    session.add(award)
    session.flush()
    return award
