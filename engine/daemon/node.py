"""The daemon's loop: claim jobs, run them, heartbeat their leases, report, finish, drain.

Two threads. The claim thread long-polls the broker for a job whenever the node has room and
hands what it gets to the main thread through a queue. The main thread owns the state and the
runs: every tick it starts what was claimed, sends the reports the state holds, renews leases,
and finishes the jobs whose delivery ended. A broker that does not answer is waited out with
back-off and jitter; deliveries go on meanwhile (a control-plane outage never tears down a
delivery). A lease the broker says is lost stops that job's delivery at once, with nothing
more reported for it.

SIGTERM (or SIGINT) drains: no more claims; running jobs get ``grace_s`` to finish, then are
stopped, their last usage reported and handed back; the daemon exits 0.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.daemon.broker_client import (
    Backoff,
    BrokerAway,
    BrokerClient,
    LeaseLost,
    Refused,
    wait_out,
)
from engine.daemon.runs import BadSpec, NodeOptions, Run
from engine.daemon.sealing import SealingKey
from engine.daemon.standby import Standby
from engine.daemon.state import State
from engine.errors import EngineError

log = logging.getLogger(__name__)


@dataclass
class DaemonOptions:
    name: str = ""  # how the broker knows this daemon (default: host and pid)
    provider_id: int | None = None  # the key's provider when it speaks for one only
    max_jobs: int = 1
    lease_s: float = 30.0
    claim_wait_s: float = 10.0
    report_every_s: float = 2.0
    grace_s: float = 30.0
    tick_s: float = 0.2
    # The provider's sealing key pair (default: sealing.key in the state folder, made there
    # when missing); ``replace_sealing_key`` publishes it over another one (a rotation).
    sealing_key_path: str | None = None
    replace_sealing_key: bool = False
    # Keep a spare delivery process started while the node is idle (standby.py): a job then
    # skips ``pktx deliver``'s start-up.
    standby: bool = True


class Daemon:
    def __init__(
        self,
        url: str,
        key: str,
        state_dir: str,
        node: NodeOptions,
        options: DaemonOptions | None = None,
        *,
        ca_bundle: str | None = None,
    ) -> None:
        self.opts = o = options or DaemonOptions()
        self.name = o.name or f"{socket.gethostname()}-{os.getpid()}"
        self.node = node
        self.state_dir = state_dir
        self.state = State(state_dir)
        self.client = BrokerClient(url, key, ca_bundle=ca_bundle)
        self.claimer = BrokerClient(url, key, ca_bundle=ca_bundle)
        self.runs: dict[int, Run] = {}
        self.waiting: dict[int, float] = {}  # claimed jobs whose block has not started: when
        self.claimed: queue.Queue = queue.Queue()
        self.draining = threading.Event()
        self.drain_deadline: float | None = None
        self.away_until = 0.0
        self.backoff = Backoff()
        self.next_report: dict[int, float] = {}
        self.next_beat: dict[int, float] = {}
        # The daemon's own time on a job, logged when it is done: from the claim's answer to
        # its delivery started, and from the delivery's exit to complete's answer (monotonic).
        self.claimed_at: dict[int, float] = {}
        self.own_s: dict[int, float] = {}
        self.exited_at: dict[int, float] = {}
        self.provider_id: int | None = None
        self.finished = 0
        # Set when the main thread has something to do before its next tick (a job claimed, a
        # delivery ended, a signal): it waits on this instead of sleeping out the tick.
        self.wake = threading.Event()
        # Set when a job leaves the node: the claim thread, waiting for room, claims at once.
        self.room = threading.Event()
        # For --metrics (engine.telemetry.DaemonCollector): what happened, and the last time
        # the broker answered (monotonic; None: never yet).
        self.events: Counter[str] = Counter()
        self.broker_seen: float | None = None
        self.claim_thread: threading.Thread | None = None
        self.spare: Standby | None = None

    # -- start and stop -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def drain(signum, frame):
            if not self.draining.is_set():
                log.warning(
                    "%s: draining (no more claims; %d job(s) running)",
                    signal.Signals(signum).name,
                    len(self.runs),
                )
                self.draining.set()
                self.wake.set()

        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGINT, drain)

    def run(self) -> int:
        try:
            self.provider_id = self._provider()
            log.info(
                "daemon %s for provider %d, state in %s",
                self.name,
                self.provider_id,
                self.state.path,
            )
            self.node.sealing, self.node.provider_id = self._sealing_key(), self.provider_id
            self._reconcile()
            self.claim_thread = threading.Thread(
                target=self._claim_loop, name="pktx-claim", daemon=True
            )
            self.claim_thread.start()
            while True:
                self._tick()
                if (
                    self.draining.is_set()
                    and not self.runs
                    and not self.waiting
                    and not self._unfinished()
                ):
                    break
                self.wake.wait(self.opts.tick_s)
                self.wake.clear()  # what set it happened before this: the next tick sees it
        except BrokerAway:  # only while draining before the broker ever answered
            pass
        finally:
            for run in self.runs.values():
                run.stop()
            if self.spare is not None:
                self.spare.close()
            self.client.close()
            self.claimer.close()
            self.state.close()
        log.info("daemon %s stopped (%d job(s) finished)", self.name, self.finished)
        return 0

    def _provider(self) -> int:
        me = wait_out(self.client.me, stop=self.draining.is_set, what="the broker")
        ids = me.get("provider_ids") or []
        if self.opts.provider_id is not None:
            if self.opts.provider_id not in ids:
                raise EngineError(
                    f"--provider {self.opts.provider_id}: the key does not speak "
                    f"for it (it speaks for {ids or 'no provider'})"
                )
            return self.opts.provider_id
        if len(ids) != 1:
            raise EngineError(
                f"the key speaks for {len(ids)} providers ({ids}); name one with --provider"
                if ids
                else "the key is not a provider's key"
            )
        return ids[0]

    def _sealing_key(self) -> SealingKey | None:
        """The provider's sealing key pair from its file (made when missing), published to the
        broker; None when the broker holds another key for the provider: this daemon then
        takes no job with sealed parameters (its provider's other daemons do)."""
        path = self.opts.sealing_key_path or os.path.join(self.state_dir, "sealing.key")
        key = SealingKey.load_or_create(path)
        provider_id = self.provider_id
        assert provider_id is not None  # asked of the broker first
        refused = None
        # Twice: two daemons publishing the provider's first key at once clash on the insert
        # (409), and a second look finds the same key.
        for _ in range(2):
            try:
                wait_out(
                    lambda: self.client.register_sealing_key(
                        provider_id, key.public, replace=self.opts.replace_sealing_key
                    ),
                    stop=self.draining.is_set,
                )
            except Refused as exc:
                refused = exc
                if exc.status == 409:
                    continue
            else:
                log.info(
                    "sealing key %s published for provider %d", key.fingerprint, self.provider_id
                )
                return key
            break
        assert refused is not None  # the loop returns unless a call was refused
        if refused.status == 409:
            log.warning(
                "sealing key %s (%s) is not the one provider %d's daemons publish: "
                "this daemon takes no jobs with sealed parameters. Give it the "
                "provider's key file (--sealing-key), or publish this one with "
                "--replace-sealing-key",
                key.fingerprint,
                path,
                self.provider_id,
            )
        else:
            log.warning(
                "the broker did not take sealing key %s (%s): this daemon takes no "
                "jobs with sealed parameters",
                key.fingerprint,
                refused,
            )
        return None

    def _unfinished(self) -> bool:
        return any(j.phase == "finishing" for j in self.state.active())

    # -- what the state held when the daemon started ------------------------------------------
    def _reconcile(self) -> None:
        """Each job the state holds: still ours (heartbeat) and run again, or finished (its
        outcome sent again), or lost (forgotten). The temporary folders of jobs no longer held
        (runs killed with the daemon) go."""
        held = {str(job.job_id) for job in self.state.active()}
        jobs = os.path.join(self.state_dir, "jobs")
        for name in os.listdir(jobs) if os.path.isdir(jobs) else ():
            if name not in held:
                shutil.rmtree(os.path.join(jobs, name, "tmp"), ignore_errors=True)
        for job in self.state.active():
            if job.phase == "finishing":
                log.info("job %d: sending its outcome again after a restart", job.job_id)
                continue  # _tick sends it
            try:
                wait_out(
                    lambda j=job: self.client.heartbeat(j.job_id, j.token, self.opts.lease_s),
                    stop=self.draining.is_set,
                )
            except LeaseLost:
                log.warning("job %d: its lease was lost while this daemon was down", job.job_id)
                self._drop(job.job_id)
                continue
            except Refused as exc:
                log.warning("job %d: %s; forgotten", job.job_id, exc)
                self._drop(job.job_id)
                continue
            if self.draining.is_set():
                self._hand_back(job.job_id, "the daemon is stopping")
                continue
            log.info("job %d: still this daemon's after a restart; delivering it again", job.job_id)
            self._start(job.job_id)

    # -- claiming -----------------------------------------------------------------------------
    def _claim_loop(self) -> None:
        provider_id = self.provider_id
        assert provider_id is not None  # known before the claim thread starts
        backoff = Backoff()
        while not self.draining.is_set():
            if len(self.runs) + len(self.waiting) + self.claimed.qsize() >= self.opts.max_jobs:
                self.room.wait(self.opts.tick_s)
                self.room.clear()
                continue
            try:
                answer = self.claimer.claim(
                    provider_id,
                    self.name,
                    wait_s=self.opts.claim_wait_s,
                    lease_s=self.opts.lease_s,
                    sealing_key=self.node.sealing.public if self.node.sealing else None,
                )
                backoff.reset()
                self.broker_seen = time.monotonic()
            except BrokerAway as exc:
                self.events["broker_away"] += 1
                delay = backoff.next_delay()
                if backoff.failures in (1, 5) or backoff.failures % 20 == 0:
                    log.warning("claiming: the broker is away (%s)", exc)
                self.draining.wait(delay)
                continue
            except EngineError as exc:  # refused, or the broker's certificate not accepted
                log.error("claiming: %s", exc)
                self.draining.wait(backoff.next_delay())
                continue
            if answer:
                self.events["claimed"] += 1
                self.claimed.put((answer, time.monotonic()))
                self.wake.set()

    def _take_claimed(self) -> None:
        while True:
            try:
                answer, at = self.claimed.get_nowait()
            except queue.Empty:
                return
            job = answer["job"]
            self.claimed_at[job["id"]] = at
            token = int(answer["token"])
            spec = job.get("spec") or {}
            if answer.get("sealed"):  # ciphertext: opened for each delivery, never kept open
                spec = {**spec, "sealed": answer["sealed"]}
            self.state.take(job["id"], token, spec, answer.get("reported") or {})
            log.info("job %d: claimed (token %d)", job["id"], token)
            if self.draining.is_set():
                self._hand_back(job["id"], "the daemon is stopping")
            else:
                self._start(job["id"])

    # -- running ------------------------------------------------------------------------------
    def _start(self, job_id: int) -> None:
        job = self.state.held(job_id)
        wait = _seconds_until(job.spec.get("starts_at"))
        if wait > 0:  # a block of time: delivered from its start, the lease held till then
            if job_id not in self.waiting:
                log.info("job %d: its block starts in %.1f s", job_id, wait)
            self.waiting[job_id] = time.monotonic() + wait
            self.next_beat.setdefault(job_id, time.monotonic() + self.opts.lease_s / 3)
            return
        self.waiting.pop(job_id, None)
        folder = os.path.join(self.state_dir, "jobs", str(job_id))
        try:
            run = Run(
                job_id,
                job.spec,
                self.node,
                folder,
                base=job.reported,
                lease_s=self.opts.lease_s,
                standby=self.spare,
            )
        except (BadSpec, OSError) as exc:
            log.error("job %d: %s", job_id, exc)
            self._finish(job_id, {"call": "fail", "body": {"error": str(exc)[:500]}})
            return
        self.spare = None  # taken by the run (or it had ended: the run started its own)
        runs = self.state.started_run(job_id)
        self.runs[job_id] = run
        if job_id in self.claimed_at:
            self.own_s[job_id] = time.monotonic() - self.claimed_at.pop(job_id)
        threading.Thread(
            target=self._watch, args=(run,), name=f"pktx-job-{job_id}", daemon=True
        ).start()
        self.next_beat[job_id] = time.monotonic() + self.opts.lease_s / 3
        self.next_report[job_id] = time.monotonic() + self.opts.report_every_s
        if runs == 1:
            try:
                self._broker(lambda: self.client.start(job_id, job.token), job_id)
            except Refused as exc:
                log.warning("job %d: start refused: %s", job_id, exc)

    def _watch(self, run: Run) -> None:
        """Wake the main thread as soon as ``run``'s delivery ends (its completion is sent at
        once, not at the next tick)."""
        run.proc.wait()
        self.exited_at[run.job_id] = time.monotonic()
        self.wake.set()

    def _tick(self) -> None:
        self._take_claimed()
        now = time.monotonic()
        if self.draining.is_set() and self.drain_deadline is None:
            self.drain_deadline = now + self.opts.grace_s
        for job_id, due in list(self.waiting.items()):
            if self.draining.is_set():
                del self.waiting[job_id]
                self._hand_back(job_id, "the daemon is stopping")
            elif now >= due:
                self._start(job_id)
        for job_id, run in list(self.runs.items()):
            code = run.poll()
            if code is not None:
                self._ended(job_id, run, code)
            elif run.live and not run.stopping and _seconds_until(run.spec.get("ends_at")) <= 0:
                log.info("job %d: its block ended; the live source stops", job_id)
                run.block_over = True
                run.stop()  # a live source completes what it has (SIGTERM), then exits 0
            elif self.drain_deadline is not None and now >= self.drain_deadline:
                log.warning("job %d: not finished within the grace period; handing it back", job_id)
                run.stop()
                del self.runs[job_id]
                if run.streams:
                    self.state.next_report(job_id, run.counters())
                self._hand_back(job_id, "the daemon stopped before the job ended")
            elif run.streams and now >= self.next_report.get(job_id, 0):
                self.state.next_report(job_id, run.counters())
                self.next_report[job_id] = now + self.opts.report_every_s
        if now < self.away_until:
            return
        self._send_reports()
        for job_id in [*self.runs, *self.waiting]:
            if now >= self.next_beat.get(job_id, 0):
                self._heartbeat(job_id)
        for job in self.state.active():
            if job.phase == "finishing":
                self._send_outcome(job.job_id)
        self._keep_spare()

    def _keep_spare(self) -> None:
        """Start the spare delivery process when the node is idle (no delivery running, whose
        CPU its start-up would take) and has none."""
        if not self.opts.standby or self.spare is not None or self.runs:
            return
        if self.draining.is_set():
            return
        try:
            self.spare = Standby(dict(os.environ), os.path.join(self.state_dir, "standby.log"))
        except OSError as exc:
            log.warning("the spare delivery process could not start: %s", exc)
            self.opts.standby = False

    def _ended(self, job_id: int, run: Run, code: int) -> None:
        del self.runs[job_id]
        self.room.set()
        if run.stopping and not run.block_over:
            return
        if code == 0:
            self.events["completed"] += 1
            self.state.next_report(job_id, run.counters())
            self._finish(job_id, {"call": "complete", "body": {"measured": run.measured()}})
        else:
            self.events["failed"] += 1
            if run.streams:
                self.state.next_report(job_id, run.counters())
            error = run.error()
            log.error("job %d: the delivery failed: %s", job_id, error)
            self._finish(
                job_id, {"call": "fail", "body": {"error": error, "measured": run.measured()}}
            )

    def _finish(self, job_id: int, outcome: dict) -> None:
        self.state.set_phase(job_id, "finishing", outcome)
        if self._final_report(self.state.job(job_id)) is None:
            self._send_reports()
        self._send_outcome(job_id)

    def _hand_back(self, job_id: int, reason: str) -> None:
        self.events["handed_back"] += 1
        self._finish(job_id, {"call": "handback", "body": {"reason": reason}})

    def _drop(self, job_id: int) -> None:
        self.waiting.pop(job_id, None)
        for kept in (self.claimed_at, self.own_s, self.exited_at):
            kept.pop(job_id, None)
        run = self.runs.pop(job_id, None)
        if run is not None:
            run.stop()
            self.room.set()
        self.state.set_phase(job_id, "dropped")

    # -- talking to the broker ----------------------------------------------------------------
    def _broker(self, call, job_id: int) -> bool:
        """Make ``call``; False when the broker is away (tried again later) or the job was
        lost (dropped)."""
        if time.monotonic() < self.away_until:
            return False
        try:
            call()
        except BrokerAway as exc:
            self.events["broker_away"] += 1
            delay = self.backoff.next_delay()
            self.away_until = time.monotonic() + delay
            if self.backoff.failures in (1, 5) or self.backoff.failures % 20 == 0:
                log.warning(
                    "the broker is away (%s); deliveries go on, trying again in %.1f s", exc, delay
                )
            return False
        except LeaseLost as exc:
            self.events["lease_lost"] += 1
            log.warning("job %d: the lease is lost (%s); stopped here", job_id, exc)
            self._drop(job_id)
            return False
        self.backoff.reset()
        self.broker_seen = time.monotonic()
        return True

    def _heartbeat(self, job_id: int) -> None:
        job = self.state.held(job_id)
        answer: dict = {}

        def beat():
            answer.update(self.client.heartbeat(job_id, job.token, self.opts.lease_s) or {})

        try:
            renewed = self._broker(beat, job_id)
        except Refused as exc:  # finished or taken back by the broker's side
            log.warning("job %d: %s; stopped here", job_id, exc)
            self._drop(job_id)
            return
        if renewed:
            self.next_beat[job_id] = time.monotonic() + self.opts.lease_s / 3
            if job_id in self.runs:
                self.runs[job_id].renewed()
            if answer.get("cancelled") and job_id in self.runs:
                log.warning("job %d: cancelled by the broker", job_id)
                self._drop(job_id)
                return
            self._new_rates(job_id, answer)

    def _new_rates(self, job_id: int, answer: dict) -> None:
        """The broker changed the job's rate limits (a bandwidth grant withdrawn): the spec is
        kept with them and a running delivery started again under them (a live source goes
        on from where it is, its counters kept; a file is delivered afresh, its output not
        yet complete; a file into a stream resumes where it stands; a live source into a
        file or a zmq:// stream goes on under the old rates: starting again would overwrite
        the file or end the stream)."""
        job = self.state.held(job_id)
        rates = {k: answer[k] for k in ("max_rate_bps", "min_rate_bps") if k in answer}
        if not rates or all(job.spec.get(k) == v for k, v in rates.items()):
            return
        log.warning(
            "job %d: the broker changed its rates to %s; delivering under them",
            job_id,
            ", ".join(f"{k} {v}" for k, v in rates.items()),
        )
        self.state.set_spec(job_id, {**job.spec, **rates})
        run = self.runs.get(job_id)
        if run is None:
            return  # waiting for its block: it starts under the new rates
        if not run.restartable:
            log.warning(
                "job %d: its delivery cannot start again without loss (%s); the new "
                "rates apply from its next run",
                job_id,
                run.argv[6],
            )
            return
        del self.runs[job_id]
        run.stop()
        if run.streams:
            self.state.next_report(job_id, run.counters())
        self._start(job_id)

    def _send_reports(self) -> None:
        for job_id, sequence, body in self.state.unsent():
            job = self.state.job(job_id)
            if job is None or job.phase not in ("claimed", "running", "finishing"):
                self.state.acknowledged(job_id, sequence)
                continue
            try:
                ok = self._broker(
                    lambda j=job, q=sequence, b=body: self.client.report(j.job_id, j.token, q, b),
                    job_id,
                )
            except Refused as exc:
                log.error("job %d: report %d refused: %s", job_id, sequence, exc)
                ok = True
            if not ok:
                if time.monotonic() < self.away_until:
                    return
                continue
            self.state.acknowledged(job_id, sequence)

    def _final_report(self, job) -> tuple[int, dict] | None:
        """The report that goes with a finishing job's ``complete`` (sequence, counters): its
        one report not yet acknowledged, usually the final one of a file job. Taken in with
        the completion in one call and one transaction at the broker, it saves a round trip a
        job; it stays in the outbox until that call is answered, and a resend (after a kill)
        is answered as stored."""
        if job is None or job.phase != "finishing" or job.outcome["call"] != "complete":
            return None
        unsent = self.state.unsent(job.job_id)
        return (unsent[0][1], unsent[0][2]) if len(unsent) == 1 else None

    def _send_outcome(self, job_id: int) -> None:
        job = self.state.job(job_id)
        if job is None or job.phase != "finishing":
            return
        outcome = job.outcome
        assert outcome is not None  # a finishing job's outcome is stored with its phase
        final = self._final_report(job)
        if final is None and self.state.unsent(job_id):
            return  # the reports first, one by one (`_send_reports`)
        try:
            ok = self._broker(lambda: self.client.finish(job_id, job.token, outcome, final), job_id)
        except Refused as exc:
            if final is not None:
                # Refused together (the report's counters, or a broker that takes no report
                # with ``complete``): the next tick sends them apart, the report first, each
                # refusal then dealt with on its own.
                log.warning(
                    "job %d: complete with its last report refused (%s); sending them apart",
                    job_id,
                    exc,
                )
                return
            log.error("job %d: %s refused: %s", job_id, outcome["call"], exc)
            ok = True
        if ok:
            if final is not None:
                self.state.acknowledged(job_id, final[0])
            self.state.set_phase(job_id, "done")
            self.finished += 1
            said = {"complete": "done", "fail": "failed", "handback": "handed back"}[
                outcome["call"]
            ]
            exited, started = self.exited_at.pop(job_id, None), self.own_s.pop(job_id, None)
            if exited is None or started is None:
                log.info("job %d: %s", job_id, said)
            else:  # claimed and delivered by this process
                ended = time.monotonic() - exited
                log.info(
                    "job %d: %s (the daemon's own time: %.1f ms, %.1f ms from the claim "
                    "to the delivery started, %.1f ms from its exit to the answer to %s)",
                    job_id,
                    said,
                    (started + ended) * 1000,
                    started * 1000,
                    ended * 1000,
                    outcome["call"],
                )


def _seconds_until(iso: str | None) -> float:
    """Seconds from now until the ISO 8601 time ``iso`` (0 or less: past; None: 0)."""
    if not iso:
        return 0.0
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()
