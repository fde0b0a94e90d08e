"""The dispatcher's scheduling: segments taken from the source within the window, split by
flow lane when asked, handed to the worker with most spare credit; failed tasks requeued, and a
segment that failed on too many workers declared poison."""

from __future__ import annotations

import logging
import queue
import time

import numpy as np

from engine.capture.batch import PacketBatch
from engine.delivery import protocol as P
from engine.delivery.dispatcher_base import DispatcherBase
from engine.delivery.tasks import END, Assignment, DeliveryError, Task, WorkerState

# The dispatcher's modules log as one: what an operator filters on is the dispatcher.
log = logging.getLogger("engine.delivery.dispatcher")


class Scheduling(DispatcherBase):
    """Task flow of the :class:`~engine.delivery.dispatcher.Dispatcher`."""

    def _feed(self, segments: queue.Queue) -> bool:
        """Take segments from the source while the window has room; True at the end."""
        while self.next_segment - self.written < self._window() and len(self.queue) < max(
            4, self.total_credit()
        ):
            try:
                item = segments.get_nowait()
            except queue.Empty:
                return False
            if item is END:
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
            parts: list[tuple[np.ndarray | None, frozenset[int]]] = []
            for owner in np.unique(owners):
                rows = np.flatnonzero(owners == owner)
                parts.append((rows, frozenset(np.unique(lanes[rows]).tolist())))
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
        return max(
            free, key=lambda w: (w.credit - len(w.in_flight), (hash(w.identity) + self._rr) % 997)
        )

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
            header = P.TaskHeader(
                self.stream_id, task.segment, task.part, task.parts, task.attempt, len(task.batch)
            )
            task.attempt += 1
            if self._send(
                w, P.TASK, header.pack(), self.chain_frame, *task.batch.to_frames(), copy=False
            ):
                w.in_flight[task.key] = Assignment(task, header, time.monotonic())
            else:
                held.append(task)  # never delivered: not an attempt, nothing to blame
        self.queue.extendleft(reversed(held))

    def _requeue(
        self, task: Task, worker: WorkerState | None, why: str, count_attempt: bool = True
    ) -> None:
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
        what = (
            f"{task.describe()} failed {len(task.failures)} times "
            f"({'; '.join(task.failures[:-1]) or 'no earlier failure'}); "
            f"last: {task.failures[-1]}"
        )
        if self.on_poison == "fail":
            raise DeliveryError(what)
        log.error("%s: skipped (--on-poison skip), %d packets dropped", what, len(task.batch))
        del self.pending[task.key]
        self.meter.poison_segments.append(
            {
                "segment": task.segment,
                "part": task.part,
                "packets": len(task.batch),
                "reasons": list(task.failures),
            }
        )
        self.meter.packets_skipped += len(task.batch)
        nothing = np.empty(0, np.int64)
        self.reorder.put(task.segment, task.part, task.batch.take(nothing), nothing)

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
        history = (
            f"; it failed {len(waiting.failures)} time(s): {'; '.join(waiting.failures)}"
            if waiting.failures
            else ""
        )
        gone = workers_gone() if workers_gone is not None else None
        if gone:
            raise DeliveryError(f"{waiting.describe()} cannot be delivered: {gone}{history}")
        if now - self._workerless_since > self.no_worker_timeout_s:
            raise DeliveryError(
                f"{waiting.describe()} cannot be delivered: no worker able to "
                f"take it for {self.no_worker_timeout_s:.0f} s{history}"
            )

    def _window(self) -> int:
        return self.window or max(8, 2 * self.total_credit())
