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

5. payments and refunds (cards added with the test gateway's tokens, statements paid in
   full or in part, the payments job run at advancing times, refunds in full, in part and
   above what is left): a statement's ``paid_minor`` is its succeeded payments less their
   succeeded refunds, ``paid_at`` is set iff the succeeded payments reach its total (a refund
   does not reopen it), and no statement is paid beyond its total; a payment's
   ``refunded_minor`` is its refunds in flight or succeeded, never above its amount; each
   succeeded payment (refund) has exactly one posting of its own (cash +amount, receivable
   -amount; refunds +amount, cash -amount) and no other has one; cash is the nettings plus
   payments less refunds, a user's receivable its statements less its payments, a refunds
   account its refunds; the test gateway's book has exactly one successful purchase per
   succeeded (or unknown: charged, the answer lost) payment, of its amount and reference,
   and one successful refund per succeeded refund. What is owed between providers is
   invariant 2 and 4 as before: payments do not move it (the home provider carries the
   risk, claim 4).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import settlement_world as sw
from billing_world import BILLING_TABLES, credit_some_line, publish_bytes_tariff, report
from hypothesis import HealthCheck, event, note, settings
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
    Payment,
    PaymentMethod,
    Rating,
    Refund,
    SettlementBatch,
    SettlementLine,
    SettlementNetting,
    Statement,
    StatementLine,
    TestGatewayOperation,
)
from broker.payment_jobs import collect, run_due
from broker.payment_methods import add_method
from broker.payments import pay
from broker.refunds import refund
from broker.statements import set_billing_settings
from broker.test_gateway import TestGateway

START = datetime(2024, 1, 1, tzinfo=UTC)
MONTHS = 6
PAYMENT_TABLES = (Refund, Payment, PaymentMethod, TestGatewayOperation, Rating)
TABLES = (SettlementLine, SettlementBatch, SettlementNetting, *PAYMENT_TABLES, *BILLING_TABLES)
# The test gateway's cards a user may add: one that pays (twice as likely), two declines, and
# one whose answer is lost (charged; the payment stays ``unknown`` until the payments job asks).
CARDS = (
    "tok_visa",
    "tok_visa",
    "tok_timeout",
    "tok_chargeDeclined",
    "tok_chargeDeclinedInsufficientFunds",
)
IN_FLIGHT = ("pending", "unknown")
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

    @initialize(
        cards=st.lists(
            st.one_of(st.none(), st.sampled_from(CARDS)), min_size=len(USERS), max_size=len(USERS)
        )
    )
    def empty(self, cards) -> None:
        """An empty market; ``cards``: each user's first card (None: none), so that most
        statements have a card to be paid with."""
        with self.w.store.write() as s:
            for model in TABLES:
                s.execute(delete(model))
        for pid in self.w.providers.values():
            publish_bytes_tariff(
                self.w.store, self.w.m, pid, "anonymize", START - timedelta(days=1)
            )
        self.month = 0
        self.margins = dict.fromkeys(PROVIDERS, 0)
        self.ppm_of: dict[int, int] = {}  # statement id -> its home's margin at finalizing
        self.jobs: list[tuple[int, int, int, int]] = []  # (job, provider, sequence, bytes)
        self.now = START  # the payments' clock: never before the last close
        self.billed = False  # a statement with something to pay was finalized
        self.paid = False  # a payment succeeded
        self.gateway = TestGateway(self.w.store)
        for user, token in zip(USERS, cards, strict=True):
            if token is not None:
                self.add_card(user, token, True)

    def at(self, day: int) -> datetime:
        return month_start(self.month) + timedelta(days=day, hours=3)

    # -- the market -----------------------------------------------------------------------

    @precondition(lambda self: self.month < MONTHS)
    @rule(
        user=st.sampled_from(USERS),
        provider=st.sampled_from(PROVIDERS),
        price=st.integers(0, 5000),
        day=st.integers(0, 27),
    )
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
            report(
                self.w.store, self.w.m, provider, job, sequence + 1, bytes_out + more, self.at(day)
            )
        except BrokerError as exc:  # a report dated before the job's last one
            note(f"report refused: {exc}")
            return
        self.jobs[i] = (job, provider, sequence + 1, bytes_out + more)

    @precondition(lambda self: self.month < MONTHS)
    @rule(provider=st.sampled_from(PROVIDERS), ppm=st.sampled_from((0, 1, 50_000, 333_333)))
    def margin(self, provider, ppm):
        with self.w.store.write() as s:
            set_billing_settings(
                s,
                self.w.admin,
                self.w.providers[provider],
                period_months=1,
                cutoff_day=1,
                timezone="UTC",
                margin_ppm=ppm,
            )
        self.margins[provider] = ppm

    @precondition(lambda self: self.month < MONTHS)
    @rule(collect_=st.booleans())
    def close(self, collect_):
        """Close the month; with ``collect_``, charge its statements to the default cards."""
        closed_at = month_start(self.month + 1) + timedelta(hours=1)
        sw.close(self.w, period(self.month), now=closed_at)
        self.now = max(self.now, closed_at)
        with self.w.store.read() as s:
            self.billed = self.billed or any(
                sum(totals.values()) > 0
                for totals in s.scalars(
                    select(Statement.totals).where(Statement.status == "finalized")
                )
            )
        if collect_:
            done = collect(
                self.w.store,
                sw.statement_ids(self.w, period(self.month)),
                gateways=self.gateways,
                now=self.now,
            )
            note(f"collected {period(self.month)}: {done}")
            self.any_paid()
            for k in done:
                event(f"collection: {k}")
        by_id = {pid: name for name, pid in self.w.providers.items()}
        with self.w.store.read() as s:
            for sid, home in s.execute(
                select(Statement.id, Statement.home_provider_id).where(
                    Statement.status == "finalized"
                )
            ):
                self.ppm_of.setdefault(sid, self.margins[by_id[home]])
        note(f"closed {period(self.month)}")
        self.month += 1

    @precondition(lambda self: self.month > 0)
    @rule(pick=st.integers(0, 1023), part=st.integers(1, 100))
    def credit(self, pick, part):
        note(
            credit_some_line(
                self.w.store, self.w.admin, pick, part, month_start(self.month) + timedelta(hours=2)
            )
        )

    # -- settlements ------------------------------------------------------------------------

    @precondition(lambda self: self.month > 0)
    @rule(pick=st.integers(0, 11), provider=st.sampled_from((None, *PROVIDERS)))
    def settle(self, pick, provider):
        name = period(pick % self.month)
        with self.w.store.write() as s:
            se.settle_period(
                s, self.w.admin, name, provider_id=self.w.providers[provider] if provider else None
            )
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
            waiting = list(
                s.scalars(
                    select(SettlementBatch)
                    .where(SettlementBatch.status == "issued")
                    .order_by(SettlementBatch.id)
                )
            )
            if not waiting:
                return
            batch = waiting[pick % len(waiting)]
            ident = batch.id
            se.acknowledge(
                s, self.w.m.actor("provider", batch.provider_id), ident, se.batch_document(s, batch)
            )
        note(f"batch {ident} acknowledged")

    # -- payments and refunds -------------------------------------------------------------

    def gateways(self, _name: str) -> TestGateway:
        return self.gateway

    def untouched(self) -> tuple:
        """What a refused payment or refund must leave as it was."""
        with self.w.store.read() as s:
            return (
                tuple(
                    s.scalar(select(func.count()).select_from(m))
                    for m in (Payment, Refund, TestGatewayOperation, LedgerPosting)
                ),
                tuple(
                    s.execute(
                        select(Payment.id, Payment.status, Payment.refunded_minor).order_by(
                            Payment.id
                        )
                    )
                ),
                tuple(
                    s.execute(
                        select(Statement.id, Statement.paid_minor, Statement.paid_at).order_by(
                            Statement.id
                        )
                    )
                ),
            )

    @rule(user=st.sampled_from(USERS), token=st.sampled_from(CARDS), default=st.booleans())
    def add_card(self, user, token, default):
        uid = self.w.users[user]
        with self.w.store.write() as s:
            add_method(
                s,
                self.w.m.actor("user", uid),
                uid,
                self.gateway,
                token=token,
                make_default=default,
                now=self.now,
            )
        note(f"{user} added {token}{' (default)' if default else ''}")

    @precondition(lambda self: self.billed)
    @rule(
        pick=st.integers(0, 1023),
        part=st.one_of(st.none(), st.integers(1, 110)),
        card=st.one_of(st.none(), st.integers(0, 15)),
        by_user=st.booleans(),
        unpaid=st.integers(0, 3),
    )
    def pay_statement(self, pick, part, card, by_user, unpaid):
        """Pay a finalized statement (with the default card or a named one), all that is left
        or ``part`` percent of it (above 100: more than is left, refused); mostly one not
        yet paid (``unpaid`` > 0), else any (paid, or with nothing due: refused)."""
        query = (
            select(Statement.id, Statement.user_id, Statement.totals)
            .where(Statement.status == "finalized")
            .order_by(Statement.id)
        )
        with self.w.store.read() as s:
            statements = s.execute(query.where(Statement.paid_at.is_(None))).all() if unpaid else []
            statements = [x for x in statements if sum(x.totals.values()) > 0] or s.execute(
                query
            ).all()
            sid, uid, totals = statements[pick % len(statements)]
            methods = list(
                s.scalars(
                    select(PaymentMethod.id)
                    .where(PaymentMethod.user_id == uid, PaymentMethod.deleted_at.is_(None))
                    .order_by(PaymentMethod.id)
                )
            )
            gross = s.scalar(
                select(func.coalesce(func.sum(Payment.amount_minor), 0)).where(
                    Payment.statement_id == sid, Payment.status == "succeeded"
                )
            )
        left = sum(totals.values()) - gross
        amount = None if part is None else max(1, left * part // 100)
        method = None if card is None or not methods else methods[card % len(methods)]
        before = self.untouched()
        try:
            p = pay(
                self.w.store,
                self.w.m.actor("user", uid) if by_user else None,
                sid,
                method_id=method,
                amount_minor=amount,
                gateways=self.gateways,
                now=self.now,
            )
        except BrokerError as exc:  # paid, under way, too much, no card: nothing written
            note(f"payment of statement {sid} refused: {exc}")
            event(f"payment refused: {type(exc).__name__}")
            assert self.untouched() == before
            return
        assert amount is None or amount <= left, f"{amount} charged, {left} was left"
        note(f"statement {sid}: payment {p.id} of {p.amount_minor} {p.status}")
        self.any_paid()
        event(f"payment {p.status} ({'part' if amount else 'all'})")

    def any_paid(self) -> None:
        with self.w.store.read() as s:
            self.paid = (
                s.scalar(select(Payment.id).where(Payment.status == "succeeded").limit(1))
                is not None
            )

    @rule(days=st.sampled_from((0, 1, 2, 4, 8, 15, 30)))
    def payments_job(self, days):
        """The payments job, ``days`` later: unknowns resolved, dunning, overdue ratings."""
        self.now += timedelta(days=days, minutes=1)
        with self.w.store.read() as s:
            unknown = set(s.scalars(select(Payment.id).where(Payment.status == "unknown")))
            retry = set(
                s.scalars(
                    select(Payment.id).where(
                        Payment.status.in_(("failed", "canceled")),
                        Payment.next_retry_at <= self.now,
                    )
                )
            )
        done = run_due(self.w.store, gateways=self.gateways, now=self.now)
        with self.w.store.read() as s:
            rows = {
                p.id: p
                for p in s.execute(select(Payment.id, Payment.status, Payment.next_retry_at))
            }
        # The test gateway knows every key it took: no unknown is left unknown, and a retry
        # that was due is no longer planned.
        assert all(rows[i].status not in IN_FLIGHT for i in unknown), done
        assert all(rows[i].next_retry_at is None for i in retry), done
        note(f"payments job at {self.now:%Y-%m-%d}: {done}")
        self.any_paid()
        for k, v in done.items():
            if v:
                event(f"payments job: {k}")

    @precondition(lambda self: self.paid)
    @rule(
        pick=st.integers(0, 1023),
        part=st.sampled_from((100, 50)) | st.integers(1, 100),
        over=st.sampled_from((0, 0, 0, 1, 2, 1000)),
        any_=st.booleans(),
    )
    def give_back(self, pick, part, over, any_):
        """Refund ``part`` percent of what is left of a payment, or ``over`` minor units more
        than is left (refused, nothing written); a succeeded payment with something left,
        or (``any_``) any payment (one that did not succeed: refused)."""
        query = select(
            Payment.id,
            Payment.home_provider_id,
            Payment.status,
            Payment.amount_minor,
            Payment.refunded_minor,
        ).order_by(Payment.id)
        with self.w.store.read() as s:
            payments = (
                []
                if any_
                else s.execute(
                    query.where(
                        Payment.status == "succeeded", Payment.refunded_minor < Payment.amount_minor
                    )
                ).all()
            )
            payments = payments or s.execute(query).all()
        p = payments[pick % len(payments)]
        left = p.amount_minor - p.refunded_minor
        amount = left + over if over else max(1, left * part // 100)
        refused = p.status != "succeeded" or amount > left
        before = self.untouched()
        try:
            r = refund(
                self.w.store,
                self.w.m.actor("provider", p.home_provider_id),
                p.id,
                amount,
                reason="goodwill",
                gateways=self.gateways,
                now=self.now,
            )
        except BrokerError as exc:
            note(f"refund of {amount} of payment {p.id} refused: {exc}")
            event(f"refund refused: {type(exc).__name__}")
            assert refused, exc
            assert self.untouched() == before
            return
        assert not refused, f"refund of {amount} of payment {p.id} ({p}) was taken"
        assert r.status == "succeeded", r.status
        note(f"payment {p.id}: refund {r.id} of {amount}")
        event(f"refund succeeded ({'all' if amount == left else 'part'})")

    def expected_cash(self, nettings, payments, refunds) -> Counter:
        """Cash moved by the nettings (payer to payee), the succeeded payments (into the
        home provider's) and the succeeded refunds (out of it)."""
        cash: Counter = Counter()
        for p in payments:
            if p.status == "succeeded":
                cash[(f"cash:provider:{p.home_provider_id}", p.currency)] += p.amount_minor
        for r in refunds:
            if r.status == "succeeded":
                cash[(f"cash:provider:{r.home_provider_id}", r.currency)] -= r.amount_minor
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
            entries = s.execute(
                select(
                    LedgerEntry.posting_id,
                    LedgerEntry.account,
                    LedgerEntry.currency,
                    LedgerEntry.amount_minor,
                )
            ).all()
            postings = {
                p.id: (p.kind, p.ref)
                for p in s.execute(select(LedgerPosting.id, LedgerPosting.kind, LedgerPosting.ref))
            }
            reported = balances(s)
            statements = {
                x.id: x
                for x in s.execute(
                    select(Statement.id, Statement.home_provider_id, Statement.period).where(
                        Statement.status == "finalized"
                    )
                )
            }
            lines = s.execute(
                select(
                    StatementLine.id,
                    StatementLine.statement_id,
                    StatementLine.amount_minor,
                    StatementLine.currency,
                    StatementLine.attrs,
                )
            ).all()
            rows = list(s.scalars(select(SettlementBatch)))
            docs = {b.id: se.batch_document(s, b) for b in rows}
            batches = [
                plain(
                    b,
                    "id",
                    "home_provider_id",
                    "provider_id",
                    "number",
                    "period",
                    "status",
                    "line_count",
                    "totals",
                    "due",
                    "margin",
                    "content_sha256",
                    "netting_id",
                )
                for b in rows
            ]
            settled = s.execute(
                select(SettlementLine.statement_line_id, SettlementLine.batch_id)
            ).all()
            nettings = [
                plain(n, "id", "provider_low_id", "provider_high_id", "period", "amounts")
                for n in s.scalars(select(SettlementNetting))
            ]
            views = {
                pid: se.provider_balance(s, self.w.admin, pid)["balances"]
                for pid in self.w.providers.values()
            }
            count = s.scalar(select(func.count()).select_from(SettlementLine))
            payments, refunds = self.payments_and_refunds(s)

        # 1. zero-sum postings; balances are the sums of entries
        per_posting: Counter = Counter()
        per_account: Counter = Counter()
        for e in entries:
            per_posting[(e.posting_id, e.currency)] += e.amount_minor
            per_account[(e.account, e.currency)] += e.amount_minor
        assert not +per_posting and not -per_posting, per_posting
        assert reported == dict(per_account)

        # 2. billed = owed to delivering providers + margins + own revenue
        owed: Counter = Counter()  # (home, provider, currency) -> from the lines
        line_owed: dict[int, int] = {}
        billed: Counter = Counter()  # (period, home, currency)
        parts: Counter = Counter()  # (period, home, currency): owed + margin + own
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
        assert {k: v for k, v in got_pay.items() if v} == {k: v for k, v in booked_pay.items() if v}

        # 3. batches
        assert count == len(settled) == len({sl for sl, _ in settled})  # a line once
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
                    b.home_provider_id,
                    b.period,
                    b.provider_id,
                )
                assert (item["amount_minor"], item["currency"]) == (ln.amount_minor, ln.currency)
                sums[ln.currency] += ln.amount_minor
                due[ln.currency] += line_owed[ln.id]
            assert b.line_count == len(doc["lines"])
            assert {c: v for c, v in b.totals.items() if v} == {c: v for c, v in sums.items() if v}
            assert all(
                b.due.get(c, 0) + b.margin.get(c, 0) == b.totals.get(c, 0)
                for c in set(b.totals) | set(b.due)
            )
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
                assert {b.home_provider_id, b.provider_id} == {
                    n.provider_low_id,
                    n.provider_high_id,
                }
                assert b.period == n.period
                for c, v in b.due.items():
                    owes[(b.home_provider_id, c)] += v
            for c, a in n.amounts.items():
                low, high = owes[(n.provider_low_id, c)], owes[(n.provider_high_id, c)]
                assert (a["low_owes_minor"], a["high_owes_minor"], a["net_minor"]) == (
                    low,
                    high,
                    abs(low - high),
                )
                assert a["payer_id"] == (
                    n.provider_low_id if low > high else n.provider_high_id if high > low else None
                )
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
        moved = self.expected_cash(nettings, payments, refunds)
        assert cash == {k: v for k, v in moved.items() if v}
        for pid, rows in views.items():
            for row in rows:
                q, c = row["counterparty_id"], row["currency"]
                assert row["owes_minor"] == outstanding[(pid, q, c)]
                assert row["owed_minor"] == outstanding[(q, pid, c)]
                assert row["net_minor"] == row["owed_minor"] - row["owes_minor"]

    # -- the payments' books ----------------------------------------------------------------

    @staticmethod
    def payments_and_refunds(s) -> tuple[list, list]:
        payments = s.execute(
            select(
                Payment.id,
                Payment.statement_id,
                Payment.user_id,
                Payment.home_provider_id,
                Payment.status,
                Payment.amount_minor,
                Payment.refunded_minor,
                Payment.currency,
                Payment.gateway_key,
                Payment.gateway_ref,
                Payment.decline_code,
            )
        ).all()
        refunds = s.execute(
            select(
                Refund.id,
                Refund.payment_id,
                Refund.statement_id,
                Refund.status,
                Refund.amount_minor,
                Refund.currency,
                Refund.gateway_key,
                Refund.gateway_ref,
                Payment.home_provider_id,
            ).join(Payment, Payment.id == Refund.payment_id)
        ).all()
        return payments, refunds

    @invariant()
    def payments_hold(self):
        with self.w.store.read() as s:
            payments, refunds = self.payments_and_refunds(s)
            statements = {
                x.id: x
                for x in s.execute(
                    select(
                        Statement.id,
                        Statement.user_id,
                        Statement.home_provider_id,
                        Statement.status,
                        Statement.totals,
                        Statement.paid_minor,
                        Statement.paid_at,
                    )
                )
            }
            billed = s.execute(
                select(
                    Statement.user_id, StatementLine.currency, func.sum(StatementLine.amount_minor)
                )
                .join(StatementLine, StatementLine.statement_id == Statement.id)
                .where(Statement.status == "finalized")
                .group_by(Statement.user_id, StatementLine.currency)
            ).all()
            entries = s.execute(
                select(
                    LedgerPosting.kind,
                    LedgerPosting.ref,
                    LedgerEntry.account,
                    LedgerEntry.currency,
                    LedgerEntry.amount_minor,
                )
                .join(LedgerEntry, LedgerEntry.posting_id == LedgerPosting.id)
                .where(LedgerPosting.kind.in_(("payment", "refund")))
            ).all()
            posted = Counter(s.execute(select(LedgerPosting.kind, LedgerPosting.ref)).all())
            sums = s.execute(
                select(
                    LedgerEntry.account, LedgerEntry.currency, func.sum(LedgerEntry.amount_minor)
                ).group_by(LedgerEntry.account, LedgerEntry.currency)
            ).all()
            ops = s.execute(
                select(
                    TestGatewayOperation.key,
                    TestGatewayOperation.operation,
                    TestGatewayOperation.status,
                    TestGatewayOperation.ref,
                    TestGatewayOperation.decline_code,
                    TestGatewayOperation.amount_minor,
                )
            ).all()
        charges = self.gateway.charges()

        # each statement: paid = succeeded payments less succeeded refunds, paid_at iff
        # the payments reached the total, never more paid than the total
        gross: Counter = Counter()
        given_back: Counter = Counter()
        in_flight: Counter = Counter()
        for p in payments:
            x = statements[p.statement_id]
            assert x.status == "finalized"
            assert (p.user_id, p.home_provider_id) == (x.user_id, x.home_provider_id)
            assert {c for c, v in x.totals.items() if v} == {p.currency}
            gross[p.statement_id] += p.amount_minor if p.status == "succeeded" else 0
            in_flight[p.statement_id] += p.status in IN_FLIGHT
        by_payment = {p.id: p for p in payments}
        reserved: Counter = Counter()
        refunded: Counter = Counter()
        for r in refunds:
            p = by_payment[r.payment_id]
            assert p.status == "succeeded", (p, r)
            assert (r.statement_id, r.currency) == (p.statement_id, p.currency)
            if r.status in (*IN_FLIGHT, "succeeded"):
                reserved[p.id] += r.amount_minor
            if r.status == "succeeded":
                refunded[p.id] += r.amount_minor
                given_back[p.statement_id] += r.amount_minor
        for x in statements.values():
            total = sum(x.totals.values())
            assert x.paid_minor == gross[x.id] - given_back[x.id], x
            assert gross[x.id] <= max(total, 0), x
            assert (x.paid_at is not None) == (0 < total <= gross[x.id]), x
            assert in_flight[x.id] <= 1
        for p in payments:  # refunds never above what was paid
            assert p.refunded_minor == reserved[p.id] <= p.amount_minor, p
            assert refunded[p.id] <= p.amount_minor

        # the ledger: one posting per succeeded payment and refund, of these entries only
        want: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for p in payments:
            if p.status == "succeeded":
                want[("payment", str(p.id))].update(
                    {
                        (f"cash:provider:{p.home_provider_id}", p.currency): p.amount_minor,
                        (f"receivable:user:{p.user_id}", p.currency): -p.amount_minor,
                    }
                )
        for r in refunds:
            if r.status == "succeeded":
                want[("refund", str(r.id))].update(
                    {
                        (f"refunds:provider:{r.home_provider_id}", r.currency): r.amount_minor,
                        (f"cash:provider:{r.home_provider_id}", r.currency): -r.amount_minor,
                    }
                )
        got: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for e in entries:
            got[(e.kind, e.ref)][(e.account, e.currency)] += e.amount_minor
        assert dict(got) == dict(want)
        assert all(posted[key] == 1 for key in want)
        assert not {key for key in posted if key[0] in ("payment", "refund")} - set(want)

        # the accounts: a user's receivable is its statements less its payments; a refunds
        # account is the refunds given (cash: invariant 4, with the nettings)
        account: Counter = Counter()
        for u, c, v in billed:
            account[(f"receivable:user:{u}", c)] += int(v)
        for p in payments:
            if p.status == "succeeded":
                account[(f"receivable:user:{p.user_id}", p.currency)] -= p.amount_minor
        for r in refunds:
            if r.status == "succeeded":
                account[(f"refunds:provider:{r.home_provider_id}", r.currency)] += r.amount_minor
        held = {(a, c): int(v) for a, c, v in sums if a.startswith(("receivable:", "refunds:"))}
        assert {k: v for k, v in held.items() if v} == {k: v for k, v in account.items() if v}

        # the gateway's book: one successful purchase per payment that succeeded (or whose
        # answer was lost), of its amount and reference; a failed payment's decline; one
        # successful refund per succeeded refund
        assert max(Counter(op.key for op in ops).values(), default=0) <= 1
        bought = {op.key: op for op in ops if op.operation == "purchase"}
        succeeded = {k: op for k, op in bought.items() if op.status == "succeeded"}
        assert charges == len(succeeded)
        assert set(succeeded) == {
            p.gateway_key for p in payments if p.status in ("succeeded", "unknown")
        }
        for p in payments:
            op = bought.get(p.gateway_key)
            if p.status == "succeeded":
                assert (op.ref, op.amount_minor) == (p.gateway_ref, p.amount_minor), (p, op)
            elif p.status == "failed":
                assert (op.status, op.decline_code) == ("failed", p.decline_code), (p, op)
            elif p.status == "canceled":
                assert op is None, (p, op)
        gave = {op.key: op for op in ops if op.operation == "refund" and op.status == "succeeded"}
        assert {k: (op.ref, op.amount_minor) for k, op in gave.items()} == {
            r.gateway_key: (r.gateway_ref, r.amount_minor)
            for r in refunds
            if r.status == "succeeded"
        }


def test_the_books_hold_under_random_markets_and_settlements(store):
    world = sw.build(store)
    examples = {"sqlite": 30, "postgresql": 12}[store.backend]
    run_state_machine_as_test(
        lambda: BooksMachine(world),
        settings=settings(
            max_examples=examples,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
