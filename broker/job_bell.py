"""Waking the claims that wait in this process when one of a provider's jobs is queued.

A daemon's claim long-polls (`broker.api.routes.dispatch`): it looks for a claimable job every
`POLL_S`, which is what it must do for jobs queued by another process (another server worker,
an admin command). A job queued by this process rings the bell as its transaction commits, and
the provider's waiting claims look at once: an award reaches an idle daemon in the time of a
commit and a claim, not of half a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

from broker.models import DeliveryJob


class JobBell:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def ring(self, provider_ids) -> None:
        """Wake every claim waiting for one of ``provider_ids`` (from any thread)."""
        with self._lock:
            waiting = [w for pid in provider_ids for w in self._waiters.get(pid, ())]
        for loop, bell in waiting:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(bell.set)

    async def wait(self, provider_id: int, timeout: float) -> None:
        """Until the bell rings for ``provider_id`` or ``timeout`` seconds pass."""
        me = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(provider_id, set()).add(me)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(me[1].wait(), timeout)
        finally:
            with self._lock:
                waiting = self._waiters.get(provider_id)
                if waiting is not None:
                    waiting.discard(me)
                    if not waiting:
                        del self._waiters[provider_id]


BELL = JobBell()


@event.listens_for(Session, "after_flush")
def _queued_jobs(session: Session, _context) -> None:
    """Note the providers whose jobs this flush queued (new, handed back, lapsed)."""
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, DeliveryJob) and obj.status == "queued":
            session.info.setdefault("pktx_ring", set()).add(obj.provider_id)


@event.listens_for(Session, "after_commit")
def _ring(session: Session) -> None:
    providers = session.info.pop("pktx_ring", None)
    if providers:
        BELL.ring(providers)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop("pktx_ring", None)
