"""What the routes depend on: the store, the caller, the idempotency key, settings, paging.

Routes import from here and from `broker.api.schemas`/`broker.api.responses` only; `main.py`
puts the app together (no import circle between the app and its routes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import event

from broker.actors import Actor, authenticate
from broker.bounds import INT64_MAX
from broker.errors import InvalidInput
from broker.groupcommit import GroupCommit
from broker.models import ApiKey
from broker.reputation import ReputationPolicy
from broker.settings import BrokerSettings
from broker.store import Store

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer pktx_<prefix>_<secret>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def store_of(request: Request) -> Store:
    return request.app.state.store


def policy_of(request: Request) -> ReputationPolicy:
    return request.app.state.reputation_policy


def settings_of(request: Request) -> BrokerSettings:
    return request.app.state.settings


def group_commit_of(request: Request) -> GroupCommit:
    """The app's one writer thread for the small, frequent writes (bids): see `GroupCommit`."""
    return request.app.state.group_commit


async def api_token(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> str | None:
    """The API key sent, from ``Authorization: Bearer ...`` or ``X-API-Key`` (not checked)."""
    return bearer.credentials if bearer is not None else header


ApiToken = Annotated[str | None, Depends(api_token)]


def actor_of(store: Store, token: str | None) -> Actor:
    """The caller a token authenticates as; `NotAuthenticated` (401) otherwise."""
    with store.read() as session:
        return authenticate(session, token)


def current_actor(request: Request, token: ApiToken) -> Actor:
    """The caller, from ``Authorization: Bearer ...`` or ``X-API-Key``; 401 otherwise."""
    return actor_of(store_of(request), token)


CurrentActor = Annotated[Actor, Depends(current_actor)]


class KeyCache:
    """The actors of API keys seen lately, by the SHA-256 of the token (never the token): a
    hot caller (a delivery daemon reporting usage many times a second) is authenticated by a
    query once per ``ttl`` seconds instead of once per call.

    Bounded (``size`` keys, the least recently used dropped first). Revocation: a key revoked
    in this process (`broker.actors.revoke_key`, over the API) is dropped from every cache of
    the process at once; one revoked elsewhere (another server worker, ``pktx broker admin``)
    keeps working here for at most ``ttl`` seconds, as does a change of whom a key speaks for
    (a network's providers). docs/billing.md, "Usage intake".
    """

    _all: weakref.WeakSet[KeyCache] = weakref.WeakSet()

    def __init__(self, ttl: float = 2.0, size: int = 1024) -> None:
        self.ttl, self.size = ttl, size
        self._entries: OrderedDict[bytes, tuple[float, str, Actor]] = OrderedDict()
        self._lock = threading.Lock()
        KeyCache._all.add(self)

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str | None) -> Actor | None:
        """The actor ``token`` authenticated as within ``ttl`` seconds, or None."""
        if not token:
            return None
        digest = self.digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[2]

    def put(self, token: str, actor: Actor, *, since: float) -> None:
        """Remember ``actor`` for ``token``, as authenticated by a read begun at ``since``
        (monotonic): the entry expires ``ttl`` seconds after that read."""
        prefix = token.split("_", 2)[1]
        with self._lock:
            self._entries[self.digest(token)] = (since + self.ttl, prefix, actor)
            self._entries.move_to_end(self.digest(token))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, prefix: str) -> None:
        """Drop the key ``prefix`` (it was revoked)."""
        with self._lock:
            for digest in [d for d, (_, p, _) in self._entries.items() if p == prefix]:
                del self._entries[digest]

    @classmethod
    def revoked(cls, prefix: str) -> None:
        for cache in list(cls._all):
            cache.forget(prefix)


@event.listens_for(ApiKey.revoked_at, "set")
def _key_revoked(target: ApiKey, value, _old, _initiator) -> None:
    if value is not None and target.prefix:
        KeyCache.revoked(target.prefix)


def key_cache_of(request: Request) -> KeyCache:
    """The app's `KeyCache` (made on first use)."""
    state = request.app.state
    cache = getattr(state, "key_cache", None)
    if cache is None:
        cache = state.key_cache = KeyCache()
    return cache


def token_of(request: Request) -> str | None:
    """`api_token` without the dependency machinery, for the hottest route: the credentials
    of ``Authorization: Bearer ...``, else ``X-API-Key``."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials
    return headers.get("x-api-key") or None


IdemKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="makes a retried state-changing call return the first call's result",
    ),
]


def id_path(description: str):
    """A path id: a positive 64-bit integer (a larger one is a 422 naming it, not a 500)."""
    return Path(ge=1, le=INT64_MAX, description=description)


class Page:
    """Cursor paging of a list: ``?limit=N&cursor=C``; the answer's ``next_cursor`` is the
    cursor of the page after (null on the last page). The cursor is opaque to clients."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 100,
        cursor: Annotated[
            str | None, Query(max_length=64, description="next_cursor of the page before")
        ] = None,
    ) -> None:
        self.limit = limit
        self.after = self.decode(cursor)

    @staticmethod
    def encode(last_id: int) -> str:
        return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")

    @staticmethod
    def decode(cursor: str | None) -> int | None:
        if cursor is None:
            return None
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            kind, _, value = text.partition(":")
            last = int(value)
            if kind != "id" or not 0 < last <= INT64_MAX:
                raise ValueError(text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput(
                "not a cursor this API gave out; pass next_cursor as it was returned",
                field="cursor",
            ) from None
        return last

    def answer(self, rows: list, view) -> dict:
        """The page's JSON: ``rows`` were fetched with one row more than the limit."""
        more = len(rows) > self.limit
        rows = rows[: self.limit]
        return {
            "items": [view(r) for r in rows],
            "next_cursor": self.encode(rows[-1].id) if more and rows else None,
        }


Paging = Annotated[Page, Depends()]
