"""Idempotency keys for state-changing operations: a retry returns what the first call made.

A call with a key looks the key up in the caller's scope first. Found with the same operation
and the same input: the resource the first call created is returned and nothing changes. Found
with other input: `IdempotencyKeyReused`. Not found: the operation runs and the key is stored
in the same transaction, so either both are kept or neither.

Two concurrent first calls with one key: on SQLite they cannot overlap (writers take the lock
up front, so the second looks the key up after the first committed). On PostgreSQL both may
miss the key; the second's insert of the key then waits on the ``(scope, key)`` unique index
until the first commits, and fails. Its operation ran in a savepoint, which is rolled back, and
the first call's result, committed by then, is returned: the second caller gets the same answer
as a retry would, not a conflict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.errors import IdempotencyKeyReused, InvalidInput
from broker.models import IdempotencyRecord


class _Resource(Protocol):
    """A model whose rows an idempotency record can point at."""

    __tablename__: Any

    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=_Resource)


def fingerprint(operation: str, params: dict) -> str:
    def default(value):
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        return str(value)

    text = json.dumps({"op": operation, "params": params}, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()


def once(
    session: Session,
    actor: Actor,
    key: str | None,
    operation: str,
    params: dict,
    model: type[T],
    run: Callable[[], T],
) -> T:
    """Run ``run()`` unless ``key`` was used for this operation before; return its resource.

    ``model`` is the class of what ``run`` returns (it must have an ``id``).
    """
    if key is None:
        return run()
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        raise InvalidInput("an idempotency key is 1..200 characters", field="idempotency_key")
    print_ = fingerprint(operation, params)
    session.flush()
    record = session.connection().execute(_LOOKUP, {"scope": actor.scope, "key": key}).first()
    if record is not None:
        if record.operation != operation or record.fingerprint != print_:
            raise IdempotencyKeyReused(
                f"key {key!r} was used for {record.operation} with other input at "
                f"{record.created_at.isoformat()}; use a new key for a new operation",
                field="idempotency_key",
            )
        found = session.get(model, record.resource_id)
        assert found is not None, "an idempotent result's resource vanished"
        return found
    row = {
        "scope": actor.scope,
        "key": key,
        "operation": operation,
        "fingerprint": print_,
        "resource_kind": model.__tablename__,
    }
    if session.connection().dialect.name == "sqlite":  # writers never overlap: no race
        return _run_and_record(session, run, row)
    try:
        with session.begin_nested():
            return _run_and_record(session, run, row)
    except IntegrityError:
        record = session.connection().execute(_LOOKUP, {"scope": actor.scope, "key": key}).first()
        if record is None:  # the operation's own conflict, not the key's
            raise
    if record.operation != operation or record.fingerprint != print_:
        raise IdempotencyKeyReused(
            f"key {key!r} was used meanwhile for {record.operation} with other input; use a "
            f"new key for a new operation",
            field="idempotency_key",
        )
    found = session.get(model, record.resource_id)
    assert found is not None, "an idempotent result's resource vanished"
    return found


def _run_and_record(session: Session, run: Callable[[], T], row: dict) -> T:
    result = run()
    session.flush()
    session.connection().execute(_RECORD, {**row, "resource_id": result.id})
    return result


# Built once (Core, no objects): every keyed POST runs the first, every first call the second.
_LOOKUP = select(
    IdempotencyRecord.operation,
    IdempotencyRecord.fingerprint,
    IdempotencyRecord.resource_id,
    IdempotencyRecord.created_at,
).where(IdempotencyRecord.scope == bindparam("scope"), IdempotencyRecord.key == bindparam("key"))
_RECORD = insert(IdempotencyRecord.__table__)
