"""What the dispatcher's parts share: the attributes :class:`~engine.delivery.dispatcher.Dispatcher`
sets and the methods one part calls on another, declared once so each part type-checks alone."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import zmq

from engine.delivery.meter import Meter
from engine.delivery.ratelog import RateLimitedLog
from engine.delivery.reassembler import Reassembler
from engine.delivery.tasks import Task, WorkerState

if TYPE_CHECKING:  # loaded only where CURVE is used (engine.delivery.curve)
    from zmq.auth.thread import ThreadAuthenticator


class DispatcherBase:
    """Declarations only: the state lives in ``Dispatcher.__init__``, the methods in the parts
    (:mod:`~engine.delivery.roster`, :mod:`~engine.delivery.scheduling`,
    :mod:`~engine.delivery.results`)."""

    ctx: zmq.Context
    chain: list[dict]
    chain_frame: bytes
    needed: set[str]
    stream_id: int
    meter: Meter
    window: int | None
    hb: float
    heartbeat_ms: int
    liveness: int
    max_attempts: int
    on_poison: str
    task_timeout_s: float
    no_worker_timeout_s: float
    flow_affinity: bool
    lanes: int
    rlog: RateLimitedLog
    sock: zmq.Socket
    endpoint: str
    wake_addr: str
    _wake: zmq.Socket | None
    _auth: ThreadAuthenticator | None
    workers: dict[bytes, WorkerState]
    lane_owner: dict[int, bytes]
    pending: dict[tuple[int, int], Task]
    queue: deque[Task]
    reorder: Reassembler
    next_segment: int
    written: int
    _rr: int
    _workerless_since: float | None

    if TYPE_CHECKING:  # defined by the parts; declared for the others that call them

        def total_credit(self) -> int: ...
        def _usable(self) -> list[WorkerState]: ...
        def _send(self, w: WorkerState, *frames, copy: bool = True) -> bool: ...
        def _reply(self, identity: bytes, *frames) -> None: ...
        def _ready(self, identity: bytes, body: list) -> None: ...
        def _strike(self, w: WorkerState, why: str) -> None: ...
        def _requeue(
            self, task: Task, worker: WorkerState | None, why: str, count_attempt: bool = True
        ) -> None: ...
        def _drain_socket(self) -> None: ...
