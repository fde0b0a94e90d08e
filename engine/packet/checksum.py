"""The Internet checksum (RFC 1071) of a buffer, and per-packet verification and rewriting.

Checksums are 16-bit integers in network byte order: write them big-endian. A region holding its
own correct checksum has ``internet_checksum(...) == 0``.

Per packet, ``verify_checksums`` reports two statuses: the IPv4 header checksum (``ip``) and the
TCP, UDP, ICMP or ICMPv6 checksum over its pseudo-header (``l4``), as one of ``NONE``, ``GOOD``,
``BAD``, ``TRUNCATED``, ``NO_CHECKSUM``, ``MALFORMED`` (see ``engine.packet.checksum_py``). What is
not checked: IPv6 has no header checksum; SCTP uses CRC32c and UDP-Lite partial coverage
(``NONE``); fragments cannot be checked before reassembly (``NONE``). Over IPv6 the pseudo-header
holds the final destination (RFC 8200, 8.1): from a type 0, 2 or 4 (Segment Routing) routing
header with segments left, else the header's; a type 3 (RPL) header's compressed addresses are
not unpacked, and the header's destination is used. The segment's length comes from the IP
length fields (so Ethernet padding is not summed) and, for UDP, from the UDP length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.capture import backend
from engine.capture.batch import PacketBatch
from engine.packet.checksum_py import BAD, GOOD, MALFORMED, NO_CHECKSUM, NONE, TRUNCATED
from engine.packet.flowkeys import FlowKeys, flow_keys

_impl = backend.load("checksum")

STATUS_NAMES = {
    NONE: "none",
    GOOD: "good",
    BAD: "bad",
    TRUNCATED: "truncated",
    NO_CHECKSUM: "no-checksum",
    MALFORMED: "malformed",
}

__all__ = [
    "BAD",
    "GOOD",
    "MALFORMED",
    "NONE",
    "NO_CHECKSUM",
    "STATUS_NAMES",
    "TRUNCATED",
    "ChecksumStatus",
    "internet_checksum",
    "ones_complement_sum",
    "recompute_checksums",
    "verify_checksums",
]


@dataclass(frozen=True, eq=False)
class ChecksumStatus:
    """Per-packet statuses (uint8 arrays): ``ip`` for the IPv4 header, ``l4`` for the transport."""

    ip: np.ndarray
    l4: np.ndarray

    def __len__(self) -> int:
        return len(self.ip)

    def counts(self) -> dict[str, dict[str, int]]:
        """How many packets have each status, by layer (names from ``STATUS_NAMES``)."""
        return {
            layer: {
                STATUS_NAMES[int(v)]: int(c)
                for v, c in zip(*np.unique(arr, return_counts=True), strict=True)
            }
            for layer, arr in (("ip", self.ip), ("l4", self.l4))
        }

    def all_good(self) -> bool:
        """Whether no checksum that could be checked was wrong (``BAD`` or ``MALFORMED``)."""
        bad = (BAD, MALFORMED)
        return not (np.isin(self.ip, bad).any() or np.isin(self.l4, bad).any())


def _buffer(buf) -> np.ndarray:
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.uint8:
            raise TypeError(f"checksum needs a uint8 buffer, not {buf.dtype}")
        return np.ascontiguousarray(buf).reshape(-1)
    return np.frombuffer(buf, np.uint8)


def ones_complement_sum(
    buf, start: int = 0, length: int | None = None, initial: int = 0, *, impl=None
) -> int:
    """The folded 16-bit ones'-complement sum of ``buf[start:start+length]`` plus ``initial``.

    ``length`` defaults to the rest of the buffer; an odd length is padded with a zero byte.
    ``initial`` (a non-negative int, e.g. a pseudo-header's sum) is folded in.
    """
    a = _buffer(buf)
    if length is None:
        length = len(a) - start
    return (impl or _impl).ones_complement_sum(a, int(start), int(length), int(initial))


def internet_checksum(
    buf, start: int = 0, length: int | None = None, initial: int = 0, *, impl=None
) -> int:
    """The RFC 1071 checksum of ``buf[start:start+length]`` (the complement of its sum).

    Raises ``ValueError`` when the region lies outside ``buf`` or ``initial`` is negative.
    """
    a = _buffer(buf)
    if length is None:
        length = len(a) - start
    return (impl or _impl).internet_checksum(a, int(start), int(length), int(initial))


def _run(batch: PacketBatch, keys: FlowKeys | None, fix: bool, impl) -> ChecksumStatus:
    if not isinstance(batch, PacketBatch):
        raise TypeError(f"expected a PacketBatch, not {type(batch).__name__}")
    if keys is None:
        keys = flow_keys(batch)
    elif len(keys) != len(batch):
        raise ValueError(f"flow keys for {len(keys)} packets given for a batch of {len(batch)}")
    n = len(batch)
    status = ChecksumStatus(np.zeros(n, np.uint8), np.zeros(n, np.uint8))
    if fix and n and not batch.data.flags.writeable:
        raise ValueError(
            "recompute_checksums needs a batch whose buffer is writable "
            "(a batch received from frames is a read-only view: copy it first)"
        )
    ends = batch.offsets + batch.caplen
    if n and (int(batch.offsets.min()) < 0 or int(ends.max()) > len(batch.data)):
        raise ValueError("a packet lies outside the batch buffer")
    (impl or _impl).checksum_packets(
        batch.data,
        batch.offsets,
        batch.caplen,
        keys.family,
        keys.proto,
        keys.l3_off,
        keys.l4_off,
        keys.fragment,
        fix,
        status.ip,
        status.l4,
    )
    return status


def verify_checksums(
    batch: PacketBatch, keys: FlowKeys | None = None, *, impl=None
) -> ChecksumStatus:
    """Check every packet's IPv4 header and TCP/UDP/ICMP/ICMPv6 checksums.

    ``keys`` are the batch's flow keys when already at hand (computed otherwise).
    """
    return _run(batch, keys, False, impl)


def recompute_checksums(
    batch: PacketBatch, keys: FlowKeys | None = None, *, impl=None
) -> ChecksumStatus:
    """Rewrite, in the batch's own buffer, every checksum that can be computed.

    Headers and segments not captured in full are left alone, as is a UDP/IPv4 checksum of 0
    (the sender chose none). Returns the statuses found before the rewrite. Packets sharing
    bytes with another batch see the change there too.
    """
    return _run(batch, keys, True, impl)
