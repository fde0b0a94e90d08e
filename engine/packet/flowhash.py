"""Symmetric flow hashing and flow-to-worker assignment, for flow affinity in the dispatcher.

``flow_hash`` gives each packet a 64-bit hash of its flow (family, protocol, both addresses and,
for TCP, UDP, SCTP, UDP-Lite and DCCP, both ports) that is **the same for both directions**: the
two endpoints are hashed separately with murmur3's 64-bit finaliser and combined by addition,
which ignores their order. Ports are left out for ICMP/ICMPv6 (so an echo and its reply go
together) and for every fragment (a datagram's later fragments carry no ports, so all of its
fragments hash alike, on addresses and protocol). Packets with no IP header (``family == 0``)
all share one hash. ``seed`` selects one of a family of such hashes.

The values are defined by ``engine.packet.kernels._flow_hash`` and ``tests/engine/naive.py`` and do
not depend on the host: addresses are read as little-endian 64-bit words whatever the machine.

``assign_workers`` maps hashes onto ``n`` workers (from the top 32 bits, by multiplication, not
modulo); ``partition`` groups packet positions by worker, stably, so a dispatcher can take each
worker's share of a batch in stream order.
"""

from __future__ import annotations

import numpy as np

from engine.capture.batch import PacketBatch
from engine.packet import kernels
from engine.packet.flowkeys import FlowKeys, flow_keys

__all__ = [
    "SHARE_SEED",
    "assign_workers",
    "flow_hash",
    "partition",
    "share_of_packets",
    "worker_of_packets",
]

_MAX_WORKERS = 1 << 32
# The hash that splits a stream into the shares of an award (``--share i/k``). Not the flow
# affinity's (seed 0): within one share the flows must still spread over every worker, and
# with one hash for both a share would hold only the flows of a slice of the workers.
SHARE_SEED = 0x5348415245  # b"SHARE"


def _words(addr: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(addr, np.uint8)
    if a.ndim != 2 or a.shape[1] != 16:
        raise ValueError(f"addresses must have shape (n, 16), not {a.shape}")
    return a.view("<u8").astype(np.uint64, copy=False)


def flow_hash(keys: FlowKeys | PacketBatch, seed: int = 0) -> np.ndarray:
    """The symmetric 64-bit flow hash (uint64) of every packet.

    ``keys`` are flow keys (``engine.packet.flowkeys.flow_keys``) or a batch to compute them from;
    ``seed`` is an int in ``[0, 2**64)``.
    """
    if isinstance(keys, PacketBatch):
        keys = flow_keys(keys)
    if not isinstance(keys, FlowKeys):
        raise TypeError(f"flow_hash needs FlowKeys or a PacketBatch, not {type(keys).__name__}")
    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), not {seed}")
    n = len(keys)
    for name in ("proto", "sport", "dport", "fragment"):
        if len(getattr(keys, name)) != n:
            raise ValueError(f"flow keys {name} holds {len(getattr(keys, name))} values, not {n}")
    out = np.empty(n, np.uint64)
    with np.errstate(over="ignore"):
        kernels._flow_hash(
            np.ascontiguousarray(keys.family, np.uint8),
            np.ascontiguousarray(keys.proto, np.uint8),
            _words(keys.src),
            _words(keys.dst),
            np.ascontiguousarray(keys.sport, np.uint16),
            np.ascontiguousarray(keys.dport, np.uint16),
            np.ascontiguousarray(keys.fragment, np.uint8),
            np.uint64(int(seed)),
            out,
        )
    return out


def assign_workers(hashes: np.ndarray, n_workers: int) -> np.ndarray:
    """The worker (uint32 in ``[0, n_workers)``) of each hash: ``(hash >> 32) * n >> 32``.

    Every hash value lands on one worker and the workers get equal shares of the hash space
    (to within one part in 2**32).
    """
    n_workers = int(n_workers)
    if not 1 <= n_workers < _MAX_WORKERS:
        raise ValueError(f"n_workers must be in [1, 2**32), not {n_workers}")
    h = np.ascontiguousarray(hashes)
    if h.dtype != np.uint64 or h.ndim != 1:
        raise TypeError("hashes must be a one-dimensional uint64 array (from flow_hash)")
    out = np.empty(len(h), np.uint32)
    kernels._assign_workers(h, n_workers, out)
    return out


def worker_of_packets(keys: FlowKeys | PacketBatch, n_workers: int, seed: int = 0) -> np.ndarray:
    """Which of ``n_workers`` each packet goes to, so both directions of a flow meet."""
    return assign_workers(flow_hash(keys, seed), n_workers)


def share_of_packets(keys: FlowKeys | PacketBatch, shares: int) -> np.ndarray:
    """Which of ``shares`` equal shares of a stream each packet belongs to (uint32): both
    directions of a flow in the same one, every packet in exactly one. The providers that won
    an auction of ``shares`` blocks each deliver one share (``pktx deliver --share i/k``)."""
    return assign_workers(flow_hash(keys, SHARE_SEED), shares)


def partition(parts: np.ndarray, n_parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Group positions by part, keeping their order: ``(order, bounds)``.

    Part ``p``'s positions, ascending, are ``order[bounds[p]:bounds[p + 1]]``
    (``order`` int64 of ``len(parts)``, ``bounds`` int64 of ``n_parts + 1``). With ``parts`` from
    ``assign_workers``, ``batch.take(order[bounds[w]:bounds[w + 1]])`` is worker ``w``'s share.
    """
    n_parts = int(n_parts)
    if n_parts < 1:
        raise ValueError(f"n_parts must be at least 1, not {n_parts}")
    p = np.ascontiguousarray(parts)
    if p.ndim != 1 or not np.issubdtype(p.dtype, np.integer):
        raise TypeError("parts must be a one-dimensional integer array")
    if len(p) and (int(p.min()) < 0 or int(p.max()) >= n_parts):
        raise ValueError(f"parts must lie in [0, {n_parts})")
    order = np.empty(len(p), np.int64)
    bounds = np.empty(n_parts + 1, np.int64)
    kernels._stable_partition(p.astype(np.int64, copy=False), n_parts, order, bounds)
    return order, bounds
