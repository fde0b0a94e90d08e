"""The dispatcher's records: a task (a segment or part of one), what was sent to whom, and what
the dispatcher knows of each worker."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.capture.batch import PacketBatch
from engine.delivery import protocol as P
from engine.errors import EngineError

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


END = object()  # the source's last item in the segment queue
