"""Two networks whose providers serve each other's users, for settlement tests: network "home"
(provider ``home-isp``, users alice and bob) and network "far" (providers ``far-b`` and
``far-c``, users carol and dave). No provider offers ``anonymize``, so a request for it is
awarded to whichever provider the test names: both directions between the networks exist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from marketplace import Market
from sqlalchemy import select

from broker.awards import make_award
from broker.models import ServiceRequest
from broker.requests import submit_request
from broker.statements import close_period, set_billing_settings

PAST = datetime(2025, 1, 10, 12, tzinfo=UTC)  # January 2025: a period long over
VOLUME = 1_000_000
SERVICES = ("identity", "checksum")


def build(store, *, margins: dict[str, int] | None = None):
    m = Market(store)
    w = type("SettlementWorld", (), {})()
    w.m, w.store = m, store
    home_net, far_net = m.network("home"), m.network("far")
    w.home = m.provider(home_net, "home-isp", services=SERVICES)
    w.far_b = m.provider(far_net, "far-b", services=SERVICES)
    w.far_c = m.provider(far_net, "far-c", services=SERVICES)
    w.providers = {"home-isp": w.home, "far-b": w.far_b, "far-c": w.far_c}
    w.users = {
        "alice": m.user("alice", w.home),
        "bob": m.user("bob", w.home),
        "carol": m.user("carol", w.far_b),
        "dave": m.user("dave", w.far_c),
    }
    w.admin = m.admin
    set_margins(w, margins or {})
    return w


def set_margins(w, margins: dict[str, int]) -> None:
    with w.store.write() as s:
        for name, pid in w.providers.items():
            set_billing_settings(
                s,
                w.admin,
                pid,
                period_months=1,
                cutoff_day=1,
                timezone="UTC",
                margin_ppm=margins.get(name, 0),
            )


def award(w, user: str, provider: str, price: int, at: datetime = PAST) -> int:
    """``user``'s request for anonymize awarded to ``provider`` at ``price``; the award's id."""
    with w.store.write() as s:
        request = submit_request(
            s, w.m.actor("user", w.users[user]), services="anonymize", volume_bytes=VOLUME, now=at
        )
        s.flush()
        request = s.get(ServiceRequest, request.id)
        return make_award(s, request, w.providers[provider], price, source="auction", now=at).id


def close(w, period: str = "2025-01", now: datetime | None = None) -> None:
    """Every home provider closes ``period``."""
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    now = now or (start + timedelta(days=40))
    for pid in w.providers.values():
        close_period(w.store.write, w.admin, pid, period, now=now)


def statement_ids(w, period: str) -> list[int]:
    from broker.models import Statement

    with w.store.read() as s:
        return list(s.scalars(select(Statement.id).where(Statement.period == period)))
