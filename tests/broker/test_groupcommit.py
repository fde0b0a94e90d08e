"""Group commit on a real store: a batch is one transaction, each call its own savepoint."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from broker.errors import InvalidInput
from broker.groupcommit import GroupCommit
from broker.models import Network, Provider


def _names(store) -> list[str]:
    with store.read() as s:
        return sorted(s.scalars(select(Network.name)))


def _add_network(name: str):
    def fn(s):
        n = Network(name=name)
        s.add(n)
        s.flush()
        return n.id

    return fn


def _hold_writer(gc: GroupCommit) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Occupy the writer thread until released, so that what is queued meanwhile goes in one
    batch."""
    entered, release = threading.Event(), threading.Event()

    def wait(_s):
        entered.set()
        release.wait(30)

    t = threading.Thread(target=gc.call, args=(wait,))
    t.start()
    assert entered.wait(30)
    return entered, release, t


def _queue_calls(
    gc: GroupCommit, fns, *, checks_first: bool = False
) -> tuple[list, list[threading.Thread]]:
    results: list = [None] * len(fns)

    def one(i, fn):
        try:
            results[i] = ("ok", gc.call(fn, checks_first=checks_first))
        except Exception as exc:
            results[i] = ("error", exc)

    threads = [threading.Thread(target=one, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    return results, threads


def _wait_queued(gc: GroupCommit, n: int) -> None:
    deadline = threading.Event()
    for _ in range(3000):
        if gc._queue.qsize() >= n:
            return
        deadline.wait(0.01)
    raise AssertionError(f"{n} calls were not queued")


def test_a_failing_call_is_rolled_back_alone(store):
    gc = GroupCommit(store)
    try:
        _, release, holder = _hold_writer(gc)

        def bad(s):
            s.add(Network(name="half-done"))
            s.flush()
            raise InvalidInput("no", field="name")

        fns = [_add_network("a"), bad, _add_network("b"), _add_network("a"), _add_network("c")]
        results, threads = _queue_calls(gc, fns)
        _wait_queued(gc, len(fns))
        batches = gc.batches
        release.set()
        holder.join(30)
        for t in threads:
            t.join(30)
        # All five went in one batch after the holder's.
        assert gc.batches == batches + 2
        kinds = [r[0] for r in results]
        assert kinds == ["ok", "error", "ok", "error", "ok"]
        assert isinstance(results[1][1], InvalidInput)
        assert isinstance(results[3][1], IntegrityError)  # "a" again: a unique clash
        assert _names(store) == ["a", "b", "c"]
    finally:
        gc.stop()


def test_calls_that_check_first_skip_their_savepoint_and_a_late_failure_redoes_the_batch(store):
    """``checks_first``: a refusal (a BrokerError) wrote nothing, so no savepoint is needed;
    anything else (here a unique clash at the insert) rolls the batch back and runs it again,
    each call in its savepoint: every caller sees what it would have seen with savepoints."""
    gc = GroupCommit(store)
    try:

        def refused(_s):
            raise InvalidInput("no", field="name")

        for fns, redone in (
            ([_add_network("a"), refused, _add_network("b")], 0),
            ([_add_network("c"), refused, _add_network("a"), _add_network("d")], 1),
        ):
            _, release, holder = _hold_writer(gc)
            results, threads = _queue_calls(gc, fns, checks_first=True)
            _wait_queued(gc, len(fns))
            before = gc.redone
            release.set()
            holder.join(30)
            for t in threads:
                t.join(30)
            assert gc.redone == before + redone
            assert isinstance(results[1][1], InvalidInput)
            assert [r[0] for r in results] == (
                ["ok", "error", "ok"] if not redone else ["ok", "error", "error", "ok"]
            )
        assert isinstance(results[2][1], IntegrityError)  # "a" again, after its insert
        assert _names(store) == ["a", "b", "c", "d"]
    finally:
        gc.stop()


def test_a_deferred_write_failing_at_the_batchs_end_redoes_the_batch(store):
    """Checks-first calls may leave their inserts to the batch's end (`deferred`); if that
    write fails, the batch is rolled back and run again, each call in its savepoint writing at
    once, and only the clashing call gets the error."""
    from sqlalchemy import insert

    from broker.groupcommit import deferred

    def insert_networks(s, names):
        s.execute(insert(Network), [{"name": n} for n in names])

    def add_later(name):
        def fn(s):
            later = deferred(s)
            if later is None:
                return _add_network(name)(s)
            later.add("networks", insert_networks, name)
            return name

        return fn

    gc = GroupCommit(store)
    try:
        _, release, holder = _hold_writer(gc)
        results, threads = _queue_calls(
            gc, [add_later("a"), add_later("b"), add_later("a")], checks_first=True
        )
        _wait_queued(gc, 3)
        release.set()
        holder.join(30)
        for t in threads:
            t.join(30)
        assert gc.redone == 1
        assert [r[0] for r in results] == ["ok", "ok", "error"]
        assert isinstance(results[2][1], IntegrityError)
        assert _names(store) == ["a", "b"]
    finally:
        gc.stop()


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_failed_commit_fails_every_call_of_the_batch_and_keeps_nothing(store):
    """SQLite checks deferred foreign keys at COMMIT: one call's dangling reference makes the
    commit itself fail, after every call of the batch ran."""
    gc = GroupCommit(store)
    try:
        _, release, holder = _hold_writer(gc)

        def dangling(s):
            s.execute(text("PRAGMA defer_foreign_keys = ON"))
            s.add(Provider(network_id=999_999, name="orphan", capacity_bps=1))
            s.flush()
            return "ran"

        fns = [_add_network("x"), dangling, _add_network("y")]
        results, threads = _queue_calls(gc, fns)
        _wait_queued(gc, len(fns))
        release.set()
        holder.join(30)
        for t in threads:
            t.join(30)
        assert [r[0] for r in results] == ["error"] * 3, results
        assert all(isinstance(r[1], IntegrityError) for r in results)
        assert _names(store) == []
        # The writer goes on: the next batch commits.
        assert isinstance(gc.call(_add_network("z")), int)
        assert _names(store) == ["z"]
    finally:
        gc.stop()


def test_coroutines_get_their_own_results_once_committed(store):
    gc = GroupCommit(store)

    async def many():
        return await asyncio.gather(
            *(gc.run(_add_network(f"n{i:03d}")) for i in range(200)), return_exceptions=True
        )

    try:
        ids = asyncio.run(many())
    finally:
        gc.stop()
    assert all(isinstance(i, int) for i in ids), ids
    assert len(set(ids)) == 200
    with store.read() as s:
        stored = dict(s.execute(select(Network.name, Network.id)).all())
    assert stored == {f"n{i:03d}": ids[i] for i in range(200)}
    # Calls arriving together share transactions.
    assert gc.batches < 200


def test_stop_answers_what_was_queued_and_refuses_what_comes_after(store):
    gc = GroupCommit(store)
    _, release, holder = _hold_writer(gc)
    results, threads = _queue_calls(gc, [_add_network(f"q{i}") for i in range(5)])
    _wait_queued(gc, 5)
    stopper = threading.Thread(target=gc.stop)
    stopper.start()
    release.set()
    for t in (holder, stopper, *threads):
        t.join(30)
    assert [r[0] for r in results] == ["ok"] * 5
    assert _names(store) == [f"q{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="stopped"):
        gc.call(_add_network("late"))


def test_a_call_that_escapes_the_error_handling_does_not_stop_the_writer(store):
    gc = GroupCommit(store)
    try:

        def escapes(_s):
            raise SystemExit("not an Exception")

        with pytest.raises(RuntimeError, match="group commit failed"):
            gc.call(escapes)
        assert isinstance(gc.call(_add_network("after")), int)
        assert _names(store) == ["after"]
    finally:
        gc.stop()
