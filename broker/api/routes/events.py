"""``GET /v1/devices/me/events``: server-sent events for the caller's user (claim c08)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from broker.api.deps import CurrentActor, store_of
from broker.device_events import events_after, events_user
from broker.errors import InvalidInput

router = APIRouter(tags=["statements"])


# Checked as dependencies: they run before the stream starts, so a refusal is a plain answer
# (403, 422), not a stream cut short.
def _user(actor: CurrentActor) -> int:
    return events_user(actor)


def _after(
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=20,
            description="resume after this event (browsers send it when they reconnect); without "
            "it the stream starts with the user's first event",
        ),
    ] = None,
) -> int:
    if last_event_id is None or last_event_id == "":
        return 0
    if not last_event_id.isdigit() or int(last_event_id) > 2**63 - 1:
        raise InvalidInput(
            "Last-Event-ID is the id of an event this stream sent", field="Last-Event-ID"
        )
    return int(last_event_id)


@router.get(
    "/devices/me/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "a text/event-stream: each event's `id` is its "
            "number, `event` its kind (statement.finalized), "
            "`data` its JSON"
        }
    },
)
async def device_events(
    request: Request,
    user_id: Annotated[int, Depends(_user)],
    after: Annotated[int, Depends(_after)],
) -> AsyncIterator[ServerSentEvent]:
    """What the caller's user's devices are told, as server-sent events: a statement
    finalized (its id, number, period and totals; fetch it from `/v1/statements/{id}` or
    render it in the format the device wants). The stream stays open; it ends after the
    server's `event_stream_seconds` and the device reconnects with `Last-Event-ID`."""
    store = store_of(request)
    options = request.app.state.event_stream
    ends = time.monotonic() + options["seconds"]

    def fetch(after_id: int) -> list[dict]:
        with store.read() as s:
            return events_after(s, user_id, after_id)

    yield ServerSentEvent(comment="pktx device events", retry=options["retry_ms"])
    while time.monotonic() < ends and not await request.is_disconnected():
        batch = await anyio.to_thread.run_sync(fetch, after)
        for event in batch:
            after = event["id"]
            yield ServerSentEvent(
                id=str(event["id"]),
                event=event["kind"],
                data={**event["payload"], "created_at": event["created_at"].isoformat()},
            )
        if len(batch) < 100:
            await anyio.sleep(options["poll"])
