"""Group commit: many small writes from concurrent callers, one transaction per batch.

The busiest write of the market is a bid: a few indexed reads and two inserts, under a
millisecond of work, yet each in a transaction of its own costs a session, a BEGIN and a COMMIT,
a hop to a pool thread and, on SQLite, a queue of threads taking turns at the one write lock,
each woken in turn. `GroupCommit` keeps one writer thread instead. Callers hand it a function of
a session; the thread takes every call waiting (up to ``max_batch``), runs each in a savepoint
of one transaction, commits once, and only then answers them all.

What a caller sees does not change:
- an answer means the change is committed (the commit comes before any answer);
- a call that raises is rolled back to its savepoint and gets its own exception, the others in
  the batch are not touched;
- if the commit itself fails, every call of that batch gets the failure and none of their
  changes is kept, so a client retries them (with its idempotency key) as it would any failed
  request.

The functions run one after another on the writer thread, in the order they arrived, so they
must not wait on anything but the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.orm import Session

from broker.store import Store

log = logging.getLogger(__name__)

_STOP = object()


class _Call:
    __slots__ = ("error", "fn", "future", "loop", "result")

    def __init__(self, fn: Callable[[Session], Any], loop, future) -> None:
        self.fn = fn
        self.loop = loop  # an asyncio loop, or None for a concurrent.futures.Future
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


def _settle(calls: list[_Call]) -> None:
    for c in calls:
        if c.future.done():  # an asyncio caller that went away (cancelled)
            continue
        if c.error is not None:
            c.future.set_exception(c.error)
        else:
            c.future.set_result(c.result)


class GroupCommit:
    """One writer thread over ``store``: `run` (from a coroutine) or `call` (from a thread)."""

    def __init__(self, store: Store, *, max_batch: int = 256,
                 name: str = "pktx-group-commit") -> None:
        self.store = store
        self.max_batch = max_batch
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self.batches = 0
        self.calls = 0

    # -- callers ---------------------------------------------------------------------------
    async def run(self, fn: Callable[[Session], Any]) -> Any:
        """``fn(session)`` in the next batch; its result once the batch is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(_Call(fn, loop, future))
        return await future

    def call(self, fn: Callable[[Session], Any]) -> Any:
        """`run` for a caller on a thread: blocks until the batch is committed."""
        future: Future = Future()
        self._put(_Call(fn, None, future))
        return future.result()

    def _put(self, call: _Call) -> None:
        if self._stopped:
            raise RuntimeError(f"{self.name} is stopped")
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError(f"{self.name}: the writer thread has ended")
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name=self.name,
                                                    daemon=True)
                    self._thread.start()
        self._queue.put(call)

    def stop(self, timeout: float | None = 30) -> None:
        """Answer every call already queued, then end the writer thread."""
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # -- the writer thread -----------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[_Call] = []
            stop = first is _STOP
            if not stop:
                batch.append(first)
            while not stop and len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                else:
                    batch.append(more)
            if batch:
                try:
                    self._commit(batch)
                except BaseException as exc:  # a defect here must not leave callers waiting
                    log.exception("group commit: a batch of %d call(s) failed", len(batch))
                    for c in batch:
                        c.result, c.error = None, RuntimeError(f"group commit failed: {exc!r}")
                    self._answer(batch)
            if stop:
                return

    def _commit(self, batch: list[_Call]) -> None:
        try:
            with self.store.write() as session:
                for c in batch:
                    try:
                        with session.begin_nested():
                            c.result = c.fn(session)
                    except Exception as exc:  # this call's own failure, for it to see
                        c.error = exc
        except Exception as exc:  # the commit failed: nobody's change is kept
            log.warning("a group commit of %d call(s) failed: %s", len(batch), exc)
            for c in batch:
                if c.error is None:
                    c.result, c.error = None, exc
        self.batches += 1
        self.calls += len(batch)
        self._answer(batch)

    @staticmethod
    def _answer(batch: list[_Call]) -> None:
        by_loop: dict[Any, list[_Call]] = {}
        for c in batch:
            by_loop.setdefault(c.loop, []).append(c)
        for loop, calls in by_loop.items():
            if loop is None:
                _settle(calls)
            else:
                # One wake-up of the event loop per batch, not one per call.
                with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                    loop.call_soon_threadsafe(_settle, calls)
