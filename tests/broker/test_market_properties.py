"""The market's invariants under random sequences of calls (issue 7): a hypothesis state machine.

The machine submits and cancels block-of-time requests, opens auctions of 1..3 blocks, bids and
revises bids, closes auctions at or after their close, negotiates by hand or by agent, lets a
simulated clock run forward, and retries keyed calls later on. Each call is its own
``store.write()`` transaction, as in the API. After every step the store is read back with plain
queries and held to the rules below, computed here from the rows (not by the broker's code):

1. awards: one per (request, share), shares 0..k-1 of one auction or negotiation, never for a
   cancelled request, and the request then ``awarded`` or ``served``;
2. no provider booked past its capacity at any instant (a sweep over its active awards);
3. a keyed call retried later gives the first result and changes nothing;
4. at most one open auction or negotiation per request.

A call refused with a `BrokerError` must leave the store exactly as it was.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict, namedtuple
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from marketplace import HOUR, T0, Market
from sqlalchemy import delete, select, update

from broker.auctions import close_auction, open_auction, submit_bid
from broker.errors import BrokerError
from broker.models import (
    Auction,
    Award,
    AwardPayer,
    Bid,
    Charge,
    DeliveryJob,
    IdempotencyRecord,
    Negotiation,
    Offer,
    Provider,
    RequestMember,
    ServiceRequest,
)
from broker.negotiation import act, expire_overdue, start_negotiation
from broker.requests import cancel_request, submit_request

MBPS = 1_000_000
MINUTE = timedelta(minutes=1)
START = T0 - 3 * HOUR
# Blocks in hours from T0: some overlap, some only touch, some are apart.
SLOTS = ((0, 1), (0, 2), (1, 2), (1, 3), (2, 3))
# Providers of other networks (one answers negotiations by hand); the home one offers only
# identity and checksum, so "anonymize" is always brokered and "identity" served when it fits.
OUTSIDERS = ("north", "north2", "south", "manual")
CAPACITIES_MBPS = (0, 4, 6, 8)
USERS = ("alice", "bob")
MAX_BROKERING = 4  # requests open at once: enough to overlap, few enough to meet again

# Everything a market call may write (the providers never change here).
WRITTEN = (
    ServiceRequest,
    RequestMember,
    Auction,
    Bid,
    Negotiation,
    Offer,
    Award,
    AwardPayer,
    DeliveryJob,
    Charge,
    IdempotencyRecord,
)
KEY = st.booleans()
PICK = st.integers(0, 63)
LIVE = st.sampled_from((True, True, True, False))


def build_world(store):
    """The participants, once per database; each example only empties the market's tables."""
    m = Market(store)
    w = type("World", (), {})()
    w.store = store
    home_net, north_net, south_net = (m.network(n) for n in ("home-net", "north-net", "south-net"))
    w.provider_ids = {
        "home": m.provider(home_net, "home", services=("identity", "checksum")),
        "north": m.provider(north_net, "north"),
        "north2": m.provider(north_net, "north2"),
        "south": m.provider(south_net, "south"),
        "manual": m.provider(south_net, "manual", mode="manual"),
    }
    w.providers = {name: m.actor("provider", pid) for name, pid in w.provider_ids.items()}
    w.users = {name: m.actor("user", m.user(name, w.provider_ids["home"])) for name in USERS}
    w.user_by_id = {actor.id: actor for actor in w.users.values()}
    w.provider_by_id = {actor.id: actor for actor in w.providers.values()}
    return w


_ROW_TYPES: dict[tuple, type] = {}  # (table, *columns) -> its row type


def snapshot(store) -> dict[str, list]:
    """Every row the market writes, by table, in id order, as the driver returns it: one plain
    query a table, no ORM and no type conversion (this runs after every step, and after every
    refused call). Times are text on SQLite, in a format that sorts as time does."""
    out = {}
    with store.read() as s:
        cursor = s.connection().connection.driver_connection.cursor()
        try:
            for model in WRITTEN:
                table = model.__tablename__
                cursor.execute(f"SELECT * FROM {table} ORDER BY id")
                names = (table, *(c[0] for c in cursor.description))
                if names not in _ROW_TYPES:
                    _ROW_TYPES[names] = namedtuple(table, names[1:])
                out[table] = [_ROW_TYPES[names](*row) for row in cursor.fetchall()]
        finally:
            cursor.close()
    return out


def as_time(value) -> datetime:
    """A time from a snapshot (SQLite's text or PostgreSQL's datetime) as an aware datetime."""
    return (
        value if isinstance(value, datetime) else datetime.fromisoformat(value).replace(tzinfo=UTC)
    )


def award_problems(snap: dict) -> list[str]:
    """Invariant 1, from the rows."""
    requests = {r.id: r for r in snap["service_requests"]}
    auctions = {a.id: a for a in snap["auctions"]}
    by_request = defaultdict(list)
    for a in snap["awards"]:
        by_request[a.request_id].append(a)
    out = []
    for request_id, awards in by_request.items():
        request = requests[request_id]
        shares = Counter(a.share for a in awards)
        if any(n > 1 for n in shares.values()):
            out.append(f"request {request_id}: two awards of one share {dict(shares)}")
        origins = {(a.source, a.auction_id, a.negotiation_id) for a in awards}
        if len(origins) != 1:
            out.append(f"request {request_id}: awards from several outcomes {origins}")
        k = {a.shares for a in awards}
        if len(k) != 1 or sorted(shares) != list(range(k.pop())):
            out.append(
                f"request {request_id}: shares {sorted(shares)} of "
                f"{sorted(a.shares for a in awards)}"
            )
        for a in awards:
            expected = auctions[a.auction_id].quantity if a.source == "auction" else 1
            if a.shares != expected:
                out.append(f"award {a.id}: shares {a.shares}, expected {expected}")
        if request.status == "cancelled":
            out.append(f"request {request_id} is cancelled but has awards")
        elif request.status != ("served" if awards[0].source == "home" else "awarded"):
            out.append(f"request {request_id} is {request.status} with a {awards[0].source} award")
    return out


def peak_bps(blocks) -> int:
    """The highest sum of rates at one instant over half-open ``(rate, start, end)`` blocks:
    at one instant, a block ending counts off before one starting counts on."""
    events = sorted([(s, 1, r) for r, s, _ in blocks] + [(e, 0, -r) for r, _, e in blocks])
    load = peak = 0
    for _, _, delta in events:
        load += delta
        peak = max(peak, load)
    return peak


def capacity_problems(snap: dict, capacity: dict[int, int]) -> list[str]:
    """Invariant 2, by a sweep over each provider's active awards."""
    blocks = defaultdict(list)
    for a in snap["awards"]:
        if a.status == "active":
            rate = a.max_rate_bps if a.max_rate_bps is not None else (a.min_rate_bps or 0)
            blocks[a.provider_id].append((rate, a.starts_at, a.ends_at))
    return [
        f"provider {p} booked {peak_bps(b)} bit/s at its peak, capacity {capacity[p]}"
        for p, b in blocks.items()
        if peak_bps(b) > capacity[p]
    ]


def brokering_problems(snap: dict) -> list[str]:
    """Invariant 4: at most one open auction or negotiation per request."""
    open_ = Counter(
        [a.request_id for a in snap["auctions"] if a.status == "open"]
        + [n.request_id for n in snap["negotiations"] if n.status == "open"]
    )
    return [
        f"request {r} has {n} open auctions and negotiations" for r, n in open_.items() if n > 1
    ]


def changed_tables(before: dict, after: dict) -> list[str]:
    return [name for name in before if before[name] != after[name]]


# What a call's result is remembered by: its id and what cannot change after the call.
def request_terms(r):
    return (
        r.id,
        r.user_id,
        r.services,
        r.starts_at,
        r.ends_at,
        r.min_rate_bps,
        r.max_rate_bps,
        r.max_price_minor,
    )


def cancelled_terms(r):
    return (r.id, r.status)


def auction_terms(a):
    return (a.id, a.request_id, a.quantity, a.reserve_price_minor, a.closes_at)


def closed_terms(a):
    return (a.id, a.status, a.closed_at)


def bid_terms(b):
    return (b.id, b.auction_id, b.provider_id)


def negotiation_terms(n):
    return (n.id, n.request_id, n.provider_id, n.buyer_mode, n.seller_mode, n.deadline)


def moved_terms(n):
    return (n.id, n.request_id)


def while_some(table: str, status: str):
    """A rule's precondition: the store (as of the last step) has a row of ``table`` in
    ``status``."""
    return precondition(lambda machine: any(r.status == status for r in machine.before[table]))


def brokering(machine) -> int:
    return sum(r.status == "brokering" for r in machine.before["service_requests"])


@dataclass
class KeyedCall:
    """A call that succeeded with an idempotency key, and what it gave."""

    function: object
    actor: object
    args: tuple
    kwargs: dict
    key: str
    terms: object
    first: tuple

    def __repr__(self) -> str:
        return f"{self.function.__name__}(key={self.key!r}) -> {self.first}"


class MarketMachine(RuleBasedStateMachine):
    """Random sequences of market calls; the invariants are checked after every step.

    A call picks its request, auction or negotiation among those in the store (``pick``),
    usually among those still brokering or open (``live``), sometimes among all of them.
    """

    def __init__(self, world) -> None:
        super().__init__()
        self.w = world
        self.clock = START
        self.keys = itertools.count()
        self.keyed: list[KeyedCall] = []
        self.capacity: dict[int, int] | None = None
        self.before: dict | None = None  # the store after the last step (or call)
        self.stale = False  # whether a call changed the store since ``before`` was read

    # -- the calls ---------------------------------------------------------------------------

    def call(self, function, actor, *args, key: bool, terms, **kwargs):
        """``function`` in a transaction of its own at the simulated time; its result's terms,
        or None when it was refused (which must have kept nothing)."""
        key = f"key-{next(self.keys)}" if key else None
        if self.stale:  # an earlier call of this step changed the store
            self.before, self.stale = snapshot(self.w.store), False
        try:
            with self.w.store.write() as s:
                first = terms(
                    function(s, actor, *args, now=self.clock, idempotency_key=key, **kwargs)
                )
        except BrokerError as exc:
            self.assert_unchanged(f"{function.__name__} refused ({exc})")
            return None
        self.stale = True
        if key is not None:
            self.keyed.append(KeyedCall(function, actor, args, kwargs, key, terms, first))
        return first

    def assert_unchanged(self, what: str) -> None:
        changed = changed_tables(self.before, snapshot(self.w.store))
        assert not changed, f"{what} changed {changed}"

    def choose(self, table: str, pick: int, live: bool, status: str):
        """A row of ``table`` as of the last step: one in ``status`` when ``live`` and there
        is one, else any."""
        rows = self.before[table]
        pool = [r for r in rows if r.status == status] if live else []
        pool = pool or rows
        row = pool[pick % len(pool)]
        note(f"{table[:-1]} {row.id} ({row.status})")
        return row

    def user_of(self, request_id: int):
        return self.w.user_by_id[
            next(r.user_id for r in self.before["service_requests"] if r.id == request_id)
        ]

    @initialize(
        capacities=st.fixed_dictionaries(
            {name: st.sampled_from(CAPACITIES_MBPS) for name in ("home", *OUTSIDERS)}
        )
    )
    def empty_market(self, capacities):
        with self.w.store.write() as s:
            for model in reversed(WRITTEN):
                s.execute(delete(model))
            for name, mbps in capacities.items():
                s.execute(
                    update(Provider)
                    .where(Provider.id == self.w.provider_ids[name])
                    .values(capacity_bps=mbps * MBPS)
                )
        with self.w.store.read() as s:
            self.capacity = dict(s.execute(select(Provider.id, Provider.capacity_bps)).all())
        self.before = snapshot(self.w.store)

    @precondition(lambda self: brokering(self) < MAX_BROKERING)
    @rule(
        user=st.sampled_from(USERS),
        slot=st.sampled_from(SLOTS),
        services=st.sampled_from(("anonymize", "anonymize,checksum", "anonymize", "identity")),
        mbps=st.integers(2, 6),
        rates=st.sampled_from(("max", "min", "both")),
        limit=st.none() | st.integers(40, 400),
        key=KEY,
    )
    def submit(self, user, slot, services, mbps, rates, limit, key):
        low = mbps * MBPS // 2 if rates == "both" else mbps * MBPS
        self.call(
            submit_request,
            self.w.users[user],
            key=key,
            terms=request_terms,
            services=services,
            starts_at=T0 + slot[0] * HOUR,
            ends_at=T0 + slot[1] * HOUR,
            max_rate_bps=None if rates == "min" else mbps * MBPS,
            min_rate_bps=None if rates == "max" else low,
            max_price_minor=limit,
        )

    @precondition(lambda self: brokering(self) >= 2)
    @rule(pick=PICK, live=LIVE, key=KEY)
    def cancel(self, pick, live, key):
        """Withdraw a request (only while another is brokering: a market emptied by cancels
        has nothing left to test)."""
        request = self.choose("service_requests", pick, live, "brokering")
        self.call(
            cancel_request,
            self.w.user_by_id[request.user_id],
            request.id,
            key=key,
            terms=cancelled_terms,
        )

    @while_some("service_requests", "brokering")
    @rule(
        pick=PICK,
        live=LIVE,
        quantity=st.integers(1, 3),
        reserve=st.integers(5, 100),
        closes_in=st.integers(5, 60),
        by=st.sampled_from(("user", "home")),
        key=KEY,
    )
    def auction(self, pick, live, quantity, reserve, closes_in, by, key):
        request = self.choose("service_requests", pick, live, "brokering")
        actor = self.w.user_by_id[request.user_id] if by == "user" else self.w.providers["home"]
        self.call(
            open_auction,
            actor,
            request.id,
            key=key,
            terms=auction_terms,
            closes_at=self.clock + closes_in * MINUTE,
            reserve_price_minor=reserve,
            quantity=quantity,
        )

    @while_some("auctions", "open")
    @rule(
        pick=PICK,
        live=LIVE,
        asks=st.lists(
            st.tuples(st.sampled_from(("home", *OUTSIDERS)), st.integers(0, 105), KEY),
            min_size=1,
            max_size=4,
        ),
    )
    def bid(self, pick, live, asks):
        """Asks of ``percent`` of the reserve, each its own call (a provider's second ask
        revises its first)."""
        auction = self.choose("auctions", pick, live, "open")
        for provider, percent, key in asks:
            self.call(
                submit_bid,
                self.w.providers[provider],
                auction.id,
                key=key,
                terms=bid_terms,
                provider_id=self.w.provider_ids[provider],
                price_minor=auction.reserve_price_minor * percent // 100,
            )

    @while_some("auctions", "open")
    @rule(
        pick=PICK, live=LIVE, late=st.integers(0, 30), by=st.sampled_from(("user", "home")), key=KEY
    )
    def close(self, pick, live, late, by, key):
        """Close at (or ``late`` minutes after) the closing time: the clock moves there."""
        auction = self.choose("auctions", pick, live, "open")
        self.clock = max(self.clock, as_time(auction.closes_at) + late * MINUTE)
        actor = self.user_of(auction.request_id) if by == "user" else self.w.providers["home"]
        self.call(close_auction, actor, auction.id, key=key, terms=closed_terms)

    @while_some("service_requests", "brokering")
    @rule(
        pick=PICK,
        live=LIVE,
        provider=st.sampled_from(("north", "north", *OUTSIDERS)),
        mode=st.sampled_from(("user", "user", "agent")),
        limit=st.none() | st.none() | st.integers(10, 150),
        opening=st.none() | st.integers(0, 40),
        deadline_in=st.integers(10, 120),
        rounds=st.integers(1, 6),
        key=KEY,
    )
    def negotiate(self, pick, live, provider, mode, limit, opening, deadline_in, rounds, key):
        request = self.choose("service_requests", pick, live, "brokering")
        if mode == "agent" and limit is None and live:
            limit = 100  # an agent needs a limit: most get one, the rest are refused
        self.call(
            start_negotiation,
            self.w.user_by_id[request.user_id],
            request.id,
            self.w.provider_ids[provider],
            key=key,
            terms=negotiation_terms,
            mode=mode,
            deadline=self.clock + deadline_in * MINUTE,
            max_rounds=rounds,
            max_price_minor=limit,
            opening_price_minor=opening,
        )

    @while_some("negotiations", "open")
    @rule(
        pick=PICK,
        live=LIVE,
        by=st.sampled_from(("hand", "hand", "hand", "user", "seller")),
        action=st.sampled_from(("offer", "accept", "accept", "reject")),
        price=st.integers(0, 120),
        key=KEY,
    )
    def move(self, pick, live, by, action, price, key):
        """A move by the user or the provider; ``hand``: by a side that moves by hand."""
        negotiation = self.choose("negotiations", pick, live, "open")
        if by == "hand":
            by = "user" if negotiation.buyer_mode == "user" else "seller"
        actor = (
            self.user_of(negotiation.request_id)
            if by == "user"
            else self.w.provider_by_id[negotiation.provider_id]
        )
        self.call(
            act,
            actor,
            negotiation.id,
            action,
            key=key,
            terms=moved_terms,
            price_minor=price if action == "offer" else None,
        )

    @precondition(
        lambda self: any(
            r.status == "open" for table in ("auctions", "negotiations") for r in self.before[table]
        )
    )
    @rule(minutes=st.integers(1, 15), expire=st.booleans())
    def wait(self, minutes, expire):
        """Time passes while something runs; the server may run its periodic expiry of
        overdue negotiations."""
        self.clock += minutes * MINUTE
        if expire:
            with self.w.store.write() as s:
                expire_overdue(s, now=self.clock)
            self.stale = True

    @precondition(lambda self: self.keyed)
    @rule(pick=st.integers(0, 1000))
    def retry(self, pick):
        """A keyed call sent again (the answer was lost): the first result, nothing new."""
        call = self.keyed[pick % len(self.keyed)]
        try:
            with self.w.store.write() as s:
                again = call.terms(
                    call.function(
                        s,
                        call.actor,
                        *call.args,
                        now=self.clock,
                        idempotency_key=call.key,
                        **call.kwargs,
                    )
                )
        except BrokerError as exc:
            raise AssertionError(
                f"the retry of {call} at {self.clock} was refused: {exc!r}"
            ) from exc
        assert again == call.first, f"the retry of {call} gave {again}"
        self.assert_unchanged(f"the retry of {call}")

    # -- the invariants ----------------------------------------------------------------------

    @invariant()
    def market_rules_hold(self):
        if self.capacity is None:  # before the market was emptied
            return
        snap = self.before = snapshot(self.w.store)
        self.stale = False
        problems = (
            award_problems(snap) + capacity_problems(snap, self.capacity) + brokering_problems(snap)
        )
        assert not problems, problems


SETTINGS = {
    "sqlite": settings(max_examples=80, stateful_step_count=30),
    "postgresql": settings(max_examples=40, stateful_step_count=30),
}


def test_the_market_keeps_its_rules_under_random_calls(store):
    world = build_world(store)
    run_state_machine_as_test(
        lambda: MarketMachine(world),
        settings=settings(
            SETTINGS[store.backend],
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
