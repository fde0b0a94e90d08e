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

A savepoint is two statements a call (SAVEPOINT, RELEASE) and, on SQLite, a good part of a small
write's cost. A caller whose function does every check and read before its first write can say
so (``checks_first=True``): such a call runs without a savepoint of its own, since a
`BrokerError` it raises means it wrote nothing. Anything else it raises (a unique index that a
concurrent process won, a defect) may have come after a write: then the whole transaction is
rolled back and the batch run again, every call in a savepoint as above, so what each caller
sees is the same either way. Such calls may also leave their inserts to the end of the batch
(`deferred`): one multi-row statement for the whole batch instead of one per call, written
before the commit and before any call that is not ``checks_first``; a failure there is a redo
too. A call that reads what an earlier call of the batch deferred flushes the batch's deferred
writes first (`Deferred.flush`). And they may name what they will read (`Prefetch`): the
batch reads it for all of them at once before they run (`Deferred.found`), so that a batch of
small writes costs a few statements, not a few per call; a failure there is a redo as well.
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

from broker.errors import BrokerError
from broker.store import Store

log = logging.getLogger(__name__)

_STOP = object()


_DEFERRED = "pktx.group_commit.deferred"


# What a call wants read before its batch runs, with every other call's of the same kind in
# one go: (kind, the function reading them all (session, keys) -> what the calls look up in
# `Deferred.found`, this call's key).
Prefetch = tuple[str, Callable[[Session, list], Any], Any]


class Deferred:
    """The writes a batch's ``checks_first`` calls left for its end, by kind: for each, the
    function that writes them all (given the session and the items) and the items so far; and
    what was read for the batch's calls before they ran (`found`, by kind)."""

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[Callable[[Session, list], None], list]] = {}
        self.found: dict[str, Any] = {}

    def add(self, kind: str, write: Callable[[Session, list], None], item: Any) -> None:
        self._kinds.setdefault(kind, (write, []))[1].append(item)

    def pending(self, kind: str) -> list:
        """The items of ``kind`` not written yet (to read, not to change)."""
        entry = self._kinds.get(kind)
        return entry[1] if entry else []

    def flush(self, session: Session) -> None:
        """Write everything deferred so far (in the order of kinds first deferred)."""
        for write, items in self._kinds.values():
            if items:
                batch = items[:]
                items.clear()
                write(session, batch)


def deferred(session: Session) -> Deferred | None:
    """The batch's `Deferred` when ``session`` is a group commit's running a ``checks_first``
    call without a savepoint (else None: write at once)."""
    return session.info.get(_DEFERRED)


class _Redo(Exception):
    """A call run without its savepoint failed in a way that may have left half a write."""


class _Call:
    __slots__ = ("checks_first", "error", "fn", "future", "loop", "prefetch", "result")

    def __init__(
        self,
        fn: Callable[[Session], Any],
        loop,
        future,
        *,
        checks_first: bool = False,
        prefetch: Prefetch | None = None,
    ) -> None:
        self.fn = fn
        self.checks_first = checks_first
        self.prefetch = prefetch if checks_first else None
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

    def __init__(
        self, store: Store, *, max_batch: int = 256, name: str = "pktx-group-commit"
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopped = False
        self.batches = 0
        self.calls = 0
        self.redone = 0  # batches rolled back and run again with a savepoint per call

    # -- callers ---------------------------------------------------------------------------
    async def run(
        self,
        fn: Callable[[Session], Any],
        *,
        checks_first: bool = False,
        prefetch: Prefetch | None = None,
    ) -> Any:
        """``fn(session)`` in the next batch; its result once the batch is committed.

        ``checks_first``: ``fn`` raises a `BrokerError` only before its first write (it then
        runs without a savepoint of its own; see the module's docstring). ``prefetch``: what
        to read for it before the batch runs, with the other calls' of its kind, when it runs
        without a savepoint (`Prefetch`; it finds the result in `deferred(session).found`)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(_Call(fn, loop, future, checks_first=checks_first, prefetch=prefetch))
        return await future

    def call(
        self,
        fn: Callable[[Session], Any],
        *,
        checks_first: bool = False,
        prefetch: Prefetch | None = None,
    ) -> Any:
        """`run` for a caller on a thread: blocks until the batch is committed."""
        future: Future = Future()
        self._put(_Call(fn, None, future, checks_first=checks_first, prefetch=prefetch))
        return future.result()

    def _put(self, call: _Call) -> None:
        if self._stopped:
            raise RuntimeError(f"{self.name} is stopped")
        if self._thread is not None and not self._thread.is_alive():
            raise RuntimeError(f"{self.name}: the writer thread has ended")
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
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
            try:
                self._transaction(batch, savepoints=False)
            except _Redo:  # rolled back: every call again, each in its savepoint
                self.redone += 1
                for c in batch:
                    c.result, c.error = None, None
                self._transaction(batch, savepoints=True)
        except Exception as exc:  # the commit failed: nobody's change is kept
            log.warning("a group commit of %d call(s) failed: %s", len(batch), exc)
            for c in batch:
                if c.error is None:
                    c.result, c.error = None, exc
        self.batches += 1
        self.calls += len(batch)
        self._answer(batch)

    def _transaction(self, batch: list[_Call], *, savepoints: bool) -> None:
        with self.store.write() as session:
            later = None if savepoints else Deferred()
            if later is not None:
                self._prefetch(later, batch, session)
            for c in batch:
                if c.checks_first and later is not None:
                    session.info[_DEFERRED] = later
                    try:
                        c.result = c.fn(session)
                    except BrokerError as exc:  # refused before writing anything
                        c.error = exc
                    except Exception as exc:
                        raise _Redo from exc
                    finally:
                        session.info.pop(_DEFERRED, None)
                    continue
                if later is not None:
                    self._flush(later, session)
                try:
                    with session.begin_nested():
                        c.result = c.fn(session)
                except Exception as exc:  # this call's own failure, for it to see
                    c.error = exc
            if later is not None:
                self._flush(later, session)

    @staticmethod
    def _prefetch(later: Deferred, batch: list[_Call], session: Session) -> None:
        wanted: dict[str, tuple[Callable[[Session, list], Any], list]] = {}
        for c in batch:
            if c.prefetch is not None:
                kind, read, key = c.prefetch
                wanted.setdefault(kind, (read, []))[1].append(key)
        try:
            for kind, (read, keys) in wanted.items():
                later.found[kind] = read(session, keys)
        except Exception as exc:
            raise _Redo from exc

    @staticmethod
    def _flush(later: Deferred, session: Session) -> None:
        try:
            later.flush(session)
        except Exception as exc:
            raise _Redo from exc

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
