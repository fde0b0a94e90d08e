"""The dispatcher's inbox: every message a peer sends, and the answers to tasks. A result is
taken only from the worker the task was sent to, with the exact header it was sent with, the
packet count and positions the contract allows and counters that pass validation; anything
else is counted, logged at a limited rate, and dropped."""

from __future__ import annotations

import logging
import time

import numpy as np

from engine.capture.batch import FRAME_COUNT as BATCH_FRAMES
from engine.capture.batch import PacketBatch
from engine.delivery import protocol as P
from engine.delivery.dispatcher_base import DispatcherBase
from engine.delivery.meter import checked_counters
from engine.delivery.tasks import Assignment, WorkerState

# The dispatcher's modules log as one: what an operator filters on is the dispatcher.
log = logging.getLogger("engine.delivery.dispatcher")


class Results(DispatcherBase):
    """Receiving for the :class:`~engine.delivery.dispatcher.Dispatcher`."""

    def _receive(self, flags: int = 0) -> None:
        frames = self.sock.recv_multipart(flags, copy=False)
        identity = frames[0].bytes
        w = self.workers.get(identity)
        if len(frames) < 3 or frames[1].bytes != P.PROTOCOL:
            self.meter.reject("not a PKTX/1 message")
            if w is not None:
                self._strike(w, "sent a message in another protocol")
            else:
                self.rlog.warning(
                    "stranger-protocol",
                    "ignored a message that is not %s from a peer that is not a worker",
                    P.PROTOCOL.decode(),
                )
            return
        cmd = frames[2].bytes
        now = time.monotonic()
        if w is not None:
            w.last_seen = now
        if cmd == P.READY:
            self._ready(identity, frames[3:])
        elif w is None:
            # A peer we declared dead or never met: nothing it says is taken; it must say READY.
            reason = (
                f"{P.COMMAND_NAMES.get(cmd, 'unknown command')} from a peer that is not a "
                "worker of this stream"
            )
            self.meter.reject(reason)
            if cmd != P.HEARTBEAT:
                self.rlog.warning("stranger", "dropped a %s", reason)
            if cmd != P.DISCONNECT:
                self._reply(
                    identity, P.DISCONNECT, P.dumps({"reason": "unknown worker: send READY"})
                )
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
            wrong = (
                "of another stream"
                if header.stream != self.stream_id
                else "it was not given"
                if sent is None
                else "with a changed header"
            )
            self._strike(
                w, f"sent a {what} for segment {header.segment} part {header.part} {wrong}"
            )
            return None
        return sent

    def _result(self, w: WorkerState, body: list) -> None:
        if len(body) != 2 + BATCH_FRAMES:
            self._strike(
                w, f"sent a RESULT of {len(body)} body frames, expected {2 + BATCH_FRAMES}"
            )
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
                    raise ValueError(f"{len(out)} packets back for {n_in} sent, with no positions")
            elif len(kept) > n_in:
                raise ValueError(f"{len(kept)} packets back for {n_in} sent")
            elif len(kept) and (kept[0] < 0 or kept[-1] >= n_in or np.any(np.diff(kept) <= 0)):
                raise ValueError("kept positions out of range or out of order")
            if out.interfaces != task.batch.interfaces:
                raise ValueError("the interface table was changed")
        except (ValueError, IndexError, TypeError) as exc:
            self.rlog.warning(
                "garbage", "worker %s returned garbage for %s: %s", w.name, task.describe(), exc
            )
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
        spent = self._service_time(w, counters, time.monotonic() - sent.sent_at)
        self.meter.record_services(
            self._valid_counters(w, counters, n_in, task.batch.nbytes, out.nbytes)
        )
        if spent:
            self.meter.record_service_time(spent)

    def _service_time(self, w: WorkerState, counters: dict, out_s: float) -> dict[str, int]:
        """Take each service's time on the task out of ``counters``: kept when it is an int of
        ns and the chain's together are no longer than the task was out (``out_s``)."""
        spent: dict[str, int] = {}
        for service, values in counters.items():
            if isinstance(values, dict) and P.SERVICE_TIME_COUNTER in values:
                spent[str(service)] = values.pop(P.SERVICE_TIME_COUNTER)
        if not spent:
            return spent
        bound = int(out_s * 1e9) + 1_000_000  # the clocks' granularity
        if (
            any(
                type(ns) is not int or ns < 0 or service not in self.needed
                for service, ns in spent.items()
            )
            or sum(spent.values()) > bound
        ):
            self.meter.counters_dropped += len(spent)
            self.meter.reject("service time that fails validation", len(spent))
            self.rlog.warning(
                "service-time",
                "dropped the service times from worker %s (%s; the task was out %.3f s)",
                w.name,
                str(spent)[:200],  # a peer's values: bounded in the log
                out_s,
            )
            return {}
        return spent

    def _valid_counters(
        self, w: WorkerState, counters: dict, packets: int, bytes_in: int, bytes_out: int
    ) -> dict[str, dict[str, int]]:
        good, dropped, why = checked_counters(
            counters, self.needed, packets, max(bytes_in, bytes_out)
        )
        if dropped:
            self.meter.counters_dropped += dropped
            self.meter.reject("service counter that fails validation", dropped)
            self.rlog.warning(
                "counters", "dropped %d counter(s) from worker %s (%s)", dropped, w.name, why
            )
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
        why = (
            f"service {str(info.get('service'))[:64]!r} on worker {w.name}: "
            f"{str(info.get('error'))[:400]}"
            if isinstance(info, dict)
            else f"worker {w.name} failed"
        )
        self.rlog.warning("fail", "%s failed: %s", task.describe(), why)
        self._requeue(task, w, why)
