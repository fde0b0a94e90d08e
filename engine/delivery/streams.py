"""The pktx stream between nodes: numbered batches, each acknowledged, ended by an end marker.

A downstream node binds a ROUTER socket (source ``zmq://HOST:PORT``); the upstream node's sink
connects a DEALER to it and sends, for each batch, ``[STREAM_TAG, b"B", number, *batch frames]``,
then ``[STREAM_TAG, b"E", number, json summary]`` once at the end (``number``: u64
little-endian, 0, 1, 2, ...). The downstream answers each with ``[STREAM_TAG, b"K", number]``
once it has taken it. The upstream holds at most a window of unacknowledged batches (a slow
downstream slows it), counts as delivered only what was acknowledged, and fails when nothing
is acknowledged for its timeout.
"""

from __future__ import annotations

import struct

STREAM_TAG = b"PKTX-STREAM/1"
BATCH = b"B"
END = b"E"
ABORT = b"A"  # the upstream failed: what came before is not the whole stream
ACK = b"K"  # downstream -> upstream: the numbered message was taken
NUMBER = struct.Struct("<Q")


def split_endpoint(url: str, scheme: str) -> tuple[str, int]:
    """``scheme://HOST:PORT`` -> (host, port), with a clear error for anything else."""
    rest = url[len(scheme) + 3:]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{url!r}: expected {scheme}://HOST:PORT")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValueError(f"{url!r}: port {p} out of range")
    return host.strip("[]"), p
