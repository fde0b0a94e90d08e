"""Settlement between providers (issue 10), on both databases: batches per (home, delivering)
pair and period with audit totals and a hash, the delivering provider's acknowledgement (a
copy, other content, a wrong total), both directions netted into one amount due and posted,
the home provider settling though its user did not pay (claim c04), ``pktx broker settle``
run twice."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
from locations import ROOT
from settlement_world import PAST, award, build, close
from sqlalchemy import func, select

from broker import settlements as se
from broker.actors import Actor
from broker.errors import Conflict, InvalidInput, NotYours
from broker.ledger import balance, balances, cash, payable, revenue
from broker.models import LedgerEntry, Statement
from broker.statements import credit_line


@pytest.fixture
def w(store):
    """alice (home-isp) served by far-b at 500 and by home-isp itself at 111; bob (home-isp)
    by far-c at 300; carol (far-b) by home-isp at 200. home-isp keeps 10%, far-b 5%."""
    w = build(store, margins={"home-isp": 100_000, "far-b": 50_000})
    award(w, "alice", "far-b", 500)
    award(w, "alice", "home-isp", 111)
    award(w, "bob", "far-c", 300)
    award(w, "carol", "home-isp", 200)
    close(w)
    return w


def actor(w, name: str) -> Actor:
    return w.m.actor("provider", w.providers[name])


def zero_sum(store) -> None:
    with store.read() as s:
        assert (
            s.execute(
                select(LedgerEntry.posting_id, LedgerEntry.currency)
                .group_by(LedgerEntry.posting_id, LedgerEntry.currency)
                .having(func.sum(LedgerEntry.amount_minor) != 0)
            ).all()
            == []
        )


def test_both_directions_are_netted_into_one_amount_due(w):
    home, far_b = w.home, w.far_b
    with w.store.write() as s:
        before = se.provider_balance(s, actor(w, "home-isp"), home)["balances"]
        assert [
            (b["counterparty_id"], b["owes_minor"], b["owed_minor"], b["net_minor"]) for b in before
        ] == [(far_b, 450, 190, -260), (w.far_c, 270, 0, -270)]
        issued = se.issue(s, actor(w, "home-isp"), home, "2025-01")
        assert [
            (b.provider_id, b.number, b.line_count, b.totals, b.due, b.margin, b.status)
            for b in issued
        ] == [
            (far_b, 1, 1, {"EUR": 500}, {"EUR": 450}, {"EUR": 50}, "issued"),
            (w.far_c, 1, 1, {"EUR": 300}, {"EUR": 270}, {"EUR": 30}, "issued"),
        ]
        assert se.issue(s, actor(w, "home-isp"), home, "2025-01") == issued  # nothing new
        to_b = issued[0]
        doc = se.batch_document(s, to_b)
        assert se.content_hash(doc) == to_b.content_sha256
        # far-b acknowledges: home-isp's batch waits for far-b's own to home-isp to net.
        se.acknowledge(s, actor(w, "far-b"), to_b.id, doc)
        assert to_b.status == "acknowledged" and to_b.netting_id is None
        [back] = se.issue(s, actor(w, "far-b"), far_b, "2025-01")
        assert (back.provider_id, back.totals, back.due) == (home, {"EUR": 200}, {"EUR": 190})
        with pytest.raises(NotYours):  # only the delivering side acknowledges
            se.acknowledge(s, actor(w, "far-b"), back.id, se.batch_document(s, back))
        se.acknowledge(s, actor(w, "home-isp"), back.id, se.batch_document(s, back))
        assert to_b.status == back.status == "settled" and to_b.netting_id == back.netting_id
        netting = se.get_netting(s, back.netting_id)
        assert netting.amounts == {
            "EUR": {
                "low_owes_minor": 450,
                "high_owes_minor": 190,
                "net_minor": 260,
                "payer_id": home,
                "payee_id": far_b,
            }
        }
        assert (
            balance(s, payable(home, far_b), "EUR") == balance(s, payable(far_b, home), "EUR") == 0
        )
        assert balance(s, cash(home), "EUR") == -260 and balance(s, cash(far_b), "EUR") == 260
        # far-b earned 450 for serving alice, home-isp 190 for serving carol (on top of
        # their margins and own deliveries from the statements).
        assert balance(s, revenue(far_b), "EUR") == -(10 + 450)
        assert balance(s, revenue(home), "EUR") == -(111 + 50 + 30 + 190)
        after = se.provider_balance(s, actor(w, "far-b"), far_b)["balances"]
        assert [(b["counterparty_id"], b["net_minor"]) for b in after] == [(home, 0)]
    zero_sum(w.store)


def test_the_home_provider_settles_though_its_user_did_not_pay(w):
    with w.store.write() as s:
        unpaid = s.scalars(select(Statement).where(Statement.period == "2025-01")).all()
        assert unpaid and all(x.paid_minor == 0 and x.paid_at is None for x in unpaid)
        result = se.settle_period(s, w.admin, "2025-01")
        assert {b["status"] for b in result["batches"]} == {"settled"}
        assert not any(m for (a, _), m in balances(s, "payable:").items())
        assert balance(s, cash(w.home), "EUR") == -(450 + 270 - 190)
        # the users still owe everything: the home provider carries the risk (claim c04)
        assert balance(s, f"receivable:user:{w.users['alice']}", "EUR") == 611


def test_a_copy_is_recognised_other_content_and_wrong_totals_are_refused(w):
    with w.store.write() as s:
        batch = se.issue(s, actor(w, "home-isp"), w.home, "2025-01", provider_id=w.far_b)[0]
        doc = se.batch_document(s, batch)
        wrong = copy.deepcopy(doc)
        wrong["totals"]["EUR"] += 1
        with pytest.raises(InvalidInput) as e:
            se.acknowledge(s, actor(w, "far-b"), batch.id, wrong)
        assert e.value.field == "totals.EUR"
        wrong = copy.deepcopy(doc)
        wrong["line_count"] = 2
        with pytest.raises(InvalidInput) as e:
            se.acknowledge(s, actor(w, "far-b"), batch.id, wrong)
        assert e.value.field == "line_count"
        other = copy.deepcopy(doc)  # same number, audit totals consistent, other content
        other["lines"][0]["amount_minor"] += 5
        other["totals"]["EUR"] += 5
        other["margin"]["EUR"] += 5
        with pytest.raises(Conflict):
            se.acknowledge(s, actor(w, "far-b"), batch.id, other)
        assert batch.status == "issued"  # nothing half-written
        first = se.batch_summary(se.acknowledge(s, actor(w, "far-b"), batch.id, doc))
        again = se.batch_summary(se.acknowledge(s, actor(w, "far-b"), batch.id, doc))
        # far-b's own batch for carol's line is not issued yet: the netting waits for it
        assert first == again and first["status"] == "acknowledged"
        with pytest.raises(Conflict):
            se.acknowledge(s, actor(w, "far-b"), batch.id, other)


def test_late_lines_go_in_the_next_batch_and_no_line_is_settled_twice(w):
    with w.store.write() as s:
        se.settle_period(s, w.admin, "2025-01")
        alice = s.scalar(select(Statement).where(Statement.user_id == w.users["alice"]))
    with w.store.write() as s:  # a credit note on far-b's line goes on February's
        credit_line(
            s,
            actor(w, "home-isp"),
            alice.id,
            1,
            amount_minor=-100,
            reason="slow",
            now=PAST + timedelta(days=30),
        )
    award(w, "alice", "far-b", 40, at=PAST + timedelta(days=25))
    close(w, "2025-02")
    with w.store.write() as s:
        result = se.settle_period(s, w.admin, "2025-02", provider_id=w.far_b)
        [batch] = result["batches"]
        assert (batch["number"], batch["line_count"], batch["totals"], batch["due"]) == (
            2,
            2,
            {"EUR": -60},
            {"EUR": -54},
        )
        [netting] = result["nettings"]
        assert netting["amounts"]["EUR"]["payer_id"] == w.far_b  # far-b gives back 54
        lines = Counter(
            line["statement_line_id"]
            for b in se.list_batches(s, w.admin, w.home)
            for line in se.batch_document(s, b)["lines"]
        )
        assert lines and max(lines.values()) == 1
        assert not any(m for (a, _), m in balances(s, "payable:").items())
    zero_sum(w.store)


def test_who_sees_settlements(w):
    with w.store.write() as s:
        se.settle_period(s, w.admin, "2025-01")
    with w.store.read() as s:
        mine = se.list_batches(s, actor(w, "far-c"), w.far_c)
        assert [(b.home_provider_id, b.provider_id) for b in mine] == [(w.home, w.far_c)]
        assert len(se.list_batches(s, w.admin, w.home)) == 3
        for who in (actor(w, "far-c"), w.m.actor("user", w.users["alice"])):
            with pytest.raises(NotYours):
                se.list_batches(s, who, w.far_b)
            with pytest.raises(NotYours):
                se.provider_balance(s, who, w.far_b)
        other = next(
            b
            for b in se.list_batches(s, w.admin, w.far_b)
            if w.far_c not in (b.home_provider_id, b.provider_id)
        )
        with pytest.raises(NotYours):
            se.get_batch(s, actor(w, "far-c"), other.id)
        with pytest.raises(NotYours):
            se.settle_period(s, actor(w, "home-isp"), "2025-01")
        with pytest.raises(InvalidInput):
            se.issue(s, actor(w, "home-isp"), w.home, "2025-13")


def test_pktx_broker_settle_is_safe_to_run_twice(tmp_path):
    from broker.store import Store

    db = f"sqlite:///{tmp_path / 'settle.sqlite3'}"
    w = build(Store(db), margins={"home-isp": 100_000})
    award(w, "alice", "far-b", 500)
    award(w, "carol", "home-isp", 200)
    close(w)

    def settle(*extra: str) -> dict:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "broker",
                "settle",
                "--db",
                db,
                "--period",
                "2025-01",
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=120,
        )
        return json.loads(out.stdout)

    first = settle("--provider", "far-b")
    assert [(b["number"], b["due"], b["status"]) for b in first["batches"]] == [
        (1, {"EUR": 450}, "settled"),
        (1, {"EUR": 200}, "settled"),
    ]
    [netting] = first["nettings"]
    assert netting["amounts"]["EUR"]["net_minor"] == 250
    assert settle() == {**first, "provider_id": None}


def test_both_sides_acknowledging_at_once_net_once(w):
    import threading

    with w.store.write() as s:
        [to_b] = se.issue(s, actor(w, "home-isp"), w.home, "2025-01", provider_id=w.far_b)
        [to_home] = se.issue(s, actor(w, "far-b"), w.far_b, "2025-01")
        docs = {
            to_b.id: (actor(w, "far-b"), se.batch_document(s, to_b)),
            to_home.id: (actor(w, "home-isp"), se.batch_document(s, to_home)),
        }
    start, errors = threading.Barrier(2), []

    def ack(batch_id: int) -> None:
        who, doc = docs[batch_id]
        start.wait()
        try:
            with w.store.write() as s:
                se.acknowledge(s, who, batch_id, doc)
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=ack, args=(i,)) for i in docs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with w.store.read() as s:
        batches = [se.get_batch(s, w.admin, i) for i in docs]
        assert {b.status for b in batches} == {"settled"}
        assert len({b.netting_id for b in batches}) == 1
        assert balance(s, cash(w.home), "EUR") == -(450 - 190)
    zero_sum(w.store)
