"""The auction rule as pure arithmetic: worked examples and hypothesis properties."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.scoring import PPM, SealedBid, clear, multiplier, score, score_decimal

FULL, NEWCOMER, NONE = PPM, PPM // 2, 0


def bids(*specs: tuple[int, int]) -> list[SealedBid]:
    """``(price, reputation_ppm)`` pairs -> bids with ids and providers 1, 2, ..."""
    return [SealedBid(i + 1, i + 1, price, rep) for i, (price, rep) in enumerate(specs)]


def result(outcomes):
    return {o.bid.provider_id: (o.rank, o.won, o.payment) for o in outcomes}


# -- worked examples ------------------------------------------------------------------------


def test_vickrey_procurement_winner_is_paid_the_second_lowest_ask():
    # Vickrey (1961), turned round for buying: asks 100, 120, 150 on price alone (w = 0).
    out = clear(
        bids((120, NEWCOMER), (100, NEWCOMER), (150, NEWCOMER)),
        quantity=1,
        reserve=1000,
        weight_ppm=0,
    )
    assert result(out) == {2: (1, True, 120), 1: (2, False, None), 3: (3, False, None)}


def test_reserve_is_a_phantom_bid_for_a_lone_bidder():
    # Myerson (1981) / Riley & Samuelson (1981): with one bidder the reserve sets the price.
    assert result(clear(bids((100, FULL)), quantity=1, reserve=130, weight_ppm=PPM)) == {
        1: (1, True, 130)
    }


def test_payment_is_capped_by_the_reserve():
    out = clear(bids((100, FULL), (200, FULL)), quantity=1, reserve=150, weight_ppm=0)
    assert result(out) == {1: (1, True, 150)}  # the 200 ask is above the reserve: not valid


def test_uniform_price_for_k_identical_blocks_is_the_k_plus_first_ask():
    # Multi-unit Vickrey with unit demand (Vickrey 1961; Krishna, Auction Theory, ch. 12):
    # two units, asks 10, 20, 30, 40: the two lowest win, each is paid 30.
    out = clear(
        bids((30, FULL), (10, FULL), (40, FULL), (20, FULL)),
        quantity=2,
        reserve=100,
        weight_ppm=PPM,
    )
    assert result(out) == {
        2: (1, True, 30),
        4: (2, True, 30),
        1: (3, False, None),
        3: (4, False, None),
    }


def test_fewer_bids_than_blocks_all_win_at_the_reserve():
    out = clear(bids((10, FULL), (20, NONE)), quantity=3, reserve=50, weight_ppm=PPM)
    assert [(o.won, o.payment) for o in out] == [(True, 50), (True, 50)]


def test_second_score_rule_reputation_outweighs_a_lower_price():
    # Che (1993)'s second-score auction with score = price * (1 + w (1 - reputation)), w = 1:
    # A asks 100 with a perfect record (score 100); B asks 90 as a newcomer (score 135).
    # A wins and is paid the price that ties B's score: 135.
    out = clear(bids((100, FULL), (90, NEWCOMER)), quantity=1, reserve=500, weight_ppm=PPM)
    assert result(out) == {1: (1, True, 135), 2: (2, False, None)}
    assert [score_decimal(o.score) for o in out] == [100, 135]


def test_second_score_payment_depends_on_the_winners_own_reputation():
    # A (0.8) asks 100: score 120; B (0.2) asks 70: score 126. A pays floor(126 / 1.2) = 105.
    out = clear(bids((100, 800_000), (70, 200_000)), quantity=1, reserve=500, weight_ppm=PPM)
    assert result(out) == {1: (1, True, 105), 2: (2, False, None)}


def test_ties_go_to_the_better_reputation_then_the_earlier_bid():
    # Equal scores: 100 * (1 + 0.5 * 0.2) = 110 = 110 * (1 + 0.5 * 0).
    out = clear(bids((110, FULL), (100, 800_000)), quantity=1, reserve=500, weight_ppm=500_000)
    assert out[0].score == out[1].score
    assert result(out)[1] == (1, True, 110)
    same = clear(bids((100, FULL), (100, FULL)), quantity=1, reserve=500, weight_ppm=PPM)
    assert [o.bid.bid_id for o in same if o.won] == [1]
    assert same[0].payment == 100


def test_score_arithmetic_is_exact():
    assert multiplier(PPM, NEWCOMER) == 1_500_000_000_000
    assert score(3, 333_333, 0) == 3 * 1_333_333_000_000
    assert score_decimal(score(3, 333_333, 0)) == Decimal("3.999999")


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        clear([], quantity=0, reserve=1, weight_ppm=0)
    with pytest.raises(ValueError):
        clear([], quantity=1, reserve=1, weight_ppm=-1)
    assert clear([], quantity=1, reserve=1, weight_ppm=0) == []


# -- properties -----------------------------------------------------------------------------

RESERVE = 10_000


@st.composite
def auctions(draw, min_bids=1):
    n = draw(st.integers(min_bids, 8))
    prices = draw(st.lists(st.integers(0, RESERVE), min_size=n, max_size=n))
    reps = draw(st.lists(st.integers(0, PPM), min_size=n, max_size=n))
    sealed = [SealedBid(i + 1, i + 1, p, r) for i, (p, r) in enumerate(zip(prices, reps))]
    return (sealed, draw(st.integers(1, 4)), draw(st.integers(0, 3 * PPM)))


def run(sealed, quantity, weight):
    return clear(sealed, quantity=quantity, reserve=RESERVE, weight_ppm=weight)


def with_price(sealed, provider, price):
    return [
        SealedBid(b.bid_id, b.provider_id, price, b.reputation_ppm)
        if b.provider_id == provider
        else b
        for b in sealed
    ]


def utility(sealed, quantity, weight, provider, cost):
    for o in run(sealed, quantity, weight):
        if o.bid.provider_id == provider:
            return o.payment - cost if o.won else 0
    raise AssertionError("bidder missing")


@settings(max_examples=300, deadline=None)
@given(auctions())
def test_winners_are_paid_between_their_bid_and_the_reserve(case):
    outcomes = run(*case)
    winners = [o for o in outcomes if o.won]
    assert len(winners) == min(case[1], len(case[0]))
    for o in winners:
        assert o.bid.price <= o.payment <= RESERVE


@settings(max_examples=300, deadline=None)
@given(auctions(min_bids=2), st.data())
def test_a_loser_never_starts_winning_by_asking_more(case, data):
    sealed, quantity, weight = case
    losers = [o.bid for o in run(*case) if not o.won]
    if not losers:
        return
    loser = data.draw(st.sampled_from(losers))
    higher = data.draw(st.integers(loser.price, RESERVE))
    again = result(run(with_price(sealed, loser.provider_id, higher), quantity, weight))
    assert again[loser.provider_id][1] is False


@settings(max_examples=300, deadline=None)
@given(auctions(), st.data())
def test_a_winner_keeps_winning_at_a_lower_ask(case, data):
    sealed, quantity, weight = case
    winner = data.draw(st.sampled_from([o.bid for o in run(*case) if o.won]))
    lower = data.draw(st.integers(0, winner.price))
    again = result(run(with_price(sealed, winner.provider_id, lower), quantity, weight))
    assert again[winner.provider_id][1] is True


@settings(max_examples=400, deadline=None)
@given(auctions(), st.data())
def test_asking_the_true_cost_is_never_worse_than_any_other_ask(case, data):
    sealed, quantity, weight = case
    bidder = data.draw(st.sampled_from(sealed)).provider_id
    cost = data.draw(st.integers(0, RESERVE))
    other = data.draw(st.integers(0, RESERVE))
    truthful = utility(with_price(sealed, bidder, cost), quantity, weight, bidder, cost)
    deviating = utility(with_price(sealed, bidder, other), quantity, weight, bidder, cost)
    assert truthful >= deviating
    assert truthful >= 0  # individually rational: never paid below cost


@settings(max_examples=100, deadline=None)
@given(auctions(), st.randoms())
def test_the_outcome_does_not_depend_on_the_order_bids_are_read(case, rnd: random.Random):
    sealed, quantity, weight = case
    shuffled = list(sealed)
    rnd.shuffle(shuffled)
    assert result(run(sealed, quantity, weight)) == result(run(shuffled, quantity, weight))


@settings(max_examples=200, deadline=None)
@given(auctions(min_bids=2))
def test_all_winners_clear_at_one_score(case):
    sealed, quantity, weight = case
    outcomes = run(sealed, quantity, weight)
    if len(outcomes) <= quantity:
        return
    threshold = outcomes[quantity].score
    for o in outcomes[:quantity]:
        m = multiplier(weight, o.bid.reputation_ppm)
        assert o.payment == min(RESERVE, threshold // m)
        # The payment is the highest ask that would still have scored no worse than the
        # threshold.
        assert o.payment * m <= threshold or o.payment == RESERVE
