"""Statements under random sequences of billing (issue 9): a hypothesis state machine.

Charges come from awards (the price) and usage reports past the award's volume, at times in the
month under way or, late, in a month already closed (a writer that lagged behind the close).
Periods are closed in order, sometimes closed again, sometimes cut short after their first batch
(a close that failed midway); finalized lines get credit notes. After every step the store is
read back with plain queries and held to these rules, computed here from the rows:

1. a charge or credit note is on at most one statement line, and a line carries its amount;
2. finalized statements of the home provider are numbered 1..n without gaps, each one's totals
   are the sum of its lines, and its stored content still has its hash;
3. a draft has no lines;
4. after a close of a new period P ran to its end, every charge rated before P's end that
   existed when the close began is on a statement, late ones of earlier periods included
   (nothing is left behind, nothing billed twice);
5. a statement is the user's own: each line's charge or credit note is the statement's user's;
6. the ledger balances: every posting sums to zero per currency, and what each user owes
   (its receivable account) is the sum of its finalized statements.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from billing_world import (
    BILLING_TABLES,
    VOLUME,
    award,
    credit_some_line,
    publish_bytes_tariff,
    report,
)
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
from marketplace import Market
from sqlalchemy import delete, func, select

from broker import statements as st_
from broker.errors import BrokerError
from broker.models import (
    Charge,
    CreditNote,
    LedgerEntry,
    Statement,
    StatementLine,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
MONTHS = 8  # the months the machine may bill, January to August 2024
USERS = ("alice", "bob", "carol")


class Aborted(Exception):
    """Raised from a close's progress callback: the close stops after a batch (a crash)."""


def month_start(i: int) -> datetime:
    return START.replace(month=1 + i)


def build_world(store):
    m = Market(store)
    w = type("World", (), {})()
    w.m, w.store = m, store
    home_net, far_net = m.network("home-net"), m.network("far-net")
    w.home = m.provider(home_net, "home", services=("identity",))
    w.far = [m.provider(far_net, name) for name in ("far-a", "far-b")]
    w.users = {}
    for name in USERS:
        uid = m.user(name, w.home)
        w.users[name] = (uid, m.actor("device", m.device(uid, f"{name}-phone")))
    w.home_actor = m.actor("provider", w.home)
    return w


class StatementMachine(RuleBasedStateMachine):
    def __init__(self, world) -> None:
        super().__init__()
        self.w = world

    @initialize()
    def empty(self) -> None:
        with self.w.store.write() as s:
            for model in BILLING_TABLES:
                s.execute(delete(model))
        for pid in self.w.far:
            publish_bytes_tariff(
                self.w.store, self.w.m, pid, "anonymize", START - timedelta(days=1)
            )
        self.month = 0  # the month under way (index)
        self.closed = -1  # the last month whose close began
        self.jobs: list[tuple[int, int, int, int]] = []  # (job, provider, sequence, bytes)
        self.must_be_billed: set[int] = set()  # charge ids rule 4 promises

    def when(self, day: int, late: bool) -> datetime:
        month = self.closed if late and self.closed >= 0 else self.month
        return month_start(month) + timedelta(days=day, hours=3)

    @precondition(lambda self: self.month < MONTHS)
    @rule(
        user=st.sampled_from(USERS),
        far=st.integers(0, 1),
        price=st.integers(0, 5000),
        day=st.integers(0, 27),
        late=st.booleans(),
    )
    def buy(self, user, far, price, day, late):
        at = self.when(day, late)
        provider = self.w.far[far]
        job = award(self.w.store, self.w.users[user][1], provider, price=price, at=at)
        self.jobs.append((job, provider, 0, VOLUME))
        note(f"award: {user} from far-{far} at {price} on {at:%m-%d}, job {job}")

    @precondition(lambda self: self.jobs and self.month < MONTHS)
    @rule(
        pick=st.integers(0, 63),
        more=st.integers(0, 3_000_000),
        day=st.integers(0, 27),
        late=st.booleans(),
    )
    def use(self, pick, more, day, late):
        i = pick % len(self.jobs)
        job, provider, sequence, bytes_out = self.jobs[i]
        at = self.when(day, late)
        try:
            report(self.w.store, self.w.m, provider, job, sequence + 1, bytes_out + more, at)
        except BrokerError as exc:  # a report dated before the job's last one
            note(f"report refused: {exc}")
            return
        self.jobs[i] = (job, provider, sequence + 1, bytes_out + more)

    @precondition(lambda self: self.month < MONTHS)
    @rule(abort=st.sampled_from((False, False, True)))
    def close(self, abort):
        period = month_start(self.month)
        end = month_start(self.month + 1)
        with self.w.store.read() as s:
            due = set(s.scalars(select(Charge.id).where(Charge.rated_at < end)))

        def crash(_done):
            raise Aborted

        try:
            st_.close_period(
                self.w.store.write,
                self.w.home_actor,
                self.w.home,
                f"{period:%Y-%m}",
                now=end + timedelta(hours=1),
                batch=1,
                on_batch=crash if abort else None,
            )
        except Aborted:
            note(f"close of {period:%Y-%m} cut short after a batch")
        else:
            self.must_be_billed |= due
            note(f"closed {period:%Y-%m}")
        self.closed = self.month
        self.month += 1

    @precondition(lambda self: self.closed >= 0)
    @rule()
    def close_again(self):
        # A rerun finishes a close cut short; a late charge of a user whose statement for the
        # period is final waits for the next period's (so rule 4 promises nothing new here).
        period = month_start(self.closed)
        end = month_start(self.closed + 1)
        st_.close_period(
            self.w.store.write,
            self.w.home_actor,
            self.w.home,
            f"{period:%Y-%m}",
            now=end + timedelta(days=40),
        )
        note(f"closed {period:%Y-%m} again")

    @precondition(lambda self: self.closed >= 0)
    @rule(pick=st.integers(0, 1023), part=st.integers(1, 100))
    def credit(self, pick, part):
        note(
            credit_some_line(
                self.w.store,
                self.w.home_actor,
                pick,
                part,
                month_start(self.closed + 1) + timedelta(hours=2),
            )
        )

    @invariant()
    def statements_hold(self):
        with self.w.store.read() as s:
            charges = {
                c.id: c for c in s.execute(select(Charge.id, Charge.user_id, Charge.amount_minor))
            }
            notes = {
                n.id: n
                for n in s.execute(
                    select(CreditNote.id, CreditNote.user_id, CreditNote.amount_minor)
                )
            }
            lines = s.execute(
                select(
                    StatementLine.statement_id,
                    StatementLine.charge_id,
                    StatementLine.credit_note_id,
                    StatementLine.amount_minor,
                    StatementLine.currency,
                )
            ).all()
            rows = list(s.scalars(select(Statement)))
            intact = {x.id: st_.verify(s, x) for x in rows if x.status == "finalized"}
            statements = {
                x.id: type(
                    "S",
                    (),
                    {
                        "id": x.id,
                        "user_id": x.user_id,
                        "status": x.status,
                        "number": x.number,
                        "totals": x.totals,
                    },
                )
                for x in rows
            }
        sources = Counter((ln.charge_id, ln.credit_note_id) for ln in lines)
        assert all(n == 1 for n in sources.values()), sources.most_common(3)  # rule 1
        sums: dict[int, Counter] = defaultdict(Counter)
        for ln in lines:
            source = charges[ln.charge_id] if ln.charge_id else notes[ln.credit_note_id]
            assert ln.amount_minor == source.amount_minor  # rule 1
            assert source.user_id == statements[ln.statement_id].user_id  # rule 5
            sums[ln.statement_id][ln.currency] += ln.amount_minor
        finalized = [x for x in statements.values() if x.status == "finalized"]
        assert sorted(x.number for x in finalized) == list(range(1, len(finalized) + 1))
        for x in statements.values():
            if x.status == "draft":
                assert not sums[x.id]  # rule 3
            else:
                assert x.totals == {c: v for c, v in sums[x.id].items()} and intact[x.id]
        billed = {ln.charge_id for ln in lines if ln.charge_id}
        assert self.must_be_billed <= billed, self.must_be_billed - billed  # rule 4
        owed: Counter = Counter()
        for x in statements.values():
            if x.status == "finalized":
                owed[f"receivable:user:{x.user_id}"] += x.totals.get("EUR", 0)
        with self.w.store.read() as s:
            unbalanced = s.execute(
                select(LedgerEntry.posting_id, LedgerEntry.currency)
                .group_by(LedgerEntry.posting_id, LedgerEntry.currency)
                .having(func.sum(LedgerEntry.amount_minor) != 0)
            ).all()
            receivable = dict(
                s.execute(
                    select(LedgerEntry.account, func.sum(LedgerEntry.amount_minor))
                    .where(LedgerEntry.account.startswith("receivable:"))
                    .group_by(LedgerEntry.account)
                ).all()
            )
        assert unbalanced == []  # rule 6
        assert {a: m for a, m in receivable.items() if m} == {a: m for a, m in owed.items() if m}


def test_statements_keep_their_rules_under_random_billing(store):
    world = build_world(store)
    examples = {"sqlite": 30, "postgresql": 12}[store.backend]
    run_state_machine_as_test(
        lambda: StatementMachine(world),
        settings=settings(
            max_examples=examples,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
