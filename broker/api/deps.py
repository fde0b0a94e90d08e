"""What the routes depend on: the store, the caller, the idempotency key, settings, paging.

Routes import from here and from `broker.api.schemas`/`broker.api.responses` only; `main.py`
puts the app together (no import circle between the app and its routes).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from broker.actors import Actor, authenticate
from broker.bounds import INT64_MAX
from broker.errors import InvalidInput
from broker.groupcommit import GroupCommit
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


async def api_token(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    header: Annotated[str | None, Depends(_header)]) -> str | None:
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
IdemKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200,
    description="makes a retried state-changing call return the first call's result")]


def id_path(description: str):
    """A path id: a positive 64-bit integer (a larger one is a 422 naming it, not a 500)."""
    return Path(ge=1, le=INT64_MAX, description=description)


class Page:
    """Cursor paging of a list: ``?limit=N&cursor=C``; the answer's ``next_cursor`` is the
    cursor of the page after (null on the last page). The cursor is opaque to clients."""

    def __init__(self,
                 limit: Annotated[int, Query(ge=1, le=500, description="items per page")] = 100,
                 cursor: Annotated[str | None, Query(max_length=64,
                                                     description="next_cursor of the page "
                                                                 "before")] = None) -> None:
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
            raise InvalidInput("not a cursor this API gave out; pass next_cursor as it was "
                               "returned", field="cursor") from None
        return last

    def answer(self, rows: list, view) -> dict:
        """The page's JSON: ``rows`` were fetched with one row more than the limit."""
        more = len(rows) > self.limit
        rows = rows[:self.limit]
        return {"items": [view(r) for r in rows],
                "next_cursor": self.encode(rows[-1].id) if more and rows else None}


Paging = Annotated[Page, Depends()]
