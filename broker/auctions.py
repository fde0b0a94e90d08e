"""Online sealed-bid reverse auctions of blocks of time of usage (rules in `broker.scoring`).

The request's user (or its home provider, the auctioneer) opens an auction of ``quantity``
identical blocks of a brokering request with a reserve price per block and a closing time.
Providers of other networks that can deliver the request bid until the close; a bid arriving
at or after ``closes_at`` is refused (`LateBid`). At the close the bids are scored with each
bidder's reputation as of the close, the winners get awards at their second-price payments, and
every bid keeps the reputation and rank it was judged by.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Select, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from broker.actors import Actor, require_provider
from broker.awards import make_award
from broker.brokering import lock_request, require_brokering, require_unbrokered
from broker.clock import as_utc, resolve_now
from broker.currency import check_amount
from broker.errors import (
    AuctionNotOpen,
    AuctionStillOpen,
    InvalidInput,
    LateBid,
    NotEligible,
    NotFound,
    NotYours,
)
from broker.groups import group_of_request
from broker.idempotency import once
from broker.models import Auction, Bid, Provider, ServiceRequest
from broker.reputation import DEFAULT_POLICY, ReputationPolicy, reputation_table
from broker.requests import capability, why_not
from broker.scoring import clear_columns
from broker.store import execute_many, fetch_tuples


def get_auction(session: Session, auction_id: int, *, lock: bool = False) -> Auction:
    query = select(Auction).where(Auction.id == auction_id)
    auction = session.scalar(query.with_for_update() if lock else query)
    if auction is None:
        raise NotFound("auction", auction_id)
    return auction


def open_auction(
    session: Session,
    actor: Actor,
    request_id: int,
    *,
    closes_at: datetime,
    reserve_price_minor: int,
    quantity: int = 1,
    reputation_weight_ppm: int = 1_000_000,
    opens_at: datetime | None = None,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> Auction:
    """Auction ``quantity`` blocks of a brokering block-of-time request."""
    now = resolve_now(now)
    request = session.get(ServiceRequest, request_id)
    if request is None:
        raise NotFound("request", request_id)
    if not (
        actor.speaks_for_user(request.user_id)
        or actor.speaks_for_provider(request.home_provider_id)
    ):
        raise NotYours(
            f"{actor} may not auction request {request_id}", where=f"request {request_id}"
        )
    if not request.is_block:
        raise InvalidInput(
            "an auction sells blocks of time: the request needs starts_at and ends_at",
            where=f"request {request_id}",
            field="starts_at",
        )
    closes_at = as_utc(closes_at, field="closes_at")
    # The fingerprint is of what the caller sent: an omitted opens_at stays None there, so a
    # retry of the same body later is still the same call.
    sent_opens_at = None if opens_at is None else as_utc(opens_at, field="opens_at")
    opens_at = now if sent_opens_at is None else sent_opens_at
    assert request.ends_at is not None  # a block has both ends
    if closes_at >= request.ends_at:
        raise InvalidInput(
            f"the block ends at {request.ends_at.isoformat()}; the auction must close before it",
            field="closes_at",
        )
    check_amount(reserve_price_minor, field="reserve_price_minor", allow_zero=False)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 1000:
        raise InvalidInput("quantity is a whole number of blocks, 1..1000", field="quantity")
    if (
        isinstance(reputation_weight_ppm, bool)
        or not isinstance(reputation_weight_ppm, int)
        or not 0 <= reputation_weight_ppm <= 100_000_000
    ):
        raise InvalidInput(
            "the reputation weight is in millionths, 0..100000000", field="reputation_weight_ppm"
        )
    limit = request.max_price_minor
    if limit is not None and reserve_price_minor * quantity > limit:
        raise InvalidInput(
            f"{quantity} block(s) at the reserve {reserve_price_minor} exceed the "
            f"request's limit {limit}",
            field="reserve_price_minor",
        )
    if quantity > 1 and group_of_request(session, request_id) is not None:
        raise InvalidInput("a group's request is auctioned as one block", field="quantity")
    params = {
        "request": request_id,
        "closes": closes_at,
        "reserve": reserve_price_minor,
        "quantity": quantity,
        "weight": reputation_weight_ppm,
        "opens": sent_opens_at,
    }

    def run() -> Auction:
        # The clock and the request's state (under its row lock) are checked after the
        # idempotency key was looked up: a retry gets the first auction, not an error.
        if closes_at <= max(now, opens_at):
            raise InvalidInput("closes_at must be after now and after opens_at", field="closes_at")
        lock_request(session, request_id)
        require_brokering(request, "auctioned")
        require_unbrokered(session, request)
        auction = Auction(
            request_id=request_id,
            auctioneer_id=request.home_provider_id,
            quantity=quantity,
            reserve_price_minor=reserve_price_minor,
            currency=request.currency,
            reputation_weight_ppm=reputation_weight_ppm,
            opens_at=opens_at,
            closes_at=closes_at,
            created_at=now,
        )
        session.add(auction)
        session.flush()
        return auction

    return once(session, actor, idempotency_key, "auction.open", params, Auction, run)


# The bid path's reads, built once and run through Core (rows, not objects): a bid is the
# broker's most frequent write, and on SQLite building an ORM query costs more than running it.
_HomeProvider = aliased(Provider)
_BID_TERMS = (
    select(
        Auction.status,
        Auction.opens_at,
        Auction.closes_at,
        Auction.reserve_price_minor,
        Auction.currency,
        Auction.quantity,
        ServiceRequest.services,
        ServiceRequest.starts_at,
        ServiceRequest.ends_at,
        ServiceRequest.min_rate_bps,
        ServiceRequest.max_rate_bps,
        _HomeProvider.network_id.label("home_network"),
    )
    .join(ServiceRequest, ServiceRequest.id == Auction.request_id)
    .join(_HomeProvider, _HomeProvider.id == ServiceRequest.home_provider_id)
    .where(Auction.id == bindparam("auction"))
)


def _upsert_bid(insert):
    """INSERT the bid, or replace the provider's earlier one (a revision more); one statement.

    ``insert`` is the dialect's (SQLite's and PostgreSQL's both take ON CONFLICT DO UPDATE).
    """
    table = Bid.__table__
    stmt = insert(table).values(
        auction_id=bindparam("auction"),
        provider_id=bindparam("provider"),
        price_minor=bindparam("price"),
        revision=1,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[table.c.auction_id, table.c.provider_id],
        set_={
            "price_minor": stmt.excluded.price_minor,
            "updated_at": stmt.excluded.updated_at,
            "revision": table.c.revision + 1,
        },
    ).returning(table.c.id, table.c.revision, table.c.created_at)


_UPSERT_BID = {"sqlite": _upsert_bid(sqlite_insert), "postgresql": _upsert_bid(postgresql_insert)}


def submit_bid(
    session: Session,
    actor: Actor,
    auction_id: int,
    *,
    provider_id: int,
    price_minor: int,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> Bid:
    """A provider's sealed ask for one block; resubmitting before the close replaces it."""
    now = resolve_now(now)
    require_provider(actor, provider_id, "bid")
    # Core on the session's connection: rows, not objects (nothing of the session's is
    # pending that these reads should see; flush() makes sure).
    session.flush()
    conn = session.connection()
    terms = conn.execute(_BID_TERMS, {"auction": auction_id}).first()
    if terms is None:
        raise NotFound("auction", auction_id)
    where = f"auction {auction_id}"
    params = {"auction": auction_id, "provider": provider_id, "price": price_minor}

    def run() -> Bid:
        # Checked after the idempotency key was looked up: a bid whose answer was lost and
        # whose retry comes after the close (or after the bidder's room went elsewhere) gets
        # the bid it made, not a 409 saying it was refused.
        if terms.status != "open":
            raise AuctionNotOpen(f"the auction is {terms.status}", where=where)
        if now >= terms.closes_at:
            raise LateBid(
                f"bids closed at {terms.closes_at.isoformat()}; this bid arrived at "
                f"{now.isoformat()}",
                where=where,
            )
        if now < terms.opens_at:
            raise AuctionNotOpen(f"bids open at {terms.opens_at.isoformat()}", where=where)
        check_amount(price_minor, field="price_minor")
        if price_minor > terms.reserve_price_minor:
            raise InvalidInput(
                f"the ask {price_minor} is above the reserve "
                f"{terms.reserve_price_minor} {terms.currency}",
                where=where,
                field="price_minor",
            )
        bidder = capability(conn, provider_id)
        if bidder is None:
            raise NotFound("provider", provider_id)
        if bidder.network_id == terms.home_network:
            raise NotEligible(
                f"provider {provider_id} is of the home network; auctions are "
                f"for providers of other networks",
                where=where,
            )
        # The request's currency is the auction's (open_auction copies it).
        reason = why_not(conn, bidder, terms, now, shares=terms.quantity)
        if reason is not None:
            raise NotEligible(reason, where=where)
        row = conn.execute(
            _UPSERT_BID[conn.dialect.name],
            {"auction": auction_id, "provider": provider_id, "price": price_minor, "now": now},
        ).one()
        held = session.identity_map.get(identity_key(Bid, row.id))
        if held is not None:  # loaded earlier in this session: reload it on its next access
            session.expire(held)
            return held
        # The row as stored, handed to the session as if loaded (no second query); the result
        # columns stay empty until the close.
        bid = Bid(
            id=row.id,
            auction_id=auction_id,
            provider_id=provider_id,
            price_minor=price_minor,
            revision=row.revision,
            created_at=row.created_at,
            updated_at=now,
            rank=None,
            won=None,
            payment_minor=None,
            reputation_ppm=None,
            rating_count=None,
        )
        make_transient_to_detached(bid)
        session.add(bid)
        return bid

    return once(session, actor, idempotency_key, "auction.bid", params, Bid, run)


def is_request_side(actor: Actor, auction: Auction) -> bool:
    """The buyer's side: the request's user (and its devices), the auctioneer, an admin."""
    return (
        actor.is_admin
        or actor.speaks_for_provider(auction.auctioneer_id)
        or actor.speaks_for_user(auction.request.user_id)
    )


def _bid_by(session: Session, actor: Actor, auction: Auction) -> bool:
    return (
        bool(actor.provider_ids)
        and session.scalar(
            select(Bid.id).where(
                Bid.auction_id == auction.id, Bid.provider_id.in_(actor.provider_ids)
            )
        )
        is not None
    )


def _could_bid(session: Session, actor: Actor, auction: Auction, now: datetime) -> bool:
    """Whether one of the actor's providers is eligible to bid on the open ``auction``."""
    request = auction.request
    home_network = session.get_one(Provider, request.home_provider_id).network_id
    for provider_id in sorted(actor.provider_ids):
        bidder = capability(session, provider_id)
        if (
            bidder is not None
            and bidder.network_id != home_network
            and why_not(session, bidder, request, now, shares=auction.quantity) is None
        ):
            return True
    return False


def _is_party(session: Session, actor: Actor, auction: Auction) -> bool:
    """The request's side or a bidder: who sees a closed auction and may close a due one."""
    return is_request_side(actor, auction) or _bid_by(session, actor, auction)


def may_view(session: Session, actor: Actor, auction: Auction, now: datetime | None = None) -> bool:
    """Who sees an auction: its parties, and while it is open the providers that could bid."""
    if _is_party(session, actor, auction):
        return True
    return (
        auction.status == "open"
        and bool(actor.provider_ids)
        and _could_bid(session, actor, auction, resolve_now(now))
    )


def sees_recipients(session: Session, actor: Actor, auction: Auction) -> bool:
    """Recipients are the request side's to know, and the winners' once they must deliver."""
    if is_request_side(actor, auction):
        return True
    return (
        auction.status == "closed"
        and bool(actor.provider_ids)
        and session.scalar(
            select(Bid.id).where(
                Bid.auction_id == auction.id,
                Bid.won.is_(True),
                Bid.provider_id.in_(actor.provider_ids),
            )
        )
        is not None
    )


_pause = {"count": 0, "resume": False}
_pause_lock = threading.Lock()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off Python's cycle collector while a close churns through tens of thousands of row
    tuples: they would set off full collections (tens of milliseconds each, over the whole
    heap) and hold no cycles to collect. Overlapping pauses (threads) end with the last one;
    a collector that was off already stays off."""
    with _pause_lock:
        if _pause["count"] == 0:
            _pause["resume"] = gc.isenabled()
            gc.disable()
        _pause["count"] += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pause["count"] -= 1
            if _pause["count"] == 0 and _pause["resume"]:
                gc.enable()


_BIDS_TO_CLOSE = select(Bid.id, Bid.provider_id, Bid.price_minor).where(
    Bid.auction_id == bindparam("auction")
)
_BID_OUTCOME = (
    update(Bid.__table__)
    .where(Bid.__table__.c.id == bindparam("b_id"))
    .values(
        rank=bindparam("b_rank"),
        won=bindparam("b_won"),
        payment_minor=bindparam("b_payment"),
        reputation_ppm=bindparam("b_rep"),
        rating_count=bindparam("b_count"),
        passed_over=bindparam("b_passed"),
        share=bindparam("b_share"),
    )
)
_OUTCOME_COLUMNS = (
    "b_rank",
    "b_won",
    "b_payment",
    "b_rep",
    "b_count",
    "b_passed",
    "b_share",
    "b_id",
)
# PostgreSQL takes the whole outcome as arrays in one statement: its executemany still pays a
# round of Python per row.
_BID_OUTCOME_ARRAYS = text(
    "UPDATE bids SET rank = v.rank, won = v.won, payment_minor = v.payment, "
    "reputation_ppm = v.rep, rating_count = v.n, passed_over = v.passed, share = v.share "
    "FROM unnest(CAST(:ranks AS INTEGER[]), CAST(:won AS BOOLEAN[]), "
    "CAST(:payments AS BIGINT[]), CAST(:reps AS INTEGER[]), CAST(:counts AS INTEGER[]), "
    "CAST(:passed AS VARCHAR[]), CAST(:shares AS INTEGER[]), CAST(:ids AS BIGINT[])) "
    "AS v(rank, won, payment, rep, n, passed, share, id) WHERE bids.id = v.id"
)
_LOCK_PROVIDERS = (
    select(Provider.id)
    .where(Provider.id.in_(bindparam("ids", expanding=True)))
    .order_by(Provider.id)
    .with_for_update()
)


def _passed_over(
    conn: Connection, auction: Auction, winners: list[int], now: datetime
) -> dict[int, str]:
    """Of the winning providers, those that can no longer carry a share, and why.

    Eligibility was checked when each bid came in; since then a provider may have booked its
    capacity in another award (or dropped a service). Their rows are locked first, in id order
    (PostgreSQL: two closes booking one provider run one after the other, and never deadlock).
    """
    conn.execute(_LOCK_PROVIDERS, {"ids": sorted(winners)}).all()
    request = auction.request
    out = {}
    for provider_id in winners:
        bidder = capability(conn, provider_id)
        reason = (
            "the provider is gone"
            if bidder is None
            else why_not(conn, bidder, request, now, shares=auction.quantity)
        )
        if reason is not None:
            out[provider_id] = f"passed over at the close: {reason}"[:300]
    return out


def _score_and_record(
    conn: Connection, session: Session, auction: Auction, policy: ReputationPolicy, now: datetime
) -> list[tuple[int, int]]:
    """Rank the auction's bids, pass over winners that can no longer carry a share (the next
    best takes the place), write every bid's outcome; the winners' (provider, payment) in rank
    order, one per share, or [] when fewer than ``quantity`` can carry one."""
    rows = fetch_tuples(conn, _BIDS_TO_CLOSE, {"auction": auction.id})
    bid_ids, bidders, prices = zip(*rows) if rows else ((), (), ())
    providers = np.fromiter(bidders, dtype=np.int64, count=len(rows))
    known, ppm, counts = reputation_table(
        session,
        "service",
        providers,
        now=now,
        policy=policy,
        measured=True,
        ids_query=select(Bid.provider_id).where(Bid.auction_id == auction.id),
    )
    at = np.searchsorted(known, providers)
    reputations, rating_counts = ppm[at].tolist(), counts[at].tolist()
    passed: dict[int, str] = {}  # bid index -> why it was passed over
    while True:
        keep = [i for i in range(len(rows)) if i not in passed] if passed else range(len(rows))
        cleared = clear_columns(
            [bid_ids[i] for i in keep] if passed else bid_ids,
            [prices[i] for i in keep] if passed else prices,
            [reputations[i] for i in keep] if passed else reputations,
            quantity=auction.quantity,
            reserve=auction.reserve_price_minor,
            weight_ppm=auction.reputation_weight_ppm,
        )
        cleared = [(keep[j], score_, won, payment) for j, score_, won, payment in cleared]
        winning = {bidders[i]: i for i, _score, won, _payment in cleared if won}
        newly = _passed_over(conn, auction, list(winning), now) if winning else {}
        if not newly:
            break
        passed.update({winning[p]: why for p, why in newly.items()})
    won_all = sum(1 for *_, won, _p in cleared if won) == auction.quantity
    outcome: list[Sequence[Any]] = []
    share = 0
    for place, (i, _score, won, payment) in enumerate(cleared, 1):
        won = won and won_all
        outcome.append(
            (
                place,
                won,
                payment if won else None,
                reputations[i],
                rating_counts[i],
                None,
                share if won else None,
                bid_ids[i],
            )
        )
        share += bool(won)
    outcome += [
        (None, False, None, reputations[i], rating_counts[i], why, None, bid_ids[i])
        for i, why in passed.items()
    ]
    if conn.dialect.name == "postgresql":
        if outcome:
            columns = [list(c) for c in zip(*outcome)]
            conn.execute(
                _BID_OUTCOME_ARRAYS,
                dict(
                    zip(
                        ("ranks", "won", "payments", "reps", "counts", "passed", "shares", "ids"),
                        columns,
                    )
                ),
            )
    else:
        execute_many(conn, _BID_OUTCOME, _OUTCOME_COLUMNS, outcome)
    # A winner's payment is set (clear_columns leaves it None only for losers).
    return (
        cast(
            "list[tuple[int, int]]",
            [(bidders[i], payment) for i, _score, won, payment in cleared if won],
        )
        if won_all
        else []
    )


def close_auction(
    session: Session,
    actor: Actor,
    auction_id: int,
    *,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
    idempotency_key: str | None = None,
) -> Auction:
    """Score the bids, pick the winners, award them at their payments (one transaction).

    The request must still be brokering (checked under its row lock): a request cancelled
    while its auction ran gets no award, and its auction ends ``cancelled``. Each winner's
    capacity is checked again at the close; a winner that cannot carry its share is passed
    over. An auction of ``quantity`` k awards all k shares or none (a stream split k ways needs
    every share carried): with fewer carriers it fails and the request stays brokering.

    Built for ten thousand bids: they come in as bare columns, the reputations as arrays
    (`reputation_table`), the rule runs over plain tuples (`clear_columns`) and every bid's
    outcome goes back in one executemany.
    """
    now = resolve_now(now)
    auction = get_auction(session, auction_id)
    where = f"auction {auction_id}"
    if not _is_party(session, actor, auction):
        raise NotYours(f"{actor} is not a party of the auction", where=where)

    def run() -> Auction:
        request = lock_request(session, auction.request_id)
        locked = get_auction(session, auction_id, lock=True)
        session.refresh(locked)
        if locked.status != "open":
            raise AuctionNotOpen(f"the auction is {locked.status} already", where=where)
        if now < locked.closes_at:
            raise AuctionStillOpen(
                f"bids are taken until {locked.closes_at.isoformat()}", where=where
            )
        locked.closed_at = now
        if request.status != "brokering":
            locked.status = "cancelled"
            locked.reason = f"request {request.id} is {request.status}; nothing is awarded"
            session.flush()
            return locked
        session.flush()  # the reads below are Core: let them see what the session has pending
        with _collector_paused():
            winners = _score_and_record(session.connection(), session, locked, policy, now)
        session.expire_all()  # bids this session holds have their outcome in the database now
        if not winners:
            locked.status = "failed"
            bids = session.scalar(
                select(func.count()).select_from(Bid).where(Bid.auction_id == auction_id)
            )
            locked.reason = (
                "no bids"
                if not bids
                else f"fewer than {locked.quantity} eligible bid(s) within the reserve"
            )
            session.flush()
            return locked
        locked.status = "closed"
        locked.reason = f"{len(winners)} share(s) awarded"
        for share, (provider_id, payment) in enumerate(winners):
            make_award(
                session,
                locked.request,
                provider_id,
                payment,
                source="auction",
                auction_id=auction_id,
                now=now,
                share=share,
                shares=locked.quantity,
            )
        session.flush()
        return locked

    return once(
        session, actor, idempotency_key, "auction.close", {"auction": auction_id}, Auction, run
    )


def visible_bids_query(session: Session, actor: Actor, auction: Auction, *columns) -> Select | None:
    """The SELECT of the bids ``actor`` may see, of ``columns`` (whole `Bid` rows by
    default), ordered by rank after the close; None when it may see none.

    Sealed until the close: before it a provider sees only its own bid, others none.
    """
    query = select(*(columns or (Bid,))).where(Bid.auction_id == auction.id)
    if auction.status == "open":
        if not actor.provider_ids:
            return None
        return query.where(Bid.provider_id.in_(actor.provider_ids)).order_by(Bid.id)
    if not _is_party(session, actor, auction):
        raise NotYours(
            f"{actor} is not a party of auction {auction.id}", where=f"auction {auction.id}"
        )
    return query.order_by(Bid.rank.is_(None), Bid.rank, Bid.id)


def visible_bids(session: Session, actor: Actor, auction: Auction) -> list[Bid]:
    """The bids ``actor`` may see (`visible_bids_query`)."""
    query = visible_bids_query(session, actor, auction)
    return [] if query is None else list(session.scalars(query))


def get_bid(session: Session, actor: Actor, bid_id: int) -> Bid:
    bid = session.get(Bid, bid_id)
    if bid is None:
        raise NotFound("bid", bid_id)
    if bid.auction.status == "open" and not actor.speaks_for_provider(bid.provider_id):
        raise NotYours(
            f"bid {bid_id} is sealed until auction {bid.auction_id} closes at "
            f"{bid.auction.closes_at.isoformat()}",
            where=f"bid {bid_id}",
        )
    if bid.auction.status != "open" and not _is_party(session, actor, bid.auction):
        raise NotYours(f"{actor} is not a party of auction {bid.auction_id}", where=f"bid {bid_id}")
    return bid


def list_auctions(
    session: Session,
    actor: Actor,
    *,
    status: str = "open",
    after: int | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> list[Auction]:
    """Auctions by status, newest first, that ``actor`` may see (`may_view`): a provider finds
    here the open auctions it could bid on. ``after``: the last id of the page before."""
    now = resolve_now(now)
    query = select(Auction).where(Auction.status == status).order_by(Auction.id.desc())
    if after is not None:
        query = query.where(Auction.id < after)
    if actor.is_admin:
        return list(session.scalars(query.limit(limit)))
    if actor.user_id is not None and not actor.provider_ids:
        mine = select(ServiceRequest.id).where(ServiceRequest.user_id == actor.user_id)
        return list(session.scalars(query.where(Auction.request_id.in_(mine)).limit(limit)))
    found = []
    for auction in session.scalars(query.execution_options(yield_per=200)):
        if may_view(session, actor, auction, now):
            found.append(auction)
            if len(found) >= limit:
                break
    return found
