"""Paying statements by card, in the domain, on SQLite and PostgreSQL: cards checked and kept
as tokens, the test gateway's cards, fifty concurrent retries charging once, dunning, the
unknown-status resolver, refunds, the ledger and the payment rating."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from billing_world import VOLUME, award
from locations import ROOT
from marketplace import T0
from sqlalchemy import func, select

from broker import payment_jobs as jobs
from broker import payment_methods as methods
from broker import payments as pm
from broker import refunds as rf
from broker import statements as st
from broker.awards import make_award
from broker.cards import check_card
from broker.errors import Conflict, InvalidInput, NotYours, WrongState
from broker.ledger import balance, cash, receivable, refunds
from broker.models import (
    Payment,
    PaymentMethod,
    Rating,
    ServiceRequest,
    Statement,
    TestGatewayOperation,
)
from broker.payment_gateway import gateway, registry
from broker.requests import submit_request
from broker.test_gateway import TestGateway

JAN = "2030-01"
AFTER_JAN = datetime(2030, 2, 1, 1, tzinfo=UTC)  # closed then; due 14 days later
ON_TIME = AFTER_JAN + timedelta(days=1)
LATE = AFTER_JAN + timedelta(days=20)


def billed(store, world) -> int:
    """alice owes 5.00 EUR to home for north's award in January 2030: her statement's id."""
    alice = world.m.actor("device", world.alice_phone)
    award(store, alice, world.north, price=500, at=T0)
    st.close_period(
        store.write, world.m.actor("provider", world.home), world.home, JAN, now=AFTER_JAN
    )
    with store.read() as s:
        return s.scalar(select(Statement.id).where(Statement.user_id == world.alice))


def card(store, world, token="tok_visa", user=None) -> int:
    user = user or world.alice
    with store.write() as s:
        return methods.add_method(
            s,
            world.m.actor("user", user),
            user,
            TestGateway(store),
            token=token,
            make_default=True,
            now=AFTER_JAN,
        ).id


def test_card_numbers_are_checked_before_the_gateway():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    good = check_card("4242 4242 4242 4242", 12, 2034, now)
    assert (good.brand, good.last4) == ("visa", "4242") and "4242 4242" not in repr(good)
    assert check_card("378282246310005", 1, 2030, now).brand == "amex"
    for number, says in (
        ("4242424242424241", "Luhn"),
        ("42424242", "12..19"),
        ("4242-4242-4242-424x", "digits only"),
        ("9242424242424242", "brand"),
        ("42424242424242", "visa card number has"),
    ):
        with pytest.raises(InvalidInput) as caught:
            check_card(number, 12, 2034, now)
        assert caught.value.field == "card_number" and says in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        check_card("4242424242424242", 12, 2029, now)
    assert caught.value.field == "exp_year" and "expired" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        check_card("4242424242424242", 13, 2034, now)
    assert caught.value.field == "exp_month"


def test_the_test_gateway_is_found_through_the_registry(store):
    assert registry()["test"] == "broker.test_gateway:TestGateway"
    assert isinstance(gateway("test", store), TestGateway)
    with pytest.raises(InvalidInput) as caught:
        gateway("nowhere", store)
    assert caught.value.field == "gateway"


def test_cards_are_kept_as_tokens_with_one_default(store, world):
    gw = TestGateway(store)
    alice = world.m.actor("user", world.alice)
    with store.write() as s:
        first = methods.add_method(
            s,
            alice,
            world.alice,
            gw,
            card_number="5555 5555 5555 4444",
            exp_month=3,
            exp_year=2031,
            now=AFTER_JAN,
            idempotency_key="k1",
        )
        again = methods.add_method(
            s,
            alice,
            world.alice,
            gw,
            card_number="5555 5555 5555 4444",
            exp_month=3,
            exp_year=2031,
            now=AFTER_JAN,
            idempotency_key="k1",
        )
        second = methods.add_method(s, alice, world.alice, gw, token="tok_amex", now=AFTER_JAN)
        assert again.id == first.id
        kept = methods.list_methods(s, alice, world.alice)
        assert [(m.brand, m.last4, m.is_default) for m in kept] == [
            ("mastercard", "4444", True),
            ("amex", "0005", False),
        ]
        stored = s.execute(select(PaymentMethod.__table__)).all()
        assert not any("5555555555554444" in str(v) for row in stored for v in row)
        for kw, field in (
            ({"token": "tok_nope"}, "token"),
            ({"card_number": "4242424242424241", "exp_month": 1, "exp_year": 2031}, "card_number"),
            ({"card_number": "4242424242424242", "exp_month": 1, "exp_year": 2029}, "exp_year"),
            ({"card_number": "4012888888881881", "exp_month": 1, "exp_year": 2031}, "card_number"),
        ):  # real-looking: not a test card
            with pytest.raises(InvalidInput) as caught:
                methods.add_method(s, alice, world.alice, gw, now=AFTER_JAN, **kw)
            assert caught.value.field == field
        with pytest.raises(NotYours):
            methods.add_method(
                s, world.m.actor("user", world.bob), world.alice, gw, token="tok_visa"
            )
        methods.delete_method(s, alice, world.alice, first.id, now=AFTER_JAN)
        methods.delete_method(s, alice, world.alice, first.id, now=AFTER_JAN)  # again: nothing
        assert [(m.id, m.is_default) for m in methods.list_methods(s, alice, world.alice)] == [
            (second.id, True)
        ]


def test_paying_a_statement_posts_to_the_ledger_and_rates_the_user(store, world):
    sid = billed(store, world)
    card(store, world)
    alice = world.m.actor("user", world.alice)
    with pytest.raises(NotYours):
        pm.pay(store, world.m.actor("user", world.bob), sid, now=ON_TIME)
    with pytest.raises(InvalidInput) as caught:
        pm.pay(store, alice, sid, amount_minor=501, now=ON_TIME)
    assert caught.value.field == "amount_minor"
    part = pm.pay(store, alice, sid, amount_minor=200, now=ON_TIME)
    assert (part.status, part.attempt, part.amount_minor) == ("succeeded", 1, 200)
    rest = pm.pay(store, alice, sid, now=ON_TIME)
    assert (rest.status, rest.attempt, rest.amount_minor) == ("succeeded", 2, 300)
    with pytest.raises(WrongState) as caught:
        pm.pay(store, alice, sid, now=ON_TIME)
    assert "paid" in caught.value.message
    with store.read() as s:
        statement = s.get(Statement, sid)
        assert (statement.paid_minor, statement.paid_at) == (500, ON_TIME)
        assert pm.payment_state(s, statement, LATE)["state"] == "paid"
        assert balance(s, receivable(world.alice), "EUR") == 0
        assert balance(s, cash(world.home), "EUR") == 500
        assert [
            (r.provider_id, r.score)
            for r in s.scalars(select(Rating).where(Rating.direction == "payment"))
        ] == [(world.north, 100)]
    assert TestGateway(store).charges() == 2


@pytest.mark.parametrize("same_key", [True, False])
def test_fifty_concurrent_retries_charge_at_most_once(store, world, same_key):
    sid = billed(store, world)
    card(store, world)
    alice = world.m.actor("user", world.alice)
    barrier = threading.Barrier(50)
    outcomes: list = []

    def retry(i: int) -> None:
        barrier.wait()
        try:
            p = pm.pay(
                store, alice, sid, now=ON_TIME, idempotency_key="pay-1" if same_key else f"pay-{i}"
            )
            outcomes.append(("paid", p.id, p.status))
        except (Conflict, WrongState) as exc:
            outcomes.append(("refused", type(exc).__name__, None))

    threads = [threading.Thread(target=retry, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 50
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
        assert s.scalar(select(func.count()).select_from(TestGatewayOperation)) == 1
        assert s.get(Statement, sid).paid_minor == 500
        assert balance(s, receivable(world.alice), "EUR") == 0
    assert TestGateway(store).charges() == 1
    paid = {o[1] for o in outcomes if o[0] == "paid"}
    assert len(paid) == 1
    if same_key:  # every retry by the key gets the one payment
        assert len([o for o in outcomes if o[0] == "paid"]) == 50


def test_a_decline_is_retried_on_the_dunning_schedule_and_overdue_rates_low(store, world):
    sid = billed(store, world)
    card(store, world, "tok_chargeDeclinedInsufficientFunds")
    alice = world.m.actor("user", world.alice)
    failed = pm.pay(store, alice, sid, now=ON_TIME)
    assert (failed.status, failed.decline_code) == ("failed", "insufficient_funds")
    assert failed.next_retry_at == ON_TIME + pm.RETRY_AFTER[0]
    assert jobs.run_due(store, now=ON_TIME + timedelta(hours=1))["retried"] == 0  # not yet
    assert jobs.run_due(store, now=ON_TIME + timedelta(days=1))["retried"] == 1
    with store.read() as s:
        second = s.scalar(select(Payment).where(Payment.attempt == 2))
        assert (second.status, second.trigger) == ("failed", "dunning")
        assert s.get(Statement, sid).paid_at is None
    report = jobs.run_due(store, now=LATE)  # attempt 3 (due on day 4) fails; overdue: rated 0
    assert (report["retried"], report["rated_overdue"]) == (1, 1)
    with store.read() as s:
        assert pm.payment_state(s, s.get(Statement, sid), LATE)["state"] == "overdue"
        assert s.scalar(select(Rating.score).where(Rating.direction == "payment")) == 0
    card(store, world, "tok_visa")  # a new default card; the retry pays
    later = LATE + timedelta(days=10)
    assert jobs.run_due(store, now=later)["retried"] == 1
    with store.read() as s:
        statement = s.get(Statement, sid)
        assert statement.paid_at == later
        assert s.scalar(select(Rating.score).where(Rating.direction == "payment")) == 40
        assert [p.status for p in s.scalars(select(Payment).order_by(Payment.attempt))] == [
            "failed",
            "failed",
            "failed",
            "succeeded",
        ]


@pytest.mark.parametrize(
    "token,code",
    [
        ("tok_chargeDeclined", "generic_decline"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
        ("tok_chargeDeclinedLostCard", "lost_card"),
        ("tok_chargeDeclinedProcessingError", "processing_error"),
    ],
)
def test_each_declining_test_card(store, world, token, code):
    sid = billed(store, world)
    card(store, world, token)
    p = pm.pay(store, world.m.actor("user", world.alice), sid, now=ON_TIME)
    assert (p.status, p.decline_code) == ("failed", code) and p.decline_message
    with store.read() as s:
        assert s.get(Statement, sid).paid_minor == 0
        assert balance(s, cash(world.home), "EUR") == 0


def test_a_timeout_is_resolved_by_asking_the_gateway_never_by_charging_again(store, world):
    sid = billed(store, world)
    card(store, world, "tok_timeout")
    alice = world.m.actor("user", world.alice)
    lost = pm.pay(store, alice, sid, now=ON_TIME)
    assert lost.status == "unknown"
    with pytest.raises(Conflict):  # in flight: no second attempt
        pm.pay(store, alice, sid, now=ON_TIME)
    assert jobs.run_due(store, now=ON_TIME)["resolved"] == 1
    with store.read() as s:
        assert s.get(Payment, lost.id).status == "succeeded"
        assert s.get(Statement, sid).paid_minor == 500
    assert TestGateway(store).charges() == 1


def test_collection_charges_the_default_card_after_a_close(store, world):
    sid = billed(store, world)
    assert jobs.collect(store, [sid], now=AFTER_JAN) == {"skipped": 1}  # no card yet
    card(store, world)
    assert jobs.collect(store, [sid], now=AFTER_JAN) == {"succeeded": 1}
    assert jobs.collect(store, [sid], now=AFTER_JAN) == {"skipped": 1}  # paid
    with store.read() as s:
        assert s.scalar(select(Payment.trigger)) == "collection"


def test_refunds_never_pass_what_was_paid_and_keep_the_books(store, world):
    sid = billed(store, world)
    card(store, world)
    p = pm.pay(store, world.m.actor("user", world.alice), sid, now=ON_TIME)
    home = world.m.actor("provider", world.home)
    with pytest.raises(NotYours):
        rf.refund(store, world.m.actor("provider", world.north), p.id, 100, now=ON_TIME)
    with pytest.raises(NotYours):
        rf.refund(store, world.m.actor("user", world.alice), p.id, 100, now=ON_TIME)
    r = rf.refund(store, home, p.id, 200, reason="slow", idempotency_key="r1", now=ON_TIME)
    again = rf.refund(store, home, p.id, 200, reason="slow", idempotency_key="r1", now=ON_TIME)
    assert r.status == "succeeded" and again.id == r.id
    with pytest.raises(InvalidInput) as caught:
        rf.refund(store, home, p.id, 301, now=ON_TIME)
    assert caught.value.field == "amount_minor" and "at most 300" in caught.value.message
    rf.refund(store, home, p.id, 300, now=ON_TIME)
    with store.read() as s:
        assert s.get(Statement, sid).paid_minor == 0
        assert s.get(Payment, p.id).refunded_minor == 500
        assert balance(s, cash(world.home), "EUR") == 0
        assert balance(s, refunds(world.home), "EUR") == 500
        assert balance(s, receivable(world.alice), "EUR") == 0


def test_a_card_that_needs_authentication_waits_for_the_cardholder(store, world):
    """3-D Secure: the charge is held ``pending`` with the ``authenticate`` action; nothing is
    taken until the cardholder passes the issuer's challenge, and then exactly once."""
    sid = billed(store, world)
    card(store, world, "tok_authenticationRequired")
    alice = world.m.actor("user", world.alice)
    gw = TestGateway(store)
    held = pm.pay(store, alice, sid, now=ON_TIME)
    view = pm.payment_view(held)
    assert (held.status, view["next_action"], held.decline_code) == (
        "pending",
        "authenticate",
        "authentication_required",
    )
    assert gw.charges() == 0
    with pytest.raises(Conflict):  # one attempt at a time
        pm.pay(store, alice, sid, now=ON_TIME)
    with pytest.raises(NotYours):
        pm.confirm(store, world.m.actor("user", world.bob), held.id, challenge="pass")
    assert pm.confirm(store, alice, held.id, now=ON_TIME).status == "pending"  # not answered
    assert jobs.run_due(store, now=ON_TIME + timedelta(hours=1))["resolved"] == 0
    paid = pm.confirm(store, alice, held.id, challenge="pass", now=ON_TIME)
    assert (paid.status, paid.decline_code, pm.payment_view(paid)["next_action"]) == (
        "succeeded",
        None,
        None,
    )
    again = pm.confirm(store, alice, held.id, challenge="fail", now=ON_TIME)
    assert again.status == "succeeded" and gw.charges() == 1
    with store.read() as s:
        assert s.get(Statement, sid).paid_at == ON_TIME
        assert balance(s, cash(world.home), "EUR") == 500
    r = rf.refund(store, world.m.actor("provider", world.home), held.id, 500, now=ON_TIME)
    assert r.status == "succeeded"  # refunded against the charge's own ref


def test_a_failed_authentication_declines_and_goes_to_dunning(store, world):
    sid = billed(store, world)
    card(store, world, "tok_authenticationRequired")
    alice = world.m.actor("user", world.alice)
    held = pm.pay(store, alice, sid, now=ON_TIME)
    failed = pm.confirm(store, alice, held.id, challenge="fail", now=ON_TIME)
    assert (failed.status, failed.decline_code) == ("failed", "authentication_failed")
    assert failed.next_retry_at == ON_TIME + pm.RETRY_AFTER[0]
    assert TestGateway(store).charges() == 0
    with store.read() as s:
        assert s.get(Statement, sid).paid_minor == 0


def test_an_unanswered_authentication_expires_and_a_late_answer_takes_nothing(store, world):
    sid = billed(store, world)
    card(store, world, "tok_authenticationRequired")
    alice = world.m.actor("user", world.alice)
    held = pm.pay(store, alice, sid, now=ON_TIME)
    assert jobs.run_due(store, now=ON_TIME + timedelta(hours=23))["authentication_expired"] == 0
    later = ON_TIME + pm.AUTHENTICATION_WINDOW + timedelta(minutes=1)
    assert jobs.run_due(store, now=later)["authentication_expired"] == 1
    with store.read() as s:
        p = s.get(Payment, held.id)
        assert (p.status, p.decline_code) == ("failed", "authentication_expired")
        key = p.gateway_key
    gw = TestGateway(store)
    assert gw.confirm(key, "pass").status == "canceled"  # voided at the gateway: too late
    assert pm.confirm(store, alice, held.id, challenge="pass", now=later).status == "failed"
    assert gw.charges() == 0
    with store.read() as s:
        assert s.get(Statement, sid).paid_minor == 0 and balance(s, cash(world.home), "EUR") == 0


def test_concurrent_confirmations_charge_once(store, world):
    sid = billed(store, world)
    card(store, world, "tok_authenticationRequired")
    alice = world.m.actor("user", world.alice)
    held = pm.pay(store, alice, sid, now=ON_TIME)
    answers, errors = [], []

    def confirm(i):
        try:
            answers.append(
                pm.confirm(
                    store, alice, held.id, challenge="pass" if i % 2 else "fail", now=ON_TIME
                ).status
            )
        except Exception as exc:  # collected and shown by the assertion
            errors.append(repr(exc))

    threads = [threading.Thread(target=confirm, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(answers)) == 1  # one answer decided, all saw it
    with store.read() as s:
        status = s.get(Payment, held.id).status
        paid = s.get(Statement, sid).paid_minor
        ledger = balance(s, cash(world.home), "EUR")
    assert status == answers[0]
    assert TestGateway(store).charges() == (1 if status == "succeeded" else 0)
    assert paid == ledger == (500 if status == "succeeded" else 0)


def test_a_statement_in_two_currencies_is_paid_currency_by_currency(store, world):
    alice = world.m.actor("device", world.alice_phone)
    award(store, alice, world.north, price=500, at=T0)
    with store.write() as s:  # and one in US dollars
        r = submit_request(
            s, alice, services="anonymize", volume_bytes=VOLUME, currency="USD", now=T0
        )
        s.flush()
        make_award(s, s.get(ServiceRequest, r.id), world.south, 700, source="auction", now=T0)
    st.close_period(
        store.write, world.m.actor("provider", world.home), world.home, JAN, now=AFTER_JAN
    )
    with store.read() as s:
        statement = s.scalar(select(Statement).where(Statement.user_id == world.alice))
        sid = statement.id
        assert statement.totals == {"EUR": 500, "USD": 700}
        state = pm.payment_state(s, statement, ON_TIME)
    assert (state["currency"], state["total_minor"], state["due_minor"]) == (None, None, None)
    assert [(c["currency"], c["due_minor"]) for c in state["currencies"]] == [
        ("EUR", 500),
        ("USD", 700),
    ]
    card(store, world)
    me = world.m.actor("user", world.alice)
    with pytest.raises(InvalidInput) as caught:
        pm.pay(store, me, sid, now=ON_TIME)
    assert caught.value.field == "currency" and "500 EUR, 700 USD" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        pm.pay(store, me, sid, currency="GBP", now=ON_TIME)
    assert caught.value.field == "currency"
    eur = pm.pay(store, me, sid, currency="EUR", now=ON_TIME)
    assert (eur.status, eur.currency, eur.amount_minor) == ("succeeded", "EUR", 500)
    with pytest.raises(WrongState):  # EUR is paid: nothing charged twice
        pm.pay(store, me, sid, currency="EUR", now=ON_TIME)
    with store.read() as s:
        assert s.get(Statement, sid).paid_at is None  # USD still due
    assert jobs.collect(store, [sid], now=ON_TIME) == {"succeeded": 1}
    with store.read() as s:
        statement = s.get(Statement, sid)
        assert statement.paid_at == ON_TIME
        assert pm.payment_state(s, statement, ON_TIME)["state"] == "paid"
        assert (balance(s, cash(world.home), "EUR"), balance(s, cash(world.home), "USD")) == (
            500,
            700,
        )
        assert [
            (p.currency, p.trigger) for p in s.scalars(select(Payment).order_by(Payment.attempt))
        ] == [("EUR", "user"), ("USD", "collection")]


def pktx(store, *argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "broker", *argv, "--db", store.url],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_payments_commands_collect_and_resolve(store, world):
    """``pktx broker payments collect`` and ``run-due`` as real processes on the store."""
    sid = billed(store, world)
    card(store, world, "tok_timeout")
    assert pktx(store, "payments", "collect", "--period", JAN) == {
        "period": JAN,
        "collected": {"unknown": 1},
    }
    assert pktx(store, "payments", "run-due")["resolved"] == 1
    with store.read() as s:
        assert s.get(Statement, sid).paid_at is not None
    assert TestGateway(store).charges() == 1


def test_another_gateway_plugs_in_through_the_entry_point_group(store, monkeypatch):
    from importlib.metadata import EntryPoint

    import broker.payment_gateway as pg

    found = [EntryPoint("acme", "broker.test_gateway:TestGateway", pg.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(
        pg, "entry_points", lambda group: found if group == pg.ENTRY_POINT_GROUP else []
    )
    assert pg.registry()["acme"] == "broker.test_gateway:TestGateway"
    assert isinstance(pg.gateway("acme", store), TestGateway)


def test_a_close_with_collect_charges_the_default_cards_after_finalizing(store, world):
    past = datetime(2025, 1, 10, 12, tzinfo=UTC)  # a period over by now: the CLI closes it
    award(store, world.m.actor("device", world.alice_phone), world.north, price=500, at=past)
    card(store, world)
    [home] = pktx(
        store, "billing", "close", "--period", "2025-01", "--provider", str(world.home), "--collect"
    )["providers"]
    assert (home["finalized"], home["collected"]) == (1, {"succeeded": 1})
    with store.read() as s:
        assert s.scalar(select(Statement.paid_minor)) == 500


def test_a_success_that_comes_after_the_resolver_gave_up_is_still_recorded(store, world):
    """A charge whose process stalled: the resolver finds the key unknown to the gateway and
    takes the payment as canceled; the gateway's success, arriving later, still pays."""
    from broker.payment_gateway import GatewayResult

    sid = billed(store, world)
    card(store, world)
    with store.write() as s:
        p, made = pm._start(
            s,
            world.m.actor("user", world.alice),
            sid,
            method_id=None,
            amount_minor=None,
            currency=None,
            trigger="user",
            idempotency_key=None,
            now=ON_TIME,
        )
        pid = p.id
    assert made
    assert jobs.run_due(store, now=ON_TIME + pm.STALE_PENDING * 2)["resolved"] == 1
    with store.read() as s:
        assert s.get(Payment, pid).status == "canceled"
    with store.write() as s:
        pm.settle(s, pid, GatewayResult("succeeded", "ch_late"), ON_TIME)
    with store.read() as s:
        assert (s.get(Payment, pid).status, s.get(Payment, pid).next_retry_at) == (
            "succeeded",
            None,
        )
        assert s.get(Statement, sid).paid_minor == 500


def test_the_test_gateway_answers_a_key_it_has_seen_with_the_first_answer(store):
    gw = TestGateway(store)
    first = gw.purchase("tok_visa", 500, "EUR", "k-1")
    assert (first.status, first.amount_minor) == ("succeeded", 500)
    assert gw.purchase("tok_visa", 500, "EUR", "k-1") == first  # a retry: no second charge
    assert gw.charges() == 1
    assert gw.status("k-1") == first and gw.status("never-sent").status == "canceled"
    lost = gw.purchase("tok_timeout", 300, "EUR", "k-2")
    assert lost.status == "unknown" and gw.status("k-2").status == "succeeded"
    held = gw.authorize("tok_mastercard", 800, "EUR", "a-1")
    assert gw.capture(held.ref, 900, "EUR", "c-0").status == "failed"  # more than held
    assert gw.capture(held.ref, 800, "EUR", "c-1").status == "succeeded"
    assert gw.void(gw.authorize("tok_visa", 100, "EUR", "a-2").ref, "v-1").status == "succeeded"
    assert gw.refund(first.ref, 501, "EUR", "r-0").status == "failed"
    assert gw.refund(first.ref, 200, "EUR", "r-1").status == "succeeded"
    declined = gw.purchase("tok_chargeDeclinedLostCard", 500, "EUR", "k-3")
    assert (declined.status, declined.decline_code) == ("failed", "lost_card")
