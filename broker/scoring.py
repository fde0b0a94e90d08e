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

from collections.abc import Iterable
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


def rank(bids: Iterable[SealedBid], weight_ppm: int) -> list[tuple[int, SealedBid]]:
    """Bids with their scores, best first, ties broken as in the module doc."""
    scored = [(score(b.price, weight_ppm, b.reputation_ppm), b) for b in bids]
    scored.sort(key=lambda sb: (sb[0], -sb[1].reputation_ppm, sb[1].bid_id))
    return scored


def clear(bids: Iterable[SealedBid], *, quantity: int, reserve: int,
          weight_ppm: int) -> list[Outcome]:
    """Rank ``bids`` and pay the ``quantity`` winners; bids above the reserve cannot win."""
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    if weight_ppm < 0:
        raise ValueError("the reputation weight must not be negative")
    ranked = rank((b for b in bids if b.price <= reserve), weight_ppm)
    threshold = ranked[quantity][0] if len(ranked) > quantity else None
    outcomes = []
    for position, (scaled, bid) in enumerate(ranked):
        won = position < quantity
        payment = None
        if won:
            payment = reserve if threshold is None else min(
                reserve, threshold // multiplier(weight_ppm, bid.reputation_ppm))
        outcomes.append(Outcome(bid, position + 1, scaled, won, payment))
    return outcomes
