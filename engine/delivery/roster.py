"""The dispatcher's workers: who joined (READY, WELCOME), who is alive (heartbeats, task
timeouts), who misbehaves (strikes), and what happens to the tasks of a worker declared dead.
Never a blocking send: a worker that cannot take a message is dropped."""

from __future__ import annotations

import logging
import time

import zmq

from engine.delivery import protocol as P
from engine.delivery.dispatcher_base import DispatcherBase
from engine.delivery.tasks import MAX_WORKERS, DeliveryError, WorkerState

# The dispatcher's modules log as one: what an operator filters on is the dispatcher.
log = logging.getLogger("engine.delivery.dispatcher")


class Roster(DispatcherBase):
    """Worker bookkeeping of the :class:`~engine.delivery.dispatcher.Dispatcher`."""

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
                raise DeliveryError(
                    f"only {len(self._usable())} of {n} workers joined "
                    f"{self.endpoint} within {timeout_s:.0f} s"
                )
            if self.sock.poll(int(min(left, 0.1) * 1000)):
                self._drain_socket()
            self._housekeeping()

    def _usable(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if not w.draining and self.needed <= w.services]

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
            self.rlog.warning(
                "full", "refused worker %s: %d workers already joined", name, MAX_WORKERS
            )
            self._reply(identity, P.DISCONNECT, P.dumps({"reason": "too many workers"}))
            return
        now = time.monotonic()
        w = WorkerState(identity, name, services, min(credit, 64), now, now)
        self.workers[identity] = w
        missing = self.needed - services
        if missing:
            log.warning(
                "worker %s lacks service(s) %s; it will get no work",
                name,
                ", ".join(sorted(missing)),
            )
        else:
            log.info("worker %s joined with credit %d", name, w.credit)
        self._send(
            w,
            P.WELCOME,
            P.dumps(
                {
                    "heartbeat_ms": self.heartbeat_ms,
                    "liveness": self.liveness,
                    "stream": f"{self.stream_id:032x}",
                }
            ),
        )

    def _strike(self, w: WorkerState, why: str) -> None:
        self.meter.garbage += 1
        self.meter.reject("garbage from a worker")
        w.strikes += 1
        self.rlog.warning(
            "strike", "worker %s %s (strike %d of %d)", w.name, why, w.strikes, P.STRIKES
        )
        if w.strikes >= P.STRIKES and w.identity in self.workers:
            self._send(w, P.DISCONNECT, P.dumps({"reason": f"misbehaving: {why}"}))
            self._declare_dead(w, f"misbehaving: {why}", blame_tasks=False)

    def _declare_dead(
        self, w: WorkerState, why: str, *, blame_tasks: bool = True, kind: str | None = None
    ) -> None:
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
        log.warning(
            "worker %s declared dead (%s); resending its %d task(s)", w.name, why, len(held)
        )
        self.meter.dead_workers.append({"worker": w.name, "reason": why, "in_flight": len(held)})
        for task in sorted(held, key=lambda t: t.key):
            if task.key in self.pending:
                blame = blame_tasks and task is culprit
                self._requeue(
                    task,
                    w if blame else None,
                    f"worker {w.name} {why} while working on it",
                    count_attempt=blame,
                )

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
                self._declare_dead(
                    w,
                    f"task timeout: held {stuck[0].task.describe()} for "
                    f"over {self.task_timeout_s:g} s",
                )
                continue
            if w.draining and not w.in_flight:
                self._send(w, P.DISCONNECT, P.dumps({"reason": "drained"}))
                self.workers.pop(w.identity, None)
                continue
            if now - w.last_sent >= self.hb:
                self._send(w, P.HEARTBEAT)

    def broadcast_disconnect(self, reason: str) -> None:
        for w in list(self.workers.values()):
            self._send(w, P.DISCONNECT, P.dumps({"reason": reason}))
