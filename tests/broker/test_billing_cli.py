"""``pktx broker billing close`` and ``pktx broker statements ...`` as real processes on a
SQLite file: a close run twice bills once; a close killed with SIGKILL at any moment leaves
every statement whole (draft without lines, or finalized with its hash), and the next run
finishes it with numbers that have no gaps; a statement shown as PDF reads back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from locations import ROOT
from sqlalchemy import func, select

from benchmarks.statement_load import PERIOD, populate
from broker import statements as st
from broker.models import Charge, Statement, StatementLine
from broker.store import Store


def pktx(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        check=check,
        timeout=300,
        **kw,
    )


def whole(store: Store) -> dict:
    """Every statement is either a draft without lines or finalized with lines that add up to
    its totals and match its hash; numbers run 1..n without gaps."""
    with store.read() as s:
        rows = list(s.scalars(select(Statement).order_by(Statement.id)))
        finalized = [r for r in rows if r.status == "finalized"]
        for r in rows:
            lines = s.scalar(
                select(func.count())
                .select_from(StatementLine)
                .where(StatementLine.statement_id == r.id)
            )
            if r.status == "draft":
                assert lines == 0 and r.number is None
            else:
                assert lines == r.line_count and st.verify(s, r)
        assert sorted(r.number for r in finalized) == list(range(1, len(finalized) + 1))
        return {
            "drafts": len(rows) - len(finalized),
            "finalized": len(finalized),
            "lines": s.scalar(select(func.count()).select_from(StatementLine)),
            "charges": s.scalar(select(func.count()).select_from(Charge)),
        }


def test_a_close_run_twice_bills_once(tmp_path):
    db = f"sqlite:///{tmp_path / 'billing.sqlite3'}"
    billed = populate(db, 40, 6)
    first = json.loads(pktx("broker", "billing", "close", "--db", db, "--period", PERIOD).stdout)
    [home] = first["providers"]
    assert (home["statements"], home["finalized"], home["lines"]) == (40, 40, billed.lines)
    assert home["totals"] == {"EUR": billed.charged_minor}
    again = json.loads(pktx("broker", "billing", "close", "--db", db, "--period", PERIOD).stdout)
    assert again["providers"][0]["finalized"] == 0
    assert again["providers"][0]["totals"] == home["totals"]
    early = pktx("broker", "billing", "close", "--db", db, "--period", "2099-01", check=False)
    assert early.returncode == 1 and b"can be closed after" in early.stderr
    assert b"Traceback" not in early.stderr
    listed = json.loads(pktx("broker", "statements", "list", "--db", db, "--user", "user-3").stdout)
    assert [x["period"] for x in listed] == [PERIOD]
    verified = json.loads(
        pktx("broker", "statements", "verify", "--db", db, str(listed[0]["id"])).stdout
    )
    assert verified["intact"] is True
    text = pktx("broker", "statements", "show", "--db", db, str(listed[0]["id"])).stdout.decode()
    assert "far-" in text and "€" in text
    if shutil.which("pdftotext"):
        pdf = tmp_path / "statement.pdf"
        pktx(
            "broker",
            "statements",
            "show",
            "--db",
            db,
            str(listed[0]["id"]),
            "--format",
            "pdf",
            "--output",
            str(pdf),
        )
        read = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, check=True
        ).stdout.decode()
        assert "user-3" in read and "home" in read
    missing = pktx("broker", "statements", "show", "--db", db, "999999", check=False)
    assert missing.returncode == 1 and b"no statement" in missing.stderr


def _counts(store: Store) -> tuple[int, int]:
    with store.read() as s:
        rows = s.execute(select(Statement.status, func.count()).group_by(Statement.status))
        counts = dict(rows.all())
    return counts.get("draft", 0), counts.get("finalized", 0)


@pytest.mark.parametrize("moment", ["drafts made", "batches finalized"])
def test_a_close_killed_midway_leaves_every_statement_whole_and_a_rerun_finishes(tmp_path, moment):
    db = f"sqlite:///{tmp_path / 'billing.sqlite3'}"
    billed = populate(db, 1500, 4)
    store = Store(db)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "broker",
            "billing",
            "close",
            "--db",
            db,
            "--period",
            PERIOD,
            "--batch",
            "25",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        drafts, finalized = _counts(store)
        if (drafts and not finalized) if moment == "drafts made" else finalized >= 100:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    midway = whole(store)
    assert midway["finalized"] < 1500, "the close ended before it was killed"
    assert midway["lines"] < midway["charges"]
    pktx("broker", "billing", "close", "--db", db, "--period", PERIOD)
    done = whole(store)
    assert (done["drafts"], done["finalized"], done["lines"]) == (0, 1500, billed.lines)
    with store.read() as s:
        total = s.scalar(select(func.sum(StatementLine.amount_minor)))
    assert total == billed.charged_minor
    store.dispose()


def test_a_close_on_a_terminal_draws_a_bar_and_into_a_pipe_none(tmp_path):
    """The close's progress (engine/cli/progress_bars.py) on a terminal: a bar of the home
    providers (with the statements finalized so far); into a pipe only the JSON."""
    from terminal import on_a_terminal, piped

    db = f"sqlite:///{tmp_path / 'billing.sqlite3'}"
    populate(db, 30, 2)
    seen = on_a_terminal("broker", "billing", "close", "--db", db, "--period", PERIOD)
    assert "closing " + PERIOD in seen and "steps" in seen
    assert "1/1" in seen  # one home provider, done (what it finalized: the JSON on stdout)
    again = piped("broker", "billing", "close", "--db", db, "--period", PERIOD)
    assert again.returncode == 0 and again.stderr == ""
    assert json.loads(again.stdout)["providers"][0]["finalized"] == 0
