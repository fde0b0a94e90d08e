"""Statements in the domain, on SQLite and PostgreSQL: one per user and period from its home
provider across every provider that delivered; every charge on exactly one statement; numbers
without gaps; immutable content under a hash; credit notes on the next statement; a close that
fails midway is finished by the next run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing_world import award, charged, publish_bytes_tariff, report
from marketplace import T0
from sqlalchemy import func, select, update

from broker import statements as st
from broker.billing_periods import period_containing, period_named
from broker.errors import InvalidInput, NotYours, WrongState
from broker.models import Charge, DeviceEvent, Statement, StatementLine

JAN, FEB = "2030-01", "2030-02"
AFTER_JAN = datetime(2030, 2, 1, 1, tzinfo=UTC)
AFTER_FEB = datetime(2030, 3, 1, 1, tzinfo=UTC)


def test_periods_start_on_the_cutoff_day_at_midnight_in_the_providers_zone():
    p = period_named("2026-11")
    assert (p.start, p.end) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    p = period_named("2026-10", cutoff_day=15, timezone="Europe/Berlin")
    assert p.start == datetime(2026, 10, 14, 22, tzinfo=UTC)  # CEST, UTC+2
    assert p.end == datetime(2026, 11, 14, 23, tzinfo=UTC)  # CET, UTC+1
    q = period_named("2026-10", period_months=3)
    assert (q.start.month, q.end.month, q.end.year) == (10, 1, 2027)
    at = datetime(2026, 11, 14, 22, 59, tzinfo=UTC)  # 23:59 on the 14th in Berlin
    assert period_containing(at, cutoff_day=15, timezone="Europe/Berlin").name == "2026-10"
    assert (
        period_containing(at + timedelta(minutes=1), cutoff_day=15, timezone="Europe/Berlin").name
        == "2026-11"
    )
    for name, field in (("2026-13", "period"), ("26-11", "period"), ("2026-02", "period")):
        with pytest.raises(InvalidInput) as caught:
            period_named(name, period_months=3 if name == "2026-02" else 1)
        assert caught.value.field == field
    with pytest.raises(InvalidInput) as caught:
        period_named("2026-11", timezone="Mars/Olympus")
    assert caught.value.field == "timezone"


def two_providers_billing(store, world):
    """alice: a job from north (price + usage past the volume) and one at home; bob: one job
    from south. All in January 2030."""
    publish_bytes_tariff(store, world.m, world.north, "anonymize", T0 - timedelta(days=1))
    publish_bytes_tariff(store, world.m, world.south, "anonymize", T0 - timedelta(days=1))
    alice = world.m.actor("device", world.alice_phone)
    bob = world.m.actor("device", world.bob_phone)
    a_north = award(store, alice, world.north, price=500, at=T0)
    report(store, world.m, world.north, a_north, 1, 1_200_000, T0 + timedelta(hours=1))
    report(store, world.m, world.north, a_north, 2, 1_500_000, T0 + timedelta(hours=2))
    award(store, alice, world.home, price=0, at=T0, services="identity")
    b_south = award(store, bob, world.south, price=300, at=T0 + timedelta(hours=3))
    report(store, world.m, world.south, b_south, 1, 1_001_200, T0 + timedelta(hours=4))
    return a_north, b_south


def close(store, world, period=JAN, now=AFTER_JAN, **kw):
    return st.close_period(
        store.write, world.m.actor("provider", world.home), world.home, period, now=now, **kw
    )


def test_a_close_puts_every_charge_on_exactly_one_statement_of_the_home_provider(store, world):
    two_providers_billing(store, world)
    summary = close(store, world)
    assert (summary["statements"], summary["finalized"]) == (2, 2)
    with store.read() as s:
        docs = {x.user_id: st.statement_document(s, x) for x in s.scalars(select(Statement))}
        on_lines = s.scalar(select(func.count()).select_from(StatementLine))
        all_charges = s.scalar(select(func.count()).select_from(Charge))
    assert on_lines == all_charges  # every charge, each once
    alice = docs[world.alice]
    assert alice["home_provider"] == "home" and alice["user"] == "alice"
    assert {line["provider"] for line in alice["lines"]} == {"north", "home"}  # claim 6
    assert alice["totals"] == charged(store, world.alice)
    # 500 price, then 200,000 and 300,000 bytes past 1,000,000 at 0.013 per 1,000: 2.60, 3.90
    assert [
        (x["kind"], x["amount_minor"], x["quantity"])
        for x in alice["lines"]
        if x["provider"] == "north"
    ] == [("price", 500, None), ("bytes", 260, 200_000), ("bytes", 390, 300_000)]
    assert docs[world.bob]["totals"] == charged(store, world.bob) == {"EUR": 300 + 2}
    assert sorted(d["number"] for d in docs.values()) == [1, 2]
    with store.read() as s:
        for x in s.scalars(select(Statement)):
            assert st.verify(s, x)


def test_closing_twice_changes_nothing_and_periods_close_in_order(store, world):
    two_providers_billing(store, world)
    first = close(store, world)
    again = close(store, world)
    assert (again["finalized"], again["drafts_made"]) == (0, 0)
    assert (again["statements"], again["totals"]) == (first["statements"], first["totals"])
    with pytest.raises(WrongState) as caught:
        close(store, world, period="2029-12")
    assert "in order" in str(caught.value)
    with pytest.raises(WrongState):
        close(store, world, period=FEB, now=AFTER_JAN)  # not over yet


def test_a_charge_committed_after_its_period_closed_goes_on_the_next_statement(store, world):
    a_north, _ = two_providers_billing(store, world)
    close(store, world)
    # A report rated just before the period's end, committed after the close (a writer that
    # lagged): it was on no statement, so February's takes it; nothing is lost or doubled.
    late = report(
        store,
        world.m,
        world.north,
        a_north,
        3,
        1_600_000,
        datetime(2030, 1, 31, 23, 59, tzinfo=UTC),
    )
    assert late["charged_minor"] == 130
    close(store, world, period=FEB, now=AFTER_FEB)
    with store.read() as s:
        feb = s.scalars(select(Statement).where(Statement.period == FEB)).one()
        doc = st.statement_document(s, feb)
    assert [x["amount_minor"] for x in doc["lines"]] == [130]
    assert doc["number"] == 3
    total = sum(sum(t.values()) for t in _all_totals(store))
    assert total == sum(charged(store, world.alice).values()) + sum(
        charged(store, world.bob).values()
    )


def _all_totals(store):
    with store.read() as s:
        return [x.totals for x in s.scalars(select(Statement))]


def test_a_finalized_statement_is_immutable_and_its_hash_shows_tampering(store, world):
    two_providers_billing(store, world)
    close(store, world)
    with store.write() as s:
        x = s.scalars(select(Statement).where(Statement.user_id == world.alice)).one()
        assert st.verify(s, x)
        x_id = x.id
        line = s.scalars(
            select(StatementLine)
            .where(StatementLine.statement_id == x.id)
            .order_by(StatementLine.position)
        ).first()
        s.execute(
            update(StatementLine)
            .where(StatementLine.id == line.id)
            .values(amount_minor=line.amount_minor - 1)
        )
    with store.read() as s:
        assert not st.verify(s, s.get(Statement, x_id))


def test_a_correction_is_a_credit_note_on_the_next_statement(store, world):
    two_providers_billing(store, world)
    close(store, world)
    home = world.m.actor("provider", world.home)
    with store.read() as s:
        jan = s.scalars(select(Statement).where(Statement.user_id == world.alice)).one()
        before = st.statement_document(s, jan)
        jan_id, jan_number = jan.id, jan.number
    usage_line = next(x for x in before["lines"] if x["kind"] == "bytes")
    with store.write() as s:
        note = st.credit_line(
            s,
            home,
            jan_id,
            usage_line["position"],
            amount_minor=-60,
            reason="late delivery",
            idempotency_key="k1",
            now=AFTER_JAN + timedelta(days=1),
        )
    with store.write() as s:  # a retry: the same note
        again = st.credit_line(
            s,
            home,
            jan_id,
            usage_line["position"],
            amount_minor=-60,
            reason="late delivery",
            idempotency_key="k1",
            now=AFTER_JAN + timedelta(days=1),
        )
    assert again.id == note.id
    for amount, field in ((-201, "amount_minor"), (5, "amount_minor")):  # 260 - 60 left
        with pytest.raises(InvalidInput) as caught, store.write() as s:
            st.credit_line(
                s,
                home,
                jan_id,
                usage_line["position"],
                amount_minor=amount,
                reason="x",
                now=AFTER_JAN + timedelta(days=1),
            )
        assert caught.value.field == field
    with pytest.raises(NotYours), store.write() as s:
        st.credit_line(
            s,
            world.m.actor("provider", world.north),
            jan_id,
            usage_line["position"],
            amount_minor=-1,
            reason="x",
        )
    close(store, world, period=FEB, now=AFTER_FEB)
    with store.read() as s:
        assert st.statement_document(s, s.get(Statement, jan_id)) == before  # never edited
        feb = s.scalars(
            select(Statement).where(Statement.user_id == world.alice, Statement.period == FEB)
        ).one()
        doc = st.statement_document(s, feb)
    assert [(x["kind"], x["amount_minor"], x["corrects"]) for x in doc["lines"]] == [
        ("credit", -60, {"statement_number": jan_number, "line": usage_line["position"]})
    ]
    assert doc["totals"] == {"EUR": -60}


def test_who_sees_a_statement(store, world):
    two_providers_billing(store, world)
    close(store, world)
    with store.read() as s:
        alices = s.scalars(select(Statement).where(Statement.user_id == world.alice)).one().id
        for kind, ident in (
            ("user", world.alice),
            ("device", world.alice_phone),
            ("provider", world.home),
            ("network", world.home_net),
        ):
            st.get_statement(s, world.m.actor(kind, ident), alices)
        for kind, ident in (
            ("user", world.bob),
            ("device", world.bob_phone),
            ("provider", world.north),
        ):  # north delivered, but no
            with pytest.raises(NotYours):
                st.get_statement(s, world.m.actor(kind, ident), alices)
        assert [x.user_id for x in st.list_statements(s, world.m.actor("user", world.bob))] == [
            world.bob
        ]
        assert st.list_statements(s, world.m.actor("provider", world.north)) == []
        assert (
            st.list_statements(
                s, world.m.actor("provider", world.north), home_provider_id=world.home
            )
            == []
        )


def test_finalizing_tells_the_users_devices(store, world):
    two_providers_billing(store, world)
    close(store, world)
    with store.read() as s:
        events = [
            (e.user_id, e.kind, e.payload["number"])
            for e in s.scalars(select(DeviceEvent).order_by(DeviceEvent.id))
        ]
        numbers = {x.user_id: x.number for x in s.scalars(select(Statement))}
    assert events == sorted(
        [(u, "statement.finalized", n) for u, n in numbers.items()], key=lambda t: t[2]
    )


def test_a_close_that_fails_midway_leaves_each_statement_whole_and_the_next_run_finishes(
    store, world, monkeypatch
):
    from billing_world import award as award_one

    publish_bytes_tariff(store, world.m, world.north, "anonymize", T0 - timedelta(days=1))
    users = []
    for i in range(7):
        u = world.m.user(f"u{i}", world.home)
        d = world.m.device(u, f"u{i}-phone")
        award_one(store, world.m.actor("device", d), world.north, price=100 + i, at=T0)
        users.append(u)
    real = st.finalize_batch
    calls = []

    def failing(session, home, ids, now):
        calls.append(len(ids))
        if len(calls) == 2:
            raise OSError("disk full")  # the second batch's transaction fails
        return real(session, home, ids, now)

    monkeypatch.setattr(st, "finalize_batch", failing)
    with pytest.raises(OSError):
        close(store, world, batch=3)
    with store.read() as s:
        rows = s.execute(
            select(Statement.status, Statement.number, Statement.line_count).order_by(Statement.id)
        ).all()
        assert [r.status for r in rows] == ["finalized"] * 3 + ["draft"] * 4
        assert s.scalar(select(func.count()).select_from(StatementLine)) == 3
        assert all(r.number is None and r.line_count is None for r in rows[3:])
    monkeypatch.setattr(st, "finalize_batch", real)
    summary = close(store, world, batch=3)
    assert (summary["finalized"], summary["statements"]) == (4, 7)
    with store.read() as s:
        assert sorted(s.scalars(select(Statement.number))) == list(range(1, 8))  # no gaps
        assert s.scalar(select(func.count()).select_from(StatementLine)) == s.scalar(
            select(func.count()).select_from(Charge)
        )


def test_billing_settings_are_the_home_providers_and_fixed_once_a_period_closed(store, world):
    home = world.m.actor("provider", world.home)
    with store.write() as s, pytest.raises(NotYours):
        st.set_billing_settings(
            s,
            world.m.actor("provider", world.north),
            world.home,
            period_months=1,
            cutoff_day=5,
            timezone="UTC",
        )
    for kw, field in (
        ({"period_months": 5}, "period_months"),
        ({"cutoff_day": 29}, "cutoff_day"),
        ({"timezone": "Nowhere/City"}, "timezone"),
    ):
        args = {"period_months": 1, "cutoff_day": 1, "timezone": "UTC", **kw}
        with pytest.raises(InvalidInput) as caught, store.write() as s:
            st.set_billing_settings(s, home, world.home, **args)
        assert caught.value.field == field
    with store.write() as s:
        st.set_billing_settings(
            s, home, world.home, period_months=1, cutoff_day=10, timezone="Europe/Berlin"
        )
    two_providers_billing(store, world)
    # T0 is 2030-01-01: before the 10th, so in the period named 2029-12.
    summary = close(store, world, period="2029-12", now=datetime(2030, 1, 10, tzinfo=UTC))
    assert summary["statements"] == 2
    with pytest.raises(WrongState), store.write() as s:
        st.set_billing_settings(
            s, home, world.home, period_months=1, cutoff_day=11, timezone="Europe/Berlin"
        )


def test_a_sponsored_member_is_billed_only_its_pledge(store, world):
    """A group request: alice pledges at most 1.00, bob sponsors the rest. Each one's
    statement holds its own share of the price and of the usage, and the shares add up to
    what the home provider charged, to the minor unit."""
    from broker.groups import group_of_request, pledge
    from broker.models import Award
    from broker.requests import close_pledges, submit_request

    alice = world.m.actor("user", world.alice)
    bob = world.m.actor("user", world.bob)
    publish_bytes_tariff(store, world.m, world.home, "identity", T0 - timedelta(days=1))
    with store.write() as s:
        request = submit_request(
            s,
            alice,
            services="identity",
            volume_bytes=10**10,
            group=True,
            members=[{"kind": "user", "value": world.alice}, {"kind": "user", "value": world.bob}],
            now=T0,
        )
        assert request.status == "pledging"
        group_id = group_of_request(s, request.id).id
    with store.write() as s:
        pledge(s, alice, group_id, 100, now=T0)
        pledge(s, bob, group_id, 10**6, now=T0)
    with store.write() as s:
        close_pledges(s, alice, group_id, now=T0)
    with store.read() as s:
        award = s.scalars(select(Award)).one()
        price, job = award.price_minor, award.job.id
    assert price > 100  # alice's pledge does not cover it
    report(store, world.m, world.home, job, 1, 10**10 + 7_777_777, T0 + timedelta(hours=1))
    close(store, world)
    with store.read() as s:
        totals = {x.user_id: x.totals["EUR"] for x in s.scalars(select(Statement))}
        prices = dict(
            s.execute(
                select(Statement.user_id, StatementLine.amount_minor)
                .join(StatementLine, StatementLine.statement_id == Statement.id)
                .where(StatementLine.kind == "price")
            ).all()
        )
    usage = 10_111  # 7,777,777 bytes at 0.013 per 1,000: 101.11 EUR
    assert prices == {world.alice: 100, world.bob: price - 100}
    assert sum(totals.values()) == price + usage
    # the usage split as the price was (100 : 900), by largest remainder: 1011.1 -> 1011
    assert totals == {world.alice: 100 + 1011, world.bob: price - 100 + usage - 1011}


def test_a_finalized_statement_is_posted_to_the_ledger_with_the_home_providers_margin(store, world):
    """alice owes her statement's total; home keeps 10% of north's charges and its own
    deliveries whole, and owes north the rest; every posting sums to zero."""
    from broker import ledger
    from broker.models import LedgerEntry

    with store.write() as s:
        st.set_billing_settings(
            s,
            world.m.actor("provider", world.home),
            world.home,
            period_months=1,
            cutoff_day=1,
            timezone="UTC",
            margin_ppm=100_000,
            payment_terms_days=10,
        )
    two_providers_billing(store, world)
    close(store, world)
    with store.read() as s:
        alice = s.scalars(select(Statement).where(Statement.user_id == world.alice)).one()
        assert alice.due_at == alice.finalized_at + timedelta(days=10)
        owed = ledger.balance(s, ledger.receivable(world.alice), "EUR")
        to_north = ledger.balance(s, ledger.payable(world.home, world.north), "EUR")
        to_south = ledger.balance(s, ledger.payable(world.home, world.south), "EUR")
        kept = ledger.balance(s, ledger.revenue(world.home), "EUR")
        per_posting = s.execute(
            select(LedgerEntry.posting_id, func.sum(LedgerEntry.amount_minor)).group_by(
                LedgerEntry.posting_id
            )
        ).all()
        alice_id, alice_total = alice.id, alice.totals["EUR"]
    assert owed == alice_total == 500 + 260 + 390 + 1  # and 0.01 for home's own identity
    assert to_north == -(1150 - 115)  # 10% of 11.50 kept by home
    assert to_south == -(302 - 30)  # 10% of 3.02, rounded toward zero
    assert kept == -(115 + 30 + 1)
    assert per_posting and all(total == 0 for _p, total in per_posting)
    with store.write() as s:  # the same event again: one posting
        entries = ledger.statement_entries(
            world.home,
            world.alice,
            100_000,
            st.statement_document(s, s.get(Statement, alice_id))["lines"],
        )
        first = s.scalar(select(func.min(LedgerEntry.posting_id)))
        assert ledger.post(s, "statement", str(alice_id), entries) in {first, first + 1}
        with pytest.raises(Exception) as caught:
            ledger.post(s, "statement", str(alice_id), entries[:-1])
        assert "other entries" in str(caught.value) or "sum to zero" in str(caught.value)
