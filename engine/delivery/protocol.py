"""The dispatcher-worker wire protocol: commands, frame layouts and timing defaults.

Every message is a ZeroMQ multipart message; the dispatcher's ROUTER sees the worker's
identity frame first, the worker's DEALER does not. After that:

    frame 0  PROTOCOL (b"PKTX/1")
    frame 1  one command byte
    frame 2+ the command's body (below)

``docs/protocol.md`` is the prose version of this module; keep the two in step.
"""

from __future__ import annotations

import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL = b"PKTX/1"

# Commands (one byte each).
READY = b"\x01"  # W->D  json hello: name, host, pid, services, credit
WELCOME = b"\x02"  # D->W  json: heartbeat_ms, liveness, stream id
TASK = b"\x03"  # D->W  task header, chain json, batch frames
RESULT = b"\x04"  # W->D  task header, counters json, kept-index frame, batch frames
FAIL = b"\x05"  # W->D  task header, json {service, error}
HEARTBEAT = b"\x06"  # both ways, no body
DISCONNECT = b"\x07"  # both ways, json {reason}

COMMAND_NAMES = {
    READY: "READY",
    WELCOME: "WELCOME",
    TASK: "TASK",
    RESULT: "RESULT",
    FAIL: "FAIL",
    HEARTBEAT: "HEARTBEAT",
    DISCONNECT: "DISCONNECT",
}

# Task header: stream id (128 bits, random per run), segment id, part, part count, attempt,
# packets in the task.
TASK_HEADER = struct.Struct("<16sQHHHxxI")

# Timing (milliseconds) and flow-control defaults.
HEARTBEAT_MS = 500
LIVENESS = 6  # heartbeats missed before the peer is declared dead
RECONNECT_MIN_MS = 100
RECONNECT_MAX_MS = 4000
DEFAULT_CREDIT = 4  # segments a worker holds at once
MAX_ATTEMPTS = 3  # workers a task may kill or fail on before it is poison
TASK_TIMEOUT_S = 60.0  # a task held longer gets its worker disconnected
STRIKES = 3  # garbage messages before a worker is disconnected

# Size limits against peers that send too much. A segment's captured bytes are capped (the
# segmenter cuts there); a frame may be larger (services grow packets a little, offsets add
# 8 bytes a packet), but a frame past MAX_FRAME_BYTES drops the connection (ZMQ_MAXMSGSIZE).
MAX_SEGMENT_BYTES = 16 << 20
MAX_FRAME_BYTES = 64 << 20
# In a RESULT's counters, a service's time on the task (ns, the worker's monotonic clock): kept
# apart from the service's own counters, and no longer than the task was out.
SERVICE_TIME_COUNTER = "time_ns"
HWM = 256  # ZeroMQ high-water marks (messages per peer): far above any credit


def new_stream_id() -> int:
    """A random 128-bit stream id: a result of another run can never match one of ours."""
    return secrets.randbits(128)


@dataclass(frozen=True)
class TaskHeader:
    stream: int
    segment: int
    part: int
    parts: int
    attempt: int
    count: int

    def pack(self) -> bytes:
        return TASK_HEADER.pack(
            self.stream.to_bytes(16, "little"),
            self.segment,
            self.part,
            self.parts,
            self.attempt,
            self.count,
        )

    @classmethod
    def unpack(cls, frame) -> TaskHeader:
        b = bytes(frame)
        if len(b) != TASK_HEADER.size:
            raise ValueError(f"task header of {len(b)} bytes, expected {TASK_HEADER.size}")
        stream, *rest = TASK_HEADER.unpack(b)
        return cls(int.from_bytes(stream, "little"), *rest)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.stream, self.segment, self.part)


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def loads(frame) -> Any:
    return json.loads(bytes(frame))
