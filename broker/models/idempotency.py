"""Idempotency keys: a retried state-changing call finds the result of the first one."""

from __future__ import annotations

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, HasCreated, HasId, Id


class IdempotencyRecord(HasId, HasCreated, Base):
    """``(scope, key)`` -> the operation, a fingerprint of its input, and what it created.

    ``scope`` is the calling principal (``provider:3``), so two callers cannot collide.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    scope: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200))
    operation: Mapped[str] = mapped_column(String(60))
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_kind: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[int] = mapped_column(Id)
