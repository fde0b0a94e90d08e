"""The dispatcher: a ROUTER that sends segments to workers against credit and takes results back.

One thread owns the socket. Segments come from the source thread through a queue (a wake-up
message on an inproc socket says one is there); complete segments go, in order, to the sink
thread's queue. Memory is bounded by the window: segments dispatched but not yet written.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from engine import protocol as P
from engine.batch import PacketBatch
from engine.errors import EngineError
from engine.meter import Meter

log = logging.getLogger(__name__)


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
    sent_at: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.segment, self.part)


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


@dataclass
class _Segment:
    first_seq: int
    count: int
    parts: int
    results: dict = field(default_factory=dict)  # part -> (batch, positions in segment)


_END = object()


class Dispatcher:
    """Serve one stream: ``run(segments, emit)``.

    ``segments`` is a ``queue.Queue`` of PacketBatches ending with ``Dispatcher.END`` (or an
    exception to re-raise); ``emit`` receives the reassembled segments in order.
    """

    END = _END

    def __init__(self, bind: str, chain: list[dict], *, stream_id: int = 0,
                 meter: Meter | None = None, window: int | None = None,
                 heartbeat_ms: int = P.HEARTBEAT_MS, liveness: int = P.LIVENESS,
                 max_attempts: int = P.MAX_ATTEMPTS, task_timeout_s: float = 60.0,
                 flow_affinity: bool = False, lanes: int = 64, curve_dir: str | None = None,
                 context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.chain = chain
        self.chain_frame = P.dumps(chain)
        self.needed = {spec["name"] for spec in chain}
        self.stream_id = stream_id
        self.meter = meter or Meter()
        self.window = window
        self.hb = heartbeat_ms / 1000
        self.heartbeat_ms = heartbeat_ms
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.task_timeout_s = task_timeout_s
        self.flow_affinity = flow_affinity
        self.lanes = lanes
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.router_mandatory = True
        self._auth = None
        if curve_dir:
            from engine.curve import secure_server

            self._auth = secure_server(self.ctx, self.sock, curve_dir)
        if bind.endswith(":0"):
            port = self.sock.bind_to_random_port(bind.rsplit(":", 1)[0])
            self.endpoint = f"{bind.rsplit(':', 1)[0]}:{port}"
        else:
            self.sock.bind(bind)
            self.endpoint = bind
        self.wake_addr = f"inproc://pktx-wake-{id(self)}"
        self._wake = self.ctx.socket(zmq.PULL)
        self._wake.bind(self.wake_addr)
        self.workers: dict[bytes, WorkerState] = {}
        self.lane_owner: dict[int, bytes] = {}
        self.pending: dict[tuple[int, int], Task] = {}
        self.queue: deque[Task] = deque()
        self.segments: dict[int, _Segment] = {}
        self.next_segment = 0
        self.next_emit = 0
        self.written = 0  # segments the sink has finished with (set by the caller's emit)
        self._rr = 0

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
                self._receive()
            self._housekeeping()

    def _usable(self) -> list[WorkerState]:
        return [w for w in self.workers.values()
                if not w.draining and self.needed <= w.services]

    def _send(self, w: WorkerState, *frames, copy: bool = True) -> None:
        try:
            self.sock.send_multipart([w.identity, P.PROTOCOL, *frames], copy=copy)
            w.last_sent = time.monotonic()
        except zmq.ZMQError as exc:  # the peer went away (router_mandatory)
            log.info("worker %s unreachable: %s", w.name, exc)
            self._declare_dead(w, "unreachable")

    def _declare_dead(self, w: WorkerState, why: str) -> None:
        if self.workers.pop(w.identity, None) is None:
            return
        log.warning("worker %s declared dead (%s); resending its %d segment part(s)", w.name,
                    why, len(w.in_flight))
        self.meter.dead_workers.append({"worker": w.name, "reason": why,
                                        "in_flight": len(w.in_flight)})
        for key in sorted(w.in_flight):
            task = self.pending.get(key)
            if task is not None:
                self._requeue(task, None, f"worker {w.name} {why}", count_attempt=False)
        w.in_flight.clear()
        for lane, owner in list(self.lane_owner.items()):
            if owner == w.identity:
                del self.lane_owner[lane]

    def _requeue(self, task: Task, worker: WorkerState | None, why: str,
                 count_attempt: bool = True) -> None:
        if count_attempt:
            task.failures.append(why)
            if worker is not None:
                task.avoid.add(worker.identity)
            if len(task.failures) >= self.max_attempts:
                raise DeliveryError(
                    f"segment {task.segment} (part {task.part + 1} of {task.parts}) failed "
                    f"{len(task.failures)} times; last: {why}")
        self.meter.retries += 1
        self.queue.appendleft(task)

    # -- main loop -----------------------------------------------------------------------------
    def run(self, segments: queue.Queue, emit, *, emitted_done=None) -> None:
        """Dispatch until the source is exhausted and every segment has been emitted."""
        source_done = False
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        while True:
            source_done = self._feed(segments) or source_done
            self._dispatch()
            self._emit_ready(emit)
            if source_done and self.next_emit == self.next_segment and not self.pending:
                return
            events = dict(poller.poll(int(self.hb * 1000)))
            if self._wake in events:
                while True:
                    try:
                        self._wake.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            if self.sock in events:
                for _ in range(256):  # drain what is there, then look at the rest
                    try:
                        self._receive(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            self._housekeeping()

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
        self.segments[sid] = _Segment(first, len(batch), len(parts))
        for k, (idx, lane_set) in enumerate(parts):
            sub = batch if idx is None else batch.take(idx)
            task = Task(sid, k, len(parts), sub, idx, lane_set)
            self.pending[task.key] = task
            self.queue.append(task)

    def _lanes_of(self, batch: PacketBatch) -> np.ndarray:
        from engine.flowhash import worker_of_packets

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

    def _pick(self, task: Task) -> WorkerState | None:
        free = [w for w in self._usable() if len(w.in_flight) < w.credit]
        if not free:
            return None
        if self.flow_affinity and task.lanes:
            owner = self.lane_owner.get(next(iter(sorted(task.lanes))))
            w = self.workers.get(owner) if owner else None
            if w is not None and not w.draining and w.identity not in task.avoid:
                return w if len(w.in_flight) < w.credit else None
            # The owner is gone (or failed this task): hand its lanes to a live worker.
            choices = [x for x in free if x.identity not in task.avoid] or free
            w = min(choices, key=lambda x: (len(x.in_flight), x.name))
            for lane in task.lanes:
                self.lane_owner[lane] = w.identity
            return w
        choices = [w for w in free if w.identity not in task.avoid] or free
        # Most spare credit first, round-robin among equals.
        self._rr += 1
        return max(choices, key=lambda w: (w.credit - len(w.in_flight),
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
                if not self.flow_affinity:
                    break
                continue
            header = P.TaskHeader(self.stream_id, task.segment, task.part, task.parts,
                                  task.attempt, len(task.batch))
            task.attempt += 1
            task.sent_at = time.monotonic()
            w.in_flight[task.key] = task
            self._send(w, P.TASK, header.pack(), self.chain_frame, *task.batch.to_frames(),
                       copy=False)
        self.queue.extendleft(reversed(held))

    # -- receiving -----------------------------------------------------------------------------
    def _receive(self, flags: int = 0) -> None:
        frames = self.sock.recv_multipart(flags, copy=False)
        identity = frames[0].bytes
        w = self.workers.get(identity)
        if len(frames) < 3 or frames[1].bytes != P.PROTOCOL:
            log.warning("ignored a message that is not %s from %r", P.PROTOCOL, identity)
            if w is not None:
                self._strike(w, "sent a message in another protocol")
            return
        cmd = frames[2].bytes
        now = time.monotonic()
        if w is not None:
            w.last_seen = now
        if cmd == P.READY:
            self._ready(identity, frames[3:])
        elif w is None:
            # A worker we declared dead (or never met): it must say READY again.
            if cmd == P.RESULT:
                self._result(None, frames[3:])
            with contextlib.suppress(zmq.ZMQError):  # it may have gone already
                self.sock.send_multipart([identity, P.PROTOCOL, P.DISCONNECT,
                                          P.dumps({"reason": "unknown worker: send READY"})])
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
            self._strike(w, f"sent unknown command {cmd!r}")

    def _ready(self, identity: bytes, body: list) -> None:
        try:
            hello = P.loads(body[0].bytes)
            credit = int(hello.get("credit", P.DEFAULT_CREDIT))
            services = set(hello.get("services", []))
            name = str(hello.get("name", identity.hex()))
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            log.warning("refused a READY that does not parse: %s", exc)
            return
        if credit < 1:
            log.warning("worker %s offered no credit; ignored", name)
            return
        old = self.workers.get(identity)
        if old is not None:
            self._declare_dead(old, "re-announced itself")
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
                                          "stream": self.stream_id}))

    def _strike(self, w: WorkerState, why: str) -> None:
        self.meter.garbage += 1
        w.strikes += 1
        log.warning("worker %s %s (strike %d)", w.name, why, w.strikes)
        if w.strikes >= self.max_attempts:
            self._send(w, P.DISCONNECT, P.dumps({"reason": f"misbehaving: {why}"}))
            self._declare_dead(w, f"misbehaving: {why}")

    def _result(self, w: WorkerState | None, body: list) -> None:
        try:
            header = P.TaskHeader.unpack(body[0].buffer)
        except (ValueError, IndexError) as exc:
            if w is not None:
                self._strike(w, f"sent a result with a bad header: {exc}")
            return
        key = (header.segment, header.part)
        task_here = w.in_flight.pop(key, None) if w is not None else None
        if w is not None and (task_here is None or header.stream != self.stream_id):
            self._strike(w, f"returned segment {header.segment} part {header.part} it was not "
                            "given")
            return
        task = self.pending.get(key)
        if task is None:
            self.meter.duplicates += 1
            return
        name = w.name if w is not None else "(a worker declared dead)"
        try:
            counters = P.loads(body[1].bytes)
            out = PacketBatch.from_frames([f.buffer for f in body[2:]])
            kept = out.seq if out.has_explicit_seq else None
            n_in = len(task.batch)
            if kept is None:
                if len(out) != n_in:
                    raise ValueError(f"{len(out)} packets back for {n_in} sent, with no "
                                     "positions")
            elif len(kept) and (kept[0] < 0 or kept[-1] >= n_in
                                or np.any(np.diff(kept) <= 0)):
                raise ValueError("kept positions out of range or out of order")
            if not isinstance(counters, dict):
                raise ValueError("counters are not a JSON object")
        except (ValueError, IndexError, TypeError) as exc:
            if w is not None:
                w.strikes += 1
            self.meter.garbage += 1
            log.warning("worker %s returned garbage for segment %d: %s", name, task.segment, exc)
            self._requeue(task, w, f"worker {name} returned garbage: {exc}")
            return
        del self.pending[key]
        positions = np.arange(n_in, dtype=np.int64) if kept is None else kept
        if task.positions is not None:
            positions = task.positions[positions]
        self.segments[task.segment].results[task.part] = (out, positions)
        self.meter.record_worker(name, 1, n_in)
        with contextlib.suppress(TypeError, ValueError):
            self.meter.record_services({k: v for k, v in counters.items() if isinstance(v, dict)})

    def _fail(self, w: WorkerState, body: list) -> None:
        try:
            header = P.TaskHeader.unpack(body[0].buffer)
            info = P.loads(body[1].bytes)
        except (ValueError, IndexError) as exc:
            self._strike(w, f"sent an unreadable FAIL: {exc}")
            return
        key = (header.segment, header.part)
        if w.in_flight.pop(key, None) is None:
            self._strike(w, f"failed segment {header.segment} it was not given")
            return
        task = self.pending.get(key)
        if task is None:
            return
        why = (f"service {info.get('service')!r} on worker {w.name}: {info.get('error')}"
               if isinstance(info, dict) else f"worker {w.name} failed")
        log.warning("segment %d failed: %s", task.segment, why)
        self._requeue(task, w, why)

    # -- time ----------------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if now - w.last_seen > self.hb * self.liveness:
                self._declare_dead(w, f"silent for {now - w.last_seen:.1f} s")
                continue
            stuck = [t for t in w.in_flight.values() if now - t.sent_at > self.task_timeout_s]
            if stuck:
                self._send(w, P.DISCONNECT, P.dumps({"reason": "task timeout"}))
                self._declare_dead(w, f"held segment {stuck[0].segment} for over "
                                      f"{self.task_timeout_s:.0f} s")
                continue
            if w.draining and not w.in_flight:
                self._send(w, P.DISCONNECT, P.dumps({"reason": "drained"}))
                self.workers.pop(w.identity, None)
                continue
            if now - w.last_sent >= self.hb:
                self._send(w, P.HEARTBEAT)

    # -- output --------------------------------------------------------------------------------
    def _emit_ready(self, emit) -> None:
        while self.next_emit in self.segments:
            seg = self.segments[self.next_emit]
            if len(seg.results) < seg.parts:
                return
            del self.segments[self.next_emit]
            self.next_emit += 1
            emit(self._reassemble(seg))

    @staticmethod
    def _reassemble(seg: _Segment) -> PacketBatch:
        if seg.parts == 1:
            out, positions = seg.results[0]
            if len(out) == seg.count:
                return PacketBatch(out.data, out.offsets, out.caplen, out.origlen, out.ts_ns,
                                   out.iface, out.interfaces, seg.first_seq)
            return out.with_seq(positions + seg.first_seq)
        outs = [seg.results[k][0] for k in range(seg.parts)]
        positions = np.concatenate([seg.results[k][1] for k in range(seg.parts)])
        merged = PacketBatch.concat([o.with_seq(None) for o in outs])
        order = np.argsort(positions, kind="stable")
        return merged.take(order).with_seq(positions[order] + seg.first_seq)

    def broadcast_disconnect(self, reason: str) -> None:
        for w in list(self.workers.values()):
            self._send(w, P.DISCONNECT, P.dumps({"reason": reason}))

    def close(self) -> None:
        self.sock.close(0)
        self._wake.close(0)
        if self._auth is not None:
            self._auth.stop()


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
