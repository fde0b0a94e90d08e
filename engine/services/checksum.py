"""checksum: recompute the IPv4 header and TCP/UDP/ICMP/ICMPv6 checksums of every packet.

Counters, per checksum kind (``ipv4`` header, ``tcp``, ``udp``, ``icmp``, ``icmpv6``):
``<kind>_correct`` (already right), ``<kind>_fixed`` (was wrong, rewritten; ``<kind>_wrong``
with ``verify_only``), ``<kind>_truncated`` (not captured in full: left alone),
``<kind>_malformed`` (the lengths do not add up: left alone), and ``udp_no_checksum`` (UDP over
IPv4 with checksum 0: the sender computed none, and none is added). What cannot be checked at
all (fragments, SCTP, UDP-Lite, non-IP) is not counted; see ``engine.packet.checksum``.
"""

from __future__ import annotations

import numpy as np

from engine.capture.batch import PacketBatch
from engine.packet.checksum import (
    BAD,
    GOOD,
    MALFORMED,
    NO_CHECKSUM,
    TRUNCATED,
    ChecksumStatus,
    recompute_checksums,
    verify_checksums,
)
from engine.packet.flowkeys import flow_keys
from engine.services.base import Param, Service, boolean

_L4_KINDS = (
    (4, 6, "tcp"),
    (6, 6, "tcp"),
    (4, 17, "udp"),
    (6, 17, "udp"),
    (4, 1, "icmp"),
    (6, 58, "icmpv6"),
)


class Checksum(Service):
    name = "checksum"
    summary = "recompute IPv4, TCP, UDP, ICMP and ICMPv6 checksums"
    params = (
        Param(
            "verify_only", boolean, False, "only count correct and wrong checksums, change nothing"
        ),
    )

    def process(self, batch: PacketBatch) -> PacketBatch:
        keys = flow_keys(batch)
        status = verify_checksums(batch, keys)
        fix = not self.config["verify_only"]
        self._count(status, keys, "fixed" if fix else "wrong")
        if not fix or not ((status.ip == BAD).any() or (status.l4 == BAD).any()):
            return batch
        # Our own copy: the input may be a read-only view, or shared with the caller.
        fixed = PacketBatch(
            np.array(batch.data),
            batch.offsets,
            batch.caplen,
            batch.origlen,
            batch.ts_ns,
            batch.iface,
            batch.interfaces,
            batch.first_seq,
            batch.seq if batch.has_explicit_seq else None,
        )
        recompute_checksums(fixed, keys)
        return fixed

    def _count(self, status: ChecksumStatus, keys, wrong: str) -> None:
        self._tally("ipv4", status.ip[keys.family == 4], wrong)
        for family, proto, kind in _L4_KINDS:
            mask = (keys.family == family) & (keys.proto == proto)
            if mask.any():
                self._tally(kind, status.l4[mask], wrong)
        self.counters["udp_no_checksum"] += int((status.l4 == NO_CHECKSUM).sum())

    def _tally(self, kind: str, values: np.ndarray, wrong: str) -> None:
        for code, label in (
            (GOOD, "correct"),
            (BAD, wrong),
            (TRUNCATED, "truncated"),
            (MALFORMED, "malformed"),
        ):
            self.counters[f"{kind}_{label}"] += int((values == code).sum())
