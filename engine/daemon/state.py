"""The daemon's local state: its jobs and the reports the broker has not acknowledged yet.

A SQLite file in the state folder, in WAL mode. Each change is one transaction (`_write`: an
explicit ``BEGIN IMMEDIATE``, as the connection is in autocommit mode), so a daemon killed at
any instant finds, on restart, every job it held with its fencing token and every report it
made, under the sequence number it was (or was about to be) sent with: resending it is answered
as the first time, never counted twice (the broker takes a job's report once per sequence).

A report's counters are cumulative for the job across every run of it: `next_report` never
lets one go below the last one made.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from engine.errors import EngineError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    token INTEGER NOT NULL,
    spec TEXT NOT NULL,
    phase TEXT NOT NULL,             -- claimed, running, finishing, done, dropped
    reported TEXT NOT NULL,          -- the last report made (cumulative counters)
    next_sequence INTEGER NOT NULL,
    outcome TEXT,                    -- finishing: the complete/fail/handback call to make
    runs INTEGER NOT NULL DEFAULT 0, -- deliveries started for it here
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    job_id INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
"""

# The counters a usage report carries (the broker's ``UsageIn``), all cumulative.
COUNTERS = (
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "seconds",
    "windows_met",
    "windows_missed",
)
ACTIVE = ("claimed", "running", "finishing")


@dataclass
class Job:
    job_id: int
    token: int
    spec: dict
    phase: str
    reported: dict
    next_sequence: int
    outcome: dict | None
    runs: int


class State:
    """The state file ``folder/daemon.sqlite3`` (the folder is made, mode 0700)."""

    def __init__(self, folder: str) -> None:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.path = os.path.join(folder, "daemon.sqlite3")
        self.db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL, not FULL: in WAL mode a commit is then written to the WAL (the OS's page
        # cache) without an fsync, the WAL synced at checkpoints. That is what the daemon's
        # guarantee is about: a process killed at any instant (SIGKILL, a crash, the OOM
        # killer) loses no committed transaction, because the kernel still holds what was
        # written; only a power cut or a kernel crash can lose the last commits (the database
        # stays consistent, rolled back to an earlier commit). Even then nothing is billed
        # twice: a report sent and lost here is made again, cumulative, under the same
        # sequence (the broker answers it as stored when its counters agree, refuses it when
        # they do not, and the next report carries them), and a claim the state lost is the
        # broker's to lapse. FULL cost an fsync per commit, six on every job's way from claim
        # to complete.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: every statement in it, or (an error) none. The connection is in
        autocommit mode (``isolation_level=None``), where ``with db:`` opens no transaction
        and each statement would commit on its own: a kill between two of them would leave a
        report in the outbox without its job's sequence moved on."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- jobs ---------------------------------------------------------------------------------
    def take(self, job_id: int, token: int, spec: dict, reported: dict) -> Job:
        """A job claimed with ``token`` (a job claimed again replaces what was kept of it:
        the broker's ``reported`` is where its usage continues)."""
        counters = {c: int(reported.get(c, 0) or 0) for c in COUNTERS}
        with self._write():
            self.db.execute("DELETE FROM outbox WHERE job_id = ?", (job_id,))
            self.db.execute(
                "INSERT OR REPLACE INTO jobs (job_id, token, spec, phase, reported, "
                "next_sequence, outcome, runs, updated_ns) VALUES (?, ?, ?, 'claimed', ?, ?, "
                "NULL, 0, ?)",
                (
                    job_id,
                    token,
                    json.dumps(spec),
                    json.dumps(counters),
                    int(reported.get("sequence", 0) or 0) + 1,
                    time.time_ns(),
                ),
            )
        return self.held(job_id)

    def held(self, job_id: int) -> Job:
        """A job this daemon holds: in its state file (an `EngineError` saying so if not)."""
        job = self.job(job_id)
        if job is None:
            raise EngineError(f"job {job_id} is not in the daemon's state ({self.path})")
        return job

    def job(self, job_id: int) -> Job | None:
        row = self.db.execute(
            "SELECT job_id, token, spec, phase, reported, next_sequence, outcome, runs "
            "FROM jobs WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        return _job(row) if row else None

    def active(self) -> list[Job]:
        rows = self.db.execute(
            "SELECT job_id, token, spec, phase, reported, next_sequence, outcome, runs "
            "FROM jobs WHERE phase IN ('claimed', 'running', 'finishing') ORDER BY job_id"
        )
        return [_job(r) for r in rows]

    def set_phase(self, job_id: int, phase: str, outcome: dict | None = None) -> None:
        with self._write():
            self.db.execute(
                "UPDATE jobs SET phase = ?, outcome = ?, updated_ns = ? WHERE job_id = ?",
                (
                    phase,
                    json.dumps(outcome) if outcome is not None else None,
                    time.time_ns(),
                    job_id,
                ),
            )

    def set_spec(self, job_id: int, spec: dict) -> None:
        with self._write():
            self.db.execute(
                "UPDATE jobs SET spec = ?, updated_ns = ? WHERE job_id = ?",
                (json.dumps(spec), time.time_ns(), job_id),
            )

    def started_run(self, job_id: int) -> int:
        with self._write():
            self.db.execute(
                "UPDATE jobs SET phase = 'running', runs = runs + 1, "
                "updated_ns = ? WHERE job_id = ?",
                (time.time_ns(), job_id),
            )
        return self.held(job_id).runs

    def forget_finished(self, older_than_s: float = 7 * 86400) -> None:
        cutoff = time.time_ns() - int(older_than_s * 1e9)
        with self._write():
            self.db.execute(
                "DELETE FROM jobs WHERE phase IN ('done', 'dropped') AND updated_ns < ?", (cutoff,)
            )

    # -- reports ------------------------------------------------------------------------------
    def next_report(self, job_id: int, counters: dict) -> tuple[int, dict] | None:
        """Make the job's next report from ``counters`` (each raised to at least the last
        report's), kept before it is sent; None when nothing grew."""
        job = self.held(job_id)
        body = {c: max(int(counters.get(c, 0)), int(job.reported.get(c, 0))) for c in COUNTERS}
        if body == job.reported:
            return None
        sequence = job.next_sequence
        with self._write():
            self.db.execute(
                "INSERT INTO outbox (job_id, sequence, body) VALUES (?, ?, ?)",
                (job_id, sequence, json.dumps(body)),
            )
            self.db.execute(
                "UPDATE jobs SET reported = ?, next_sequence = ?, updated_ns = ? WHERE job_id = ?",
                (json.dumps(body), sequence + 1, time.time_ns(), job_id),
            )
        return sequence, body

    def unsent(self, job_id: int | None = None) -> list[tuple[int, int, dict]]:
        """Reports not acknowledged yet: (job, sequence, body), oldest first."""
        query = "SELECT job_id, sequence, body FROM outbox"
        args: tuple = ()
        if job_id is not None:
            query += " WHERE job_id = ?"
            args = (job_id,)
        rows = self.db.execute(query + " ORDER BY job_id, sequence", args)
        return [(j, s, json.loads(b)) for j, s, b in rows]

    def acknowledged(self, job_id: int, sequence: int) -> None:
        with self._write():
            self.db.execute(
                "DELETE FROM outbox WHERE job_id = ? AND sequence <= ?", (job_id, sequence)
            )


def _job(row) -> Job:
    job_id, token, spec, phase, reported, next_sequence, outcome, runs = row
    return Job(
        job_id,
        token,
        json.loads(spec),
        phase,
        json.loads(reported),
        next_sequence,
        json.loads(outcome) if outcome else None,
        runs,
    )
