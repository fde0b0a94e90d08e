"""The pktx stream between nodes: numbered batches, each acknowledged, ended by an end marker.

A downstream node binds a ROUTER socket (source ``zmq://HOST:PORT``); the upstream node's sink
connects a DEALER to it and sends, for each batch, ``[STREAM_TAG, b"B", number, *batch frames]``,
then ``[STREAM_TAG, b"E", number, json summary]`` once at the end (``number``: u64
little-endian, 0, 1, 2, ...). The downstream answers each with ``[STREAM_TAG, b"K", number]``
once it has taken it. The upstream holds at most a window of unacknowledged batches (a slow
downstream slows it), counts as delivered only what was acknowledged, and fails when nothing
is acknowledged for its timeout.

A stream with an id (``pktx deliver -o zmq://... --stream-id ID``) can be resumed: its
messages carry ``RESUMABLE_TAG`` instead, and it opens with ``[RESUMABLE_TAG, b"H", id]``.
The downstream answers ``[RESUMABLE_TAG, b"R", json]``: the next message number it expects
and the ``Mark`` of the last batch it took (zeros for a new stream); or
``[RESUMABLE_TAG, b"X", reason]`` when it receives another stream. Each batch and the end
marker carry, after the number, the ``Mark`` where the stream stands once it is taken:
``[RESUMABLE_TAG, b"B", number, mark, *batch frames]``. A sender started again with the same
id (after a SIGKILL) says HELLO again; the downstream takes it as the stream's sender from
then on (the old one's messages are refused), and the sender skips its source to the mark's
``position`` and goes on numbering from ``next``: the downstream holds every packet once, in
order. ``position`` counts the source's input packets (not the output's: services may drop
or change packets), so a file source starts again exactly after the last input packet whose
output was taken. The tag without an id is unchanged: older senders work with newer
receivers; an older receiver does not understand ``RESUMABLE_TAG`` and the sender's HELLO
is not answered (the sender fails saying so).
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass

STREAM_TAG = b"PKTX-STREAM/1"
RESUMABLE_TAG = b"PKTX-STREAM/2"  # a stream with an id: HELLO first, marks on every batch
BATCH = b"B"
END = b"E"
ABORT = b"A"  # the upstream failed: what came before is not the whole stream
ACK = b"K"  # downstream -> upstream: the numbered message was taken
HELLO = b"H"  # upstream -> downstream: open (or resume) the stream with this id
RESUME = b"R"  # downstream -> upstream: JSON {"stream", "next", "mark": {...}}
REFUSE = b"X"  # downstream -> upstream: not this stream here (the reason, UTF-8)
NUMBER = struct.Struct("<Q")
MAX_STREAM_ID = 200  # bytes of UTF-8


@dataclass(frozen=True)
class Mark:
    """Where a resumable stream stands after a batch, every field cumulative over the
    stream's runs: ``position``, the source's input packets done with (the next run starts
    reading there); the packets and bytes read in (after a ``--share``) and sent out."""

    position: int = 0
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0

    LAYOUT = struct.Struct("<5Q")

    def pack(self) -> bytes:
        return self.LAYOUT.pack(*astuple(self))

    @classmethod
    def unpack(cls, data: bytes) -> Mark:
        return cls(*cls.LAYOUT.unpack(data))

    def as_dict(self) -> dict:
        return dict(
            zip(
                ("position", "packets_in", "bytes_in", "packets_out", "bytes_out"),
                astuple(self),
                strict=True,
            )
        )

    @classmethod
    def from_dict(cls, d: dict) -> Mark:
        """From JSON (a RESUME answer, a usage record); ValueError for anything else."""
        try:
            values = [int(d.get(k, 0)) for k in cls().as_dict()]
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"not a stream mark: {str(d)[:200]}") from None
        if any(v < 0 or v >= 1 << 64 for v in values):
            raise ValueError(f"stream mark out of range: {d}")
        return cls(*values)


def split_endpoint(url: str, scheme: str) -> tuple[str, int]:
    """``scheme://HOST:PORT`` -> (host, port), with a clear error for anything else."""
    rest = url[len(scheme) + 3 :]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{url!r}: expected {scheme}://HOST:PORT")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValueError(f"{url!r}: port {p} out of range")
    return host.strip("[]"), p
