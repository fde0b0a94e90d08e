"""The dispatcher: a ROUTER that sends segments to workers against credit and takes results back.

One thread owns the socket. Segments come from the source thread through a queue (a wake-up
message on an inproc socket says one is there); complete segments go, in order, to the sink
thread's queue. Memory is bounded by the window: segments dispatched but not yet written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from engine.capture.batch import FRAME_COUNT as BATCH_FRAMES
from engine.capture.batch import PacketBatch
from engine.delivery import protocol as P
from engine.delivery.meter import Meter, checked_counters
from engine.delivery.ratelog import RateLimitedLog
from engine.delivery.reassembler import Reassembler
from engine.errors import EngineError

log = logging.getLogger(__name__)

MAX_WORKERS = 1024  # joined at once: a flood of READYs must not grow without bound
POISON_ACTIONS = ("fail", "skip")


class DeliveryError(EngineError):
    """The delivery could not be completed (the message names the segment and the service)."""


@dataclass
class Task:
    segment: int
    part: int
    parts: int
    batch: PacketBatch
    positions: np.ndarray | None  # where the part's packets sit in the segment (affinity)
    lanes: frozenset = frozenset()
    attempt: int = 0
    failures: list[str] = field(default_factory=list)
    avoid: set[bytes] = field(default_factory=set)
    suspect: bool = False  # held by a worker that died: sent alone until it succeeds

    @property
    def key(self) -> tuple[int, int]:
        return (self.segment, self.part)

    def describe(self) -> str:
        return f"segment {self.segment} (part {self.part + 1} of {self.parts})"


@dataclass
class Assignment:
    """A task as sent to one worker: only a RESULT or FAIL with this very header answers it."""

    task: Task
    header: P.TaskHeader
    sent_at: float


@dataclass
class WorkerState:
    identity: bytes
    name: str
    services: set[str]
    credit: int
    last_seen: float
    last_sent: float = 0.0
    in_flight: dict = field(default_factory=dict)
    draining: bool = False
    strikes: int = 0
    lanes: int = 0


_END = object()


class Dispatcher:
    """Serve one stream: ``run(segments, emit)``.

    ``segments`` is a ``queue.Queue`` of PacketBatches ending with ``Dispatcher.END`` (or an
    exception to re-raise); ``emit`` receives the reassembled segments in order.

    Nothing a peer sends can block the dispatcher or reach the output unless it answers a task
    sent to that very peer: sends never block (a worker whose queue is full is dropped), frames
    are size-limited, and anything else is counted in the usage record and dropped.
    """

    END = _END

    def __init__(self, bind: str, chain: list[dict], *, stream_id: int | None = None,
                 meter: Meter | None = None, window: int | None = None,
                 heartbeat_ms: int = P.HEARTBEAT_MS, liveness: int = P.LIVENESS,
                 max_attempts: int = P.MAX_ATTEMPTS, on_poison: str = "fail",
                 task_timeout_s: float = P.TASK_TIMEOUT_S, no_worker_timeout_s: float = 60.0,
                 flow_affinity: bool = False, lanes: int = 64, curve_dir: str | None = None,
                 max_frame_bytes: int = P.MAX_FRAME_BYTES,
                 context: zmq.Context | None = None) -> None:
        if on_poison not in POISON_ACTIONS:
            raise ValueError(f"on_poison must be one of {POISON_ACTIONS}, not {on_poison!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.ctx = context or zmq.Context.instance()
        self.chain = chain
        self.chain_frame = P.dumps(chain)
        self.needed = {spec["name"] for spec in chain}
        self.stream_id = P.new_stream_id() if stream_id is None else stream_id
        self.meter = meter or Meter()
        self.window = window
        self.hb = heartbeat_ms / 1000
        self.heartbeat_ms = heartbeat_ms
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.on_poison = on_poison
        self.task_timeout_s = task_timeout_s
        self.no_worker_timeout_s = no_worker_timeout_s
        self.flow_affinity = flow_affinity
        self.lanes = lanes
        self.rlog = RateLimitedLog(log)
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.router_mandatory = True
        self.sock.sndhwm = P.HWM
        self.sock.rcvhwm = P.HWM
        self.sock.maxmsgsize = max_frame_bytes
        self._wake = None
        self._auth = None
        try:
            if curve_dir:
                from engine.delivery.curve import secure_server

                self._auth = secure_server(self.ctx, self.sock, curve_dir)
            try:
                if bind.endswith(":0"):
                    port = self.sock.bind_to_random_port(bind.rsplit(":", 1)[0])
                    self.endpoint = f"{bind.rsplit(':', 1)[0]}:{port}"
                else:
                    self.sock.bind(bind)
                    self.endpoint = bind
            except zmq.ZMQError as exc:
                raise DeliveryError(f"cannot bind {bind}: {exc} (an endpoint is "
                                    "tcp://HOST:PORT, ipc://PATH or inproc://NAME)") from None
        except BaseException:
            self.close()
            raise
        self.wake_addr = f"inproc://pktx-wake-{id(self)}"
        self._wake = self.ctx.socket(zmq.PULL)
        self._wake.bind(self.wake_addr)
        self.workers: dict[bytes, WorkerState] = {}
        self.lane_owner: dict[int, bytes] = {}
        self.pending: dict[tuple[int, int], Task] = {}
        self.queue: deque[Task] = deque()
        self.reorder = Reassembler()
        self.next_segment = 0
        self.written = 0  # segments the sink has finished with (set by the caller's emit)
        self._rr = 0
        self._workerless_since: float | None = None

    # -- workers -------------------------------------------------------------------------------
    def total_credit(self) -> int:
        return sum(w.credit for w in self.workers.values() if not w.draining)

    def wait_for_workers(self, n: int, timeout_s: float, check=None) -> None:
        """Serve READY messages until ``n`` workers have joined (``check()`` may raise)."""
        deadline = time.monotonic() + timeout_s
        while len(self._usable()) < n:
            if check is not None:
                check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeliveryError(f"only {len(self._usable())} of {n} workers joined "
                                    f"{self.endpoint} within {timeout_s:.0f} s")
            if self.sock.poll(int(min(left, 0.1) * 1000)):
                self._drain_socket()
            self._housekeeping()

    def _usable(self) -> list[WorkerState]:
        return [w for w in self.workers.values()
                if not w.draining and self.needed <= w.services]

    def _send(self, w: WorkerState, *frames, copy: bool = True) -> bool:
        """Send without ever blocking; a worker that cannot take a message is dropped."""
        try:
            self.sock.send_multipart([w.identity, P.PROTOCOL, *frames], zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            self._declare_dead(w, "not reading (its queue is full)")
            return False
        except zmq.ZMQError as exc:  # the peer went away (router_mandatory)
            self._declare_dead(w, f"unreachable: {exc}")
            return False
        w.last_sent = time.monotonic()
        return True

    def _reply(self, identity: bytes, *frames) -> None:
        """A best-effort answer to a peer that is not (or no longer) a worker of ours."""
        try:
            self.sock.send_multipart([identity, P.PROTOCOL, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.meter.reject("reply to a stranger not sent (its queue is full or it left)")

    def _declare_dead(self, w: WorkerState, why: str, *, blame_tasks: bool = True,
                      kind: str | None = None) -> None:
        """Forget ``w``; its tasks go elsewhere. ``blame_tasks``: a death while holding a task
        counts as a failed attempt of it (a segment that kills every worker is poison)."""
        if self.workers.pop(w.identity, None) is None:
            return
        self.meter.lost_workers[kind or why.split(":")[0]] += 1
        held = [a.task for a in w.in_flight.values()]
        w.in_flight.clear()
        # Which of several tasks killed it is unknown: none is blamed, all become suspects,
        # and a suspect is next sent to a worker holding nothing else. A worker that dies
        # holding one task alone was killed by it (or died anyway): that one is blamed.
        culprit = held[0] if len(held) == 1 else None
        for task in held:
            task.suspect = True
        for lane, owner in list(self.lane_owner.items()):
            if owner == w.identity:
                del self.lane_owner[lane]
        if not held:
            log.info("worker %s left (%s)", w.name, why)
            return
        log.warning("worker %s declared dead (%s); resending its %d task(s)", w.name, why,
                    len(held))
        self.meter.dead_workers.append({"worker": w.name, "reason": why,
                                        "in_flight": len(held)})
        for task in sorted(held, key=lambda t: t.key):
            if task.key in self.pending:
                blame = blame_tasks and task is culprit
                self._requeue(task, w if blame else None,
                              f"worker {w.name} {why} while working on it",
                              count_attempt=blame)

    def _requeue(self, task: Task, worker: WorkerState | None, why: str,
                 count_attempt: bool = True) -> None:
        if count_attempt:
            task.failures.append(why)
            if worker is not None:
                task.avoid.add(worker.identity)
            if len(task.failures) >= self.max_attempts:
                self._poison(task)
                return
        self.meter.retries += 1
        self.queue.appendleft(task)

    def _poison(self, task: Task) -> None:
        what = (f"{task.describe()} failed {len(task.failures)} times "
                f"({'; '.join(task.failures[:-1]) or 'no earlier failure'}); "
                f"last: {task.failures[-1]}")
        if self.on_poison == "fail":
            raise DeliveryError(what)
        log.error("%s: skipped (--on-poison skip), %d packets dropped", what, len(task.batch))
        del self.pending[task.key]
        self.meter.poison_segments.append({"segment": task.segment, "part": task.part,
                                           "packets": len(task.batch),
                                           "reasons": list(task.failures)})
        self.meter.packets_skipped += len(task.batch)
        nothing = np.empty(0, np.int64)
        self.reorder.put(task.segment, task.part, task.batch.take(nothing), nothing)

    # -- main loop -----------------------------------------------------------------------------
    def run(self, segments: queue.Queue, emit, *, workers_gone=None) -> None:
        """Dispatch until the source is exhausted and every segment has been emitted.

        ``workers_gone()`` returns why no worker can ever come back (say, every local worker
        process has exited), or None; with no worker left the stream then fails at once
        instead of waiting ``no_worker_timeout_s``.
        """
        source_done = False
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        while True:
            source_done = self._feed(segments) or source_done
            self._dispatch()
            for batch in self.reorder.ready():
                emit(batch)
            if (source_done and self.reorder.next_emit == self.next_segment
                    and not self.pending):
                return
            self._check_workers(workers_gone)
            events = dict(poller.poll(int(self.hb * 1000)))
            if self._wake in events:
                while True:
                    try:
                        self._wake.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            if self.sock in events:
                self._drain_socket()
            self._housekeeping()

    def _drain_socket(self) -> None:
        for _ in range(256):  # drain what is there, then look at the rest
            try:
                self._receive(zmq.NOBLOCK)
            except zmq.Again:
                break

    def _check_workers(self, workers_gone) -> None:
        """Fail a stream whose work waits with no worker able to take it."""
        if not self.pending or self._usable():
            self._workerless_since = None
            return
        now = time.monotonic()
        if self._workerless_since is None:
            self._workerless_since = now
        # Name the segment most likely at fault: the one that failed most, else the first.
        waiting = min(self.pending.values(), key=lambda t: (-len(t.failures), t.key))
        history = (f"; it failed {len(waiting.failures)} time(s): {'; '.join(waiting.failures)}"
                   if waiting.failures else "")
        gone = workers_gone() if workers_gone is not None else None
        if gone:
            raise DeliveryError(f"{waiting.describe()} cannot be delivered: {gone}{history}")
        if now - self._workerless_since > self.no_worker_timeout_s:
            raise DeliveryError(f"{waiting.describe()} cannot be delivered: no worker able to "
                                f"take it for {self.no_worker_timeout_s:.0f} s{history}")

    def _window(self) -> int:
        return self.window or max(8, 2 * self.total_credit())

    def _feed(self, segments: queue.Queue) -> bool:
        """Take segments from the source while the window has room; True at the end."""
        while self.next_segment - self.written < self._window() and len(self.queue) < max(
                4, self.total_credit()):
            try:
                item = segments.get_nowait()
            except queue.Empty:
                return False
            if item is _END:
                return True
            if isinstance(item, BaseException):
                raise item
            self._add_segment(item)
        return False

    def _add_segment(self, batch: PacketBatch) -> None:
        sid = self.next_segment
        self.next_segment += 1
        self.meter.segments += 1
        first = batch.first_seq
        if self.flow_affinity and len(batch) > 0:
            lanes = self._lanes_of(batch)
            owners = self._owners(lanes)
            parts = []
            for owner in np.unique(owners):
                idx = np.flatnonzero(owners == owner)
                parts.append((idx, frozenset(np.unique(lanes[idx]).tolist())))
        else:
            parts = [(None, frozenset())]
        self.reorder.open(sid, first, len(batch), len(parts))
        for k, (idx, lane_set) in enumerate(parts):
            sub = batch if idx is None else batch.take(idx)
            task = Task(sid, k, len(parts), sub, idx, lane_set)
            self.pending[task.key] = task
            self.queue.append(task)

    def _lanes_of(self, batch: PacketBatch) -> np.ndarray:
        from engine.packet.flowhash import worker_of_packets

        return worker_of_packets(batch, self.lanes).astype(np.int64)

    def _owners(self, lanes: np.ndarray) -> np.ndarray:
        """The worker index owning each lane, assigning unowned lanes to the least loaded."""
        usable = self._usable()
        index = {w.identity: i for i, w in enumerate(usable)}
        table = np.full(self.lanes, -1, np.int64)
        for lane in np.unique(lanes).tolist():
            owner = self.lane_owner.get(lane)
            if owner not in index:
                if not usable:
                    table[lane] = 0
                    continue
                target = min(usable, key=lambda w: (w.lanes, w.name))
                target.lanes += 1
                self.lane_owner[lane] = owner = target.identity
            table[lane] = index[owner]
        return table[lanes]

    @staticmethod
    def _can_take(w: WorkerState, task: Task) -> bool:
        if len(w.in_flight) >= w.credit:
            return False
        if task.suspect and w.in_flight:
            return False  # a suspect goes alone, so a death says which task caused it
        return not any(a.task.suspect for a in w.in_flight.values())

    def _pick(self, task: Task) -> WorkerState | None:
        usable = self._usable()
        fresh = [w for w in usable if w.identity not in task.avoid]
        # A worker this task failed on gets it again only when no other could ever take it:
        # waiting for a busy one is better than a likely repeat of the failure.
        allowed = fresh or usable
        free = [w for w in allowed if self._can_take(w, task)]
        if not free:
            return None
        if self.flow_affinity and task.lanes:
            owner = self.lane_owner.get(next(iter(sorted(task.lanes))))
            w = self.workers.get(owner) if owner else None
            if w is not None and w in allowed:
                return w if self._can_take(w, task) else None
            # The owner is gone (or failed this task): hand its lanes to a live worker.
            w = min(free, key=lambda x: (len(x.in_flight), x.name))
            for lane in task.lanes:
                self.lane_owner[lane] = w.identity
            return w
        # Most spare credit first, round-robin among equals.
        self._rr += 1
        return max(free, key=lambda w: (w.credit - len(w.in_flight),
                                        (hash(w.identity) + self._rr) % 997))

    def _dispatch(self) -> None:
        held = []
        while self.queue:
            task = self.queue.popleft()
            if task.key not in self.pending:
                continue  # completed meanwhile by another worker
            w = self._pick(task)
            if w is None:
                held.append(task)
                if not (self.flow_affinity or task.avoid or task.suspect):
                    break
                continue
            header = P.TaskHeader(self.stream_id, task.segment, task.part, task.parts,
                                  task.attempt, len(task.batch))
            task.attempt += 1
            if self._send(w, P.TASK, header.pack(), self.chain_frame, *task.batch.to_frames(),
                          copy=False):
                w.in_flight[task.key] = Assignment(task, header, time.monotonic())
            else:
                held.append(task)  # never delivered: not an attempt, nothing to blame
        self.queue.extendleft(reversed(held))

    # -- receiving -----------------------------------------------------------------------------
    def _receive(self, flags: int = 0) -> None:
        frames = self.sock.recv_multipart(flags, copy=False)
        identity = frames[0].bytes
        w = self.workers.get(identity)
        if len(frames) < 3 or frames[1].bytes != P.PROTOCOL:
            self.meter.reject("not a PKTX/1 message")
            if w is not None:
                self._strike(w, "sent a message in another protocol")
            else:
                self.rlog.warning("stranger-protocol", "ignored a message that is not %s "
                                  "from a peer that is not a worker", P.PROTOCOL.decode())
            return
        cmd = frames[2].bytes
        now = time.monotonic()
        if w is not None:
            w.last_seen = now
        if cmd == P.READY:
            self._ready(identity, frames[3:])
        elif w is None:
            # A peer we declared dead or never met: nothing it says is taken; it must say READY.
            reason = f"{P.COMMAND_NAMES.get(cmd, 'unknown command')} from a peer that is not a " \
                     "worker of this stream"
            self.meter.reject(reason)
            if cmd != P.HEARTBEAT:
                self.rlog.warning("stranger", "dropped a %s", reason)
            if cmd != P.DISCONNECT:
                self._reply(identity, P.DISCONNECT,
                            P.dumps({"reason": "unknown worker: send READY"}))
        elif cmd == P.RESULT:
            self._result(w, frames[3:])
        elif cmd == P.FAIL:
            self._fail(w, frames[3:])
        elif cmd == P.HEARTBEAT:
            pass
        elif cmd == P.DISCONNECT:
            w.draining = True
            log.info("worker %s is draining (%d in flight)", w.name, len(w.in_flight))
        else:
            self._strike(w, f"sent unknown command {cmd[:8]!r}")

    def _ready(self, identity: bytes, body: list) -> None:
        try:
            hello = P.loads(body[0].bytes)
            credit = int(hello.get("credit", P.DEFAULT_CREDIT))
            services = {str(x) for x in hello.get("services", [])}
            name = str(hello.get("name", identity.hex()))[:128]
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            self.meter.reject("READY that does not parse")
            self.rlog.warning("bad-ready", "refused a READY that does not parse: %s", exc)
            return
        if credit < 1:
            self.meter.reject("READY with no credit")
            self.rlog.warning("bad-ready", "worker %s offered no credit; ignored", name)
            return
        old = self.workers.get(identity)
        if old is not None:
            self._declare_dead(old, "re-announced itself")
        elif len(self.workers) >= MAX_WORKERS:
            self.meter.reject("READY beyond the worker limit")
            self.rlog.warning("full", "refused worker %s: %d workers already joined", name,
                              MAX_WORKERS)
            self._reply(identity, P.DISCONNECT, P.dumps({"reason": "too many workers"}))
            return
        now = time.monotonic()
        w = WorkerState(identity, name, services, min(credit, 64), now, now)
        self.workers[identity] = w
        missing = self.needed - services
        if missing:
            log.warning("worker %s lacks service(s) %s; it will get no work", name,
                        ", ".join(sorted(missing)))
        else:
            log.info("worker %s joined with credit %d", name, w.credit)
        self._send(w, P.WELCOME, P.dumps({"heartbeat_ms": self.heartbeat_ms,
                                          "liveness": self.liveness,
                                          "stream": f"{self.stream_id:032x}"}))

    def _strike(self, w: WorkerState, why: str) -> None:
        self.meter.garbage += 1
        self.meter.reject("garbage from a worker")
        w.strikes += 1
        self.rlog.warning("strike", "worker %s %s (strike %d of %d)", w.name, why, w.strikes,
                          P.STRIKES)
        if w.strikes >= P.STRIKES and w.identity in self.workers:
            self._send(w, P.DISCONNECT, P.dumps({"reason": f"misbehaving: {why}"}))
            self._declare_dead(w, f"misbehaving: {why}", blame_tasks=False)

    def _answered(self, w: WorkerState, header_frame, what: str) -> Assignment | None:
        """The assignment a RESULT or FAIL answers, or None (after a strike) if it answers
        nothing this worker holds: another stream, task, attempt or packet count."""
        try:
            header = P.TaskHeader.unpack(header_frame)
        except ValueError as exc:
            self._strike(w, f"sent a {what} with a bad header: {exc}")
            return None
        sent = w.in_flight.get((header.segment, header.part))
        if sent is None or sent.header != header:
            wrong = ("of another stream" if header.stream != self.stream_id
                     else "it was not given" if sent is None else "with a changed header")
            self._strike(w, f"sent a {what} for segment {header.segment} part {header.part} "
                            f"{wrong}")
            return None
        return sent

    def _result(self, w: WorkerState, body: list) -> None:
        if len(body) != 2 + BATCH_FRAMES:
            self._strike(w, f"sent a RESULT of {len(body)} body frames, expected "
                            f"{2 + BATCH_FRAMES}")
            return
        sent = self._answered(w, body[0].buffer, "RESULT")
        if sent is None:
            return
        task = sent.task
        del w.in_flight[task.key]
        try:
            counters = P.loads(body[1].bytes)
            if not isinstance(counters, dict):
                raise ValueError("counters are not a JSON object")
            out = PacketBatch.from_frames([f.buffer for f in body[2:]])
            kept = out.seq if out.has_explicit_seq else None
            n_in = len(task.batch)
            if kept is None:
                if len(out) != n_in:
                    raise ValueError(f"{len(out)} packets back for {n_in} sent, with no "
                                     "positions")
            elif len(kept) > n_in:
                raise ValueError(f"{len(kept)} packets back for {n_in} sent")
            elif len(kept) and (kept[0] < 0 or kept[-1] >= n_in
                                or np.any(np.diff(kept) <= 0)):
                raise ValueError("kept positions out of range or out of order")
            if out.interfaces != task.batch.interfaces:
                raise ValueError("the interface table was changed")
        except (ValueError, IndexError, TypeError) as exc:
            self.rlog.warning("garbage", "worker %s returned garbage for %s: %s", w.name,
                              task.describe(), exc)
            if task.key in self.pending:
                self._requeue(task, w, f"worker {w.name} returned garbage: {exc}")
            self._strike(w, f"returned garbage for {task.describe()}")
            return
        if task.key not in self.pending:
            self.meter.duplicates += 1
            return
        del self.pending[task.key]
        positions = np.arange(n_in, dtype=np.int64) if kept is None else kept
        if task.positions is not None:
            positions = task.positions[positions]
        self.reorder.put(task.segment, task.part, out, positions)
        self.meter.record_worker(w.name, 1, n_in)
        self.meter.record_services(self._valid_counters(
            w, counters, n_in, task.batch.nbytes, out.nbytes))

    def _valid_counters(self, w: WorkerState, counters: dict, packets: int, bytes_in: int,
                        bytes_out: int) -> dict[str, dict[str, int]]:
        good, dropped, why = checked_counters(counters, self.needed, packets,
                                              max(bytes_in, bytes_out))
        if dropped:
            self.meter.counters_dropped += dropped
            self.meter.reject("service counter that fails validation", dropped)
            self.rlog.warning("counters", "dropped %d counter(s) from worker %s (%s)", dropped,
                              w.name, why)
        return good

    def _fail(self, w: WorkerState, body: list) -> None:
        if len(body) != 2:
            self._strike(w, f"sent a FAIL of {len(body)} body frames, expected 2")
            return
        sent = self._answered(w, body[0].buffer, "FAIL")
        if sent is None:
            return
        try:
            info = P.loads(body[1].bytes)
        except ValueError as exc:
            self._strike(w, f"sent an unreadable FAIL: {exc}")
            return
        task = sent.task
        del w.in_flight[task.key]
        if task.key not in self.pending:
            return
        why = (f"service {str(info.get('service'))[:64]!r} on worker {w.name}: "
               f"{str(info.get('error'))[:400]}"
               if isinstance(info, dict) else f"worker {w.name} failed")
        self.rlog.warning("fail", "%s failed: %s", task.describe(), why)
        self._requeue(task, w, why)

    # -- time ----------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.identity not in self.workers:
                continue  # dropped while serving another
            if now - w.last_seen > self.hb * self.liveness:
                self._declare_dead(w, f"silent for {now - w.last_seen:.1f} s", kind="silent")
                continue
            stuck = [a for a in w.in_flight.values() if now - a.sent_at > self.task_timeout_s]
            if stuck:
                self._send(w, P.DISCONNECT, P.dumps({"reason": "task timeout"}))
                self._declare_dead(w, f"task timeout: held {stuck[0].task.describe()} for "
                                      f"over {self.task_timeout_s:g} s")
                continue
            if w.draining and not w.in_flight:
                self._send(w, P.DISCONNECT, P.dumps({"reason": "drained"}))
                self.workers.pop(w.identity, None)
                continue
            if now - w.last_sent >= self.hb:
                self._send(w, P.HEARTBEAT)

    # -- the end -------------------------------------------------------------------------------
    def broadcast_disconnect(self, reason: str) -> None:
        for w in list(self.workers.values()):
            self._send(w, P.DISCONNECT, P.dumps({"reason": reason}))

    def close(self) -> None:
        # A moment for the last DISCONNECTs to leave (a peer that does not read gets none).
        self.sock.close(linger=500)
        if self._wake is not None:
            self._wake.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def wake(ctx: zmq.Context, addr: str) -> zmq.Socket:
    """A socket the source thread uses to wake the dispatcher (one per thread)."""
    s = ctx.socket(zmq.PUSH)
    s.linger = 0
    s.sndhwm = 1
    s.connect(addr)
    return s


def start_thread(target, *args, name: str) -> threading.Thread:
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    return t
