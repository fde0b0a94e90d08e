"""The dispatcher: a ROUTER that sends segments to workers against credit and takes results back.

One thread owns the socket. Segments come from the source thread through a queue (a wake-up
message on an inproc socket says one is there); complete segments go, in order, to the sink
thread's queue. Memory is bounded by the window: segments dispatched but not yet written.

Its parts, by role: :mod:`engine.delivery.tasks` (the records), :mod:`~engine.delivery.roster`
(workers joining, liveness, strikes), :mod:`~engine.delivery.scheduling` (segments to tasks to
workers, retries, poison) and :mod:`~engine.delivery.results` (what peers send, checked).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque

import zmq

from engine.delivery import protocol as P
from engine.delivery.meter import Meter
from engine.delivery.ratelog import RateLimitedLog
from engine.delivery.reassembler import Reassembler
from engine.delivery.results import Results
from engine.delivery.roster import Roster
from engine.delivery.scheduling import Scheduling
from engine.delivery.tasks import (
    END,
    MAX_WORKERS,
    POISON_ACTIONS,
    Assignment,
    DeliveryError,
    Task,
    WorkerState,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_WORKERS",
    "POISON_ACTIONS",
    "Assignment",
    "DeliveryError",
    "Dispatcher",
    "Task",
    "WorkerState",
    "start_thread",
    "wake",
]


class Dispatcher(Roster, Scheduling, Results):
    """Serve one stream: ``run(segments, emit)``.

    ``segments`` is a ``queue.Queue`` of PacketBatches ending with ``Dispatcher.END`` (or an
    exception to re-raise); ``emit`` receives the reassembled segments in order.

    Nothing a peer sends can block the dispatcher or reach the output unless it answers a task
    sent to that very peer: sends never block (a worker whose queue is full is dropped), frames
    are size-limited, and anything else is counted in the usage record and dropped.
    """

    END = END

    def __init__(
        self,
        bind: str,
        chain: list[dict],
        *,
        stream_id: int | None = None,
        meter: Meter | None = None,
        window: int | None = None,
        heartbeat_ms: int = P.HEARTBEAT_MS,
        liveness: int = P.LIVENESS,
        max_attempts: int = P.MAX_ATTEMPTS,
        on_poison: str = "fail",
        task_timeout_s: float = P.TASK_TIMEOUT_S,
        no_worker_timeout_s: float = 60.0,
        flow_affinity: bool = False,
        lanes: int = 64,
        curve_dir: str | None = None,
        max_frame_bytes: int = P.MAX_FRAME_BYTES,
        context: zmq.Context | None = None,
    ) -> None:
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
                raise DeliveryError(
                    f"cannot bind {bind}: {exc} (an endpoint is "
                    "tcp://HOST:PORT, ipc://PATH or inproc://NAME)"
                ) from None
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

    def run(self, segments: queue.Queue, emit, *, workers_gone=None) -> None:
        """Dispatch until the source is exhausted and every segment has been emitted.

        ``workers_gone()`` returns why no worker can ever come back (say, every local worker
        process has exited), or None; with no worker left the stream then fails at once
        instead of waiting ``no_worker_timeout_s``.
        """
        source_done = False
        wake = self._wake
        assert wake is not None  # bound in __init__; only close() lets it go
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        while True:
            source_done = self._feed(segments) or source_done
            self._dispatch()
            for batch in self.reorder.ready():
                emit(batch)
            if source_done and self.reorder.next_emit == self.next_segment and not self.pending:
                return
            self._check_workers(workers_gone)
            events = dict(poller.poll(int(self.hb * 1000)))
            if wake in events:
                while True:
                    try:
                        wake.recv(zmq.NOBLOCK)
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
