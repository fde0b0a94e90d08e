"""The auction's scoring and payment rule, as pure integer arithmetic over sealed bids.

Scoring (lower is better): a bid's **score** is its price inflated by its bidder's lack of
reputation::

    score = price * (1 + w * (1 - reputation))

with ``reputation`` in [0, 1] (`broker.reputation`, 0.5 for a newcomer) and the auction's weight
``w >= 0``. With ``w = 1`` a provider nobody trusts must ask half as much as a perfectly rated
one to score the same; with ``w = 0`` the auction is on price alone. The score is a
quality-adjusted price (a "scoring auction", Che 1993; Asker & Cantillon 2008), so the rules of
price auctions carry over.

Winners: the ``k`` best scores win one block each. Ties are broken by higher reputation, then by
the earlier bid (lower bid id): deterministic and independent of the order bids are read in.

Payment (generalised second price): each winner is paid the price at which its score would have
tied the best losing score, the (k+1)-th, capped by the reserve::

    payment_i = min(reserve, floor(score_(k+1) / (1 + w * (1 - reputation_i))))

and the reserve alone when there is no (k+1)-th bid. Since a winner's score is at most the
(k+1)-th, its payment is never below its own bid. All k winners clear at one score, the
(k+1)-th: a uniform price in score terms, which is a uniform money price whenever the winners'
reputations are equal (and always when ``w = 0``). The payment does not depend on the winner's own
bid, so asking one's true cost is a dominant strategy (Vickrey 1961).

Reputations and ``w`` are integer millionths, so every score is an exact integer (scaled by
10**12) and no float ever decides who wins or what is paid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

PPM = 1_000_000
SCALE = PPM * PPM


def multiplier(weight_ppm: int, reputation_ppm: int) -> int:
    """``1 + w * (1 - reputation)`` scaled by 10**12."""
    return SCALE + weight_ppm * (PPM - reputation_ppm)


def score(price: int, weight_ppm: int, reputation_ppm: int) -> int:
    """A bid's score scaled by 10**12 (exact)."""
    return price * multiplier(weight_ppm, reputation_ppm)


def score_decimal(scaled: int) -> Decimal:
    """A scaled score as an exact decimal, for display."""
    return Decimal(scaled).scaleb(-12)


@dataclass(frozen=True)
class SealedBid:
    bid_id: int
    provider_id: int
    price: int
    reputation_ppm: int


@dataclass(frozen=True)
class Outcome:
    bid: SealedBid
    rank: int
    score: int
    won: bool
    payment: int | None


def clear(
    bids: Iterable[SealedBid], *, quantity: int, reserve: int, weight_ppm: int
) -> list[Outcome]:
    """Rank ``bids`` and pay the ``quantity`` winners; bids above the reserve cannot win."""
    bids = list(bids)
    cleared = clear_columns(
        [b.bid_id for b in bids],
        [b.price for b in bids],
        [b.reputation_ppm for b in bids],
        quantity=quantity,
        reserve=reserve,
        weight_ppm=weight_ppm,
    )
    return [
        Outcome(bids[i], place, scaled, won, payment)
        for place, (i, scaled, won, payment) in enumerate(cleared, 1)
    ]


def clear_columns(
    bid_ids: Sequence[int],
    prices: Sequence[int],
    reputations: Sequence[int],
    *,
    quantity: int,
    reserve: int,
    weight_ppm: int,
) -> list[tuple[int, int, bool, int | None]]:
    """`clear` over parallel columns (what an auction's close reads), without an object per bid.

    Returns ``(index, score, won, payment)`` for each bid within the reserve, best first (the
    rank is the place in the list); ``index`` points into the inputs. Scores are Python ints:
    a price times a 10**12-scaled multiplier outgrows 64 bits.
    """
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    if weight_ppm < 0:
        raise ValueError("the reputation weight must not be negative")
    # Sorting plain tuples orders by score, then higher reputation, then the earlier bid.
    ranked = sorted(
        (price * (SCALE + weight_ppm * (PPM - rep)), -rep, bid_id, i)
        for i, (bid_id, price, rep) in enumerate(zip(bid_ids, prices, reputations))
        if price <= reserve
    )
    threshold = ranked[quantity][0] if len(ranked) > quantity else None
    cleared = []
    for place, (scaled, minus_rep, _bid_id, i) in enumerate(ranked):
        won = place < quantity
        payment = None
        if won:
            payment = (
                reserve
                if threshold is None
                else min(reserve, threshold // multiplier(weight_ppm, -minus_rep))
            )
        cleared.append((i, scaled, won, payment))
    return cleared
