"""The pktx stream between nodes: batches over ZeroMQ PUSH/PULL, ended by an end marker.

A downstream node binds a PULL socket (source ``zmq://HOST:PORT``); the upstream node's sink
connects a PUSH socket to it and sends, for each batch, ``[STREAM_TAG, b"B", *batch frames]``,
then ``[STREAM_TAG, b"E", json summary]`` once at the end. PUSH blocks when the receiver's
queue is full, so a slow downstream slows the upstream instead of losing packets.
"""

from __future__ import annotations

STREAM_TAG = b"PKTX-STREAM/1"
BATCH = b"B"
END = b"E"
ABORT = b"A"  # the upstream failed: what came before is not the whole stream


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
