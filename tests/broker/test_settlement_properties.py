"""The books under random markets and settlements (issue 10): a hypothesis state machine.

Two networks (`settlement_world`): home-isp's users alice and bob, far-b's carol, far-c's dave;
every provider serves every provider's users, so both directions exist between the networks.
Rules: awards, usage past an award's volume, period closes (every home provider), credit notes,
margin changes, and settlements: a whole period by `settle_period` (all, or one provider's), or
the two sides by hand (a home provider issues, the delivering provider acknowledges). After
every step the store is read back with plain queries and held to:

1. every posting sums to zero per currency, and every account's balance (`ledger.balances`)
   is the sum of its entries;
2. for every period, home provider and currency: billed to users (the finalized statements'
   lines) = owed to the delivering providers + the home provider's margins + its own
   revenue, each as computed here from the lines and the margin in force when the statement
   was finalized, and as the statement postings booked them;
3. a batch's audit totals are its lines' (count, sum per currency), due + margin = totals,
   due is what its lines earned the delivering provider, its hash recomputes, its lines are
   the pair's and the period's, numbers run 1..n per pair; a statement line is in one batch
   at most;
4. after settling, the amounts due match the ledger: each payable account holds exactly what
   is owed for lines in no netting; each netting's amounts are its batches' due, netted, and
   the cash accounts hold the nettings' net amounts; `provider_balance` reads the same.

Payments and refunds come from another branch: see `payment hook` below for where their
rules and expectations go.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import settlement_world as sw
from billing_world import BILLING_TABLES, publish_bytes_tariff, report
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
from sqlalchemy import delete, func, select

from broker import settlements as se
from broker.errors import BrokerError
from broker.ledger import balances, margin_of
from broker.models import (
    DeliveryJob,
    LedgerEntry,
    LedgerPosting,
    SettlementBatch,
    SettlementLine,
    SettlementNetting,
    Statement,
    StatementLine,
)
from broker.statements import credit_line, set_billing_settings

START = datetime(2024, 1, 1, tzinfo=UTC)
MONTHS = 6
TABLES = (SettlementLine, SettlementBatch, SettlementNetting, *BILLING_TABLES)
USERS = ("alice", "bob", "carol", "dave")
PROVIDERS = ("home-isp", "far-b", "far-c")


def plain(row, *names: str):
    """The row's values, readable once its session is gone."""
    return type("Row", (), {n: getattr(row, n) for n in names})


def month_start(i: int) -> datetime:
    return START.replace(month=1 + i)


def period(i: int) -> str:
    return f"{month_start(i):%Y-%m}"


class BooksMachine(RuleBasedStateMachine):
    def __init__(self, world) -> None:
        super().__init__()
        self.w = world

    @initialize()
    def empty(self) -> None:
        with self.w.store.write() as s:
            for model in TABLES:
                s.execute(delete(model))
        for pid in self.w.providers.values():
            publish_bytes_tariff(self.w.store, self.w.m, pid, "anonymize",
                                 START - timedelta(days=1))
        self.month = 0
        self.margins = dict.fromkeys(PROVIDERS, 0)
        self.ppm_of: dict[int, int] = {}     # statement id -> its home's margin at finalizing
        self.jobs: list[tuple[int, int, int, int]] = []   # (job, provider, sequence, bytes)

    def at(self, day: int) -> datetime:
        return month_start(self.month) + timedelta(days=day, hours=3)

    # -- the market -----------------------------------------------------------------------

    @precondition(lambda self: self.month < MONTHS)
    @rule(user=st.sampled_from(USERS), provider=st.sampled_from(PROVIDERS),
          price=st.integers(0, 5000), day=st.integers(0, 27))
    def buy(self, user, provider, price, day):
        award_id = sw.award(self.w, user, provider, price, at=self.at(day))
        with self.w.store.read() as s:
            job = s.scalar(select(DeliveryJob.id).where(DeliveryJob.award_id == award_id))
        self.jobs.append((job, self.w.providers[provider], 0, sw.VOLUME))
        note(f"award {award_id}: {user} served by {provider} at {price}")

    @precondition(lambda self: self.jobs and self.month < MONTHS)
    @rule(pick=st.integers(0, 63), more=st.integers(0, 2_000_000), day=st.integers(0, 27))
    def use(self, pick, more, day):
        i = pick % len(self.jobs)
        job, provider, sequence, bytes_out = self.jobs[i]
        try:
            report(self.w.store, self.w.m, provider, job, sequence + 1, bytes_out + more,
                   self.at(day))
        except BrokerError as exc:        # a report dated before the job's last one
            note(f"report refused: {exc}")
            return
        self.jobs[i] = (job, provider, sequence + 1, bytes_out + more)

    @precondition(lambda self: self.month < MONTHS)
    @rule(provider=st.sampled_from(PROVIDERS), ppm=st.sampled_from((0, 1, 50_000, 333_333)))
    def margin(self, provider, ppm):
        with self.w.store.write() as s:
            set_billing_settings(s, self.w.admin, self.w.providers[provider], period_months=1,
                                 cutoff_day=1, timezone="UTC", margin_ppm=ppm)
        self.margins[provider] = ppm

    @precondition(lambda self: self.month < MONTHS)
    @rule()
    def close(self):
        sw.close(self.w, period(self.month), now=month_start(self.month + 1) + timedelta(hours=1))
        by_id = {pid: name for name, pid in self.w.providers.items()}
        with self.w.store.read() as s:
            for sid, home in s.execute(select(Statement.id, Statement.home_provider_id)
                                       .where(Statement.status == "finalized")):
                self.ppm_of.setdefault(sid, self.margins[by_id[home]])
        note(f"closed {period(self.month)}")
        self.month += 1

    @precondition(lambda self: self.month > 0)
    @rule(pick=st.integers(0, 1023), part=st.integers(1, 100))
    def credit(self, pick, part):
        with self.w.store.read() as s:
            lines = s.execute(select(StatementLine.statement_id, StatementLine.position,
                                     StatementLine.amount_minor)
                              .where(StatementLine.charge_id.is_not(None),
                                     StatementLine.amount_minor > 1)
                              .order_by(StatementLine.id)).all()
        if not lines:
            return
        statement, position, amount = lines[pick % len(lines)]
        try:
            with self.w.store.write() as s:
                credit_line(s, self.w.admin, statement, position,
                            amount_minor=-max(amount * part // 100, 1), reason="goodwill",
                            now=month_start(self.month) + timedelta(hours=2))
        except BrokerError as exc:    # more than is left to credit on the line
            note(f"credit refused: {exc}")

    # -- settlements ------------------------------------------------------------------------

    @precondition(lambda self: self.month > 0)
    @rule(pick=st.integers(0, 11), provider=st.sampled_from((None, *PROVIDERS)))
    def settle(self, pick, provider):
        name = period(pick % self.month)
        with self.w.store.write() as s:
            se.settle_period(s, self.w.admin, name,
                             provider_id=self.w.providers[provider] if provider else None)
        note(f"settled {name} ({provider or 'all'})")

    @precondition(lambda self: self.month > 0)
    @rule(pick=st.integers(0, 11), home=st.sampled_from(PROVIDERS))
    def issue(self, pick, home):
        name, pid = period(pick % self.month), self.w.providers[home]
        with self.w.store.write() as s:
            se.issue(s, self.w.m.actor("provider", pid), pid, name)
        note(f"{home} issued {name}")

    @precondition(lambda self: self.month > 0)
    @rule(pick=st.integers(0, 63))
    def acknowledge(self, pick):
        with self.w.store.write() as s:
            waiting = list(s.scalars(select(SettlementBatch).where(
                SettlementBatch.status == "issued").order_by(SettlementBatch.id)))
            if not waiting:
                return
            batch = waiting[pick % len(waiting)]
            ident = batch.id
            se.acknowledge(s, self.w.m.actor("provider", batch.provider_id), ident,
                           se.batch_document(s, batch))
        note(f"batch {ident} acknowledged")

    # payment hook: payments and refunds (the payments branch) add rules here that pay or
    # refund a finalized statement through the payments code; their postings are held to
    # invariant 1 as they are, and `expected_cash` below is where a payment's cash (debit
    # the home provider's cash, credit the user's receivable) is added to what settlement
    # moved.

    def expected_cash(self, nettings) -> Counter:
        cash: Counter = Counter()
        for n in nettings:
            for currency, a in n.amounts.items():
                if a["payer_id"] is not None:
                    cash[(f"cash:provider:{a['payer_id']}", currency)] -= a["net_minor"]
                    cash[(f"cash:provider:{a['payee_id']}", currency)] += a["net_minor"]
        return cash

    # -- the books ------------------------------------------------------------------------

    @invariant()
    def books_hold(self):
        with self.w.store.read() as s:
            entries = s.execute(select(LedgerEntry.posting_id, LedgerEntry.account,
                                       LedgerEntry.currency, LedgerEntry.amount_minor)).all()
            postings = {p.id: (p.kind, p.ref) for p in s.execute(
                select(LedgerPosting.id, LedgerPosting.kind, LedgerPosting.ref))}
            reported = balances(s)
            statements = {x.id: x for x in s.execute(
                select(Statement.id, Statement.home_provider_id, Statement.period)
                .where(Statement.status == "finalized"))}
            lines = s.execute(select(StatementLine.id, StatementLine.statement_id,
                                     StatementLine.amount_minor, StatementLine.currency,
                                     StatementLine.attrs)).all()
            rows = list(s.scalars(select(SettlementBatch)))
            docs = {b.id: se.batch_document(s, b) for b in rows}
            batches = [plain(b, "id", "home_provider_id", "provider_id", "number", "period",
                             "status", "line_count", "totals", "due", "margin",
                             "content_sha256", "netting_id") for b in rows]
            settled = s.execute(select(SettlementLine.statement_line_id,
                                       SettlementLine.batch_id)).all()
            nettings = [plain(n, "id", "provider_low_id", "provider_high_id", "period",
                              "amounts") for n in s.scalars(select(SettlementNetting))]
            views = {pid: se.provider_balance(s, self.w.admin, pid)["balances"]
                     for pid in self.w.providers.values()}
            count = s.scalar(select(func.count()).select_from(SettlementLine))

        # 1. zero-sum postings; balances are the sums of entries
        per_posting: Counter = Counter()
        per_account: Counter = Counter()
        for e in entries:
            per_posting[(e.posting_id, e.currency)] += e.amount_minor
            per_account[(e.account, e.currency)] += e.amount_minor
        assert not +per_posting and not -per_posting, per_posting
        assert reported == dict(per_account)

        # 2. billed = owed to delivering providers + margins + own revenue
        owed: Counter = Counter()        # (home, provider, currency) -> from the lines
        line_owed: dict[int, int] = {}
        billed: Counter = Counter()      # (period, home, currency)
        parts: Counter = Counter()       # (period, home, currency): owed + margin + own
        booked_rev: Counter = Counter()  # (statement, currency) expected revenue credit
        booked_pay: Counter = Counter()  # (statement, provider, currency)
        for ln in lines:
            x = statements[ln.statement_id]
            p = ln.attrs["provider_id"]
            billed[(x.period, x.home_provider_id, ln.currency)] += ln.amount_minor
            if p == x.home_provider_id:
                parts[(x.period, x.home_provider_id, ln.currency)] += ln.amount_minor
                booked_rev[(x.id, ln.currency)] += ln.amount_minor
                continue
            m = margin_of(ln.amount_minor, self.ppm_of[x.id])
            line_owed[ln.id] = ln.amount_minor - m
            owed[(x.home_provider_id, p, ln.currency)] += ln.amount_minor - m
            parts[(x.period, x.home_provider_id, ln.currency)] += (ln.amount_minor - m) + m
            booked_rev[(x.id, ln.currency)] += m
            booked_pay[(x.id, p, ln.currency)] += ln.amount_minor - m
        assert billed == parts
        got_rev: Counter = Counter()
        got_pay: Counter = Counter()
        for e in entries:
            kind, ref = postings[e.posting_id]
            if kind != "statement":
                continue
            parts_ = e.account.split(":")
            if parts_[0] == "revenue":
                got_rev[(int(ref), e.currency)] -= e.amount_minor
            elif parts_[0] == "payable":
                got_pay[(int(ref), int(parts_[3]), e.currency)] -= e.amount_minor
        assert +got_rev == +booked_rev and -got_rev == -booked_rev
        assert {k: v for k, v in got_pay.items() if v} == {
            k: v for k, v in booked_pay.items() if v}

        # 3. batches
        assert count == len(settled) == len({sl for sl, _ in settled})   # a line once
        numbers: dict[tuple[int, int], list[int]] = defaultdict(list)
        line_by_id = {ln.id: ln for ln in lines}
        for b in batches:
            doc = docs[b.id]
            numbers[(b.home_provider_id, b.provider_id)].append(b.number)
            sums: Counter = Counter()
            due: Counter = Counter()
            for item in doc["lines"]:
                ln = line_by_id[item["statement_line_id"]]
                x = statements[ln.statement_id]
                assert (x.home_provider_id, x.period, ln.attrs["provider_id"]) == (
                    b.home_provider_id, b.period, b.provider_id)
                assert (item["amount_minor"], item["currency"]) == (ln.amount_minor,
                                                                    ln.currency)
                sums[ln.currency] += ln.amount_minor
                due[ln.currency] += line_owed[ln.id]
            assert b.line_count == len(doc["lines"])
            assert {c: v for c, v in b.totals.items() if v} == {c: v for c, v in sums.items()
                                                                if v}
            assert all(b.due.get(c, 0) + b.margin.get(c, 0) == b.totals.get(c, 0)
                       for c in set(b.totals) | set(b.due))
            assert {c: v for c, v in b.due.items() if v} == {c: v for c, v in due.items() if v}
            assert se.content_hash(doc) == b.content_sha256
            se.check_audit_totals(doc)
        for got in numbers.values():
            assert sorted(got) == list(range(1, len(got) + 1))

        # 4. after settling, the ledger holds what is still due and what moved
        netted_due: Counter = Counter()
        by_netting: dict[int, list] = defaultdict(list)
        for b in batches:
            if b.netting_id is not None:
                assert b.status == "settled"
                by_netting[b.netting_id].append(b)
                for c, v in b.due.items():
                    netted_due[(b.home_provider_id, b.provider_id, c)] += v
        assert set(by_netting) == {n.id for n in nettings}
        for n in nettings:
            owes: Counter = Counter()
            for b in by_netting[n.id]:
                assert {b.home_provider_id, b.provider_id} == {n.provider_low_id,
                                                               n.provider_high_id}
                assert b.period == n.period
                for c, v in b.due.items():
                    owes[(b.home_provider_id, c)] += v
            for c, a in n.amounts.items():
                low, high = owes[(n.provider_low_id, c)], owes[(n.provider_high_id, c)]
                assert (a["low_owes_minor"], a["high_owes_minor"], a["net_minor"]) == (
                    low, high, abs(low - high))
                assert a["payer_id"] == (n.provider_low_id if low > high else
                                         n.provider_high_id if high > low else None)
            assert ("settlement", str(n.id)) in postings.values()
        outstanding: Counter = Counter()
        for key, v in owed.items():
            outstanding[key] += v - netted_due[key]
        for (account, currency), amount in per_account.items():
            if account.startswith("payable:"):
                _, _, h, p = account.split(":")
                assert -amount == outstanding[(int(h), int(p), currency)], account
        for (h, p, c), v in outstanding.items():
            assert per_account[(f"payable:provider:{h}:{p}", c)] == -v
        cash = {k: v for k, v in per_account.items() if k[0].startswith("cash:") and v}
        assert cash == {k: v for k, v in self.expected_cash(nettings).items() if v}
        for pid, rows in views.items():
            for row in rows:
                q, c = row["counterparty_id"], row["currency"]
                assert row["owes_minor"] == outstanding[(pid, q, c)]
                assert row["owed_minor"] == outstanding[(q, pid, c)]
                assert row["net_minor"] == row["owed_minor"] - row["owes_minor"]


def test_the_books_hold_under_random_markets_and_settlements(store):
    world = sw.build(store)
    examples = {"sqlite": 20, "postgresql": 8}[store.backend]
    run_state_machine_as_test(lambda: BooksMachine(world), settings=settings(
        max_examples=examples, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))
