"""Flow keys of a batch: addresses, protocol, ports and header offsets, as parallel arrays.

What is understood
------------------
Link types: Ethernet (1), raw IP (101, 228 IPv4, 229 IPv6), Linux cooked SLL (113) and SLL2
(276), BSD loopback NULL (0) and LOOP (108) with the address family in either byte order
(AF_INET 2; AF_INET6 24, 28 or 30). Between the link header and IP: any number of 802.1Q,
802.1ad and 0x9100 VLAN tags (QinQ), LLC/SNAP, a PPPoE session header, an MPLS label stack.
Other link types and non-IP payloads give ``family == 0``.

The keys are those of the **outermost** IP header (a tunnel's inner packet is payload).
IPv4 honours IHL. IPv6 extension headers (hop-by-hop, routing, fragment, destination options)
are walked, and so is AH in both IPv4 and IPv6, so ``proto`` is the upper-layer protocol behind
them. ``proto`` is left at the last next-header value read when the walk stops early: a
non-first fragment, or an extension header cut short by the snapshot length.

Ports: TCP, UDP, SCTP, UDP-Lite and DCCP give ``sport``/``dport``. For ICMP and ICMPv6,
``sport`` holds the **type** and ``dport`` the **code** (so an echo request and its reply
differ there; ``engine.packet.flowhash`` ignores them). Otherwise both are 0.

Fragments: ``fragment`` is 0 for an unfragmented packet (an IPv6 atomic fragment, offset 0 and
M clear, counts as unfragmented), 1 for a first fragment (its transport header is present), 2
for any later fragment, which has no transport header: its ports are 0 and ``l4_off`` and
``payload_off`` are -1.

Offsets are from the start of the packet's captured bytes. ``l3_off`` is set when ``family`` is;
``l4_off`` when every header before the transport header was captured in full; ``payload_off``
when the transport header itself was captured in full (TCP data offset, UDP/UDP-Lite 8, SCTP
common header 12, ICMP/ICMPv6 8, DCCP data offset; other protocols have none). An offset may
equal the packet's ``caplen``: nothing after that header was captured. Only ``caplen`` bounds
the parse; the IP length fields are not consulted (``engine.packet.checksum`` does).

Truncated packets yield what is there: the addresses once the fixed IP header is captured, a
source port from two bytes of transport header, the destination port from four.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.capture import backend
from engine.capture.batch import PacketBatch

FRAG_NONE = 0
FRAG_FIRST = 1
FRAG_LATER = 2

_impl = backend.load("flowkeys")

__all__ = ["FRAG_FIRST", "FRAG_LATER", "FRAG_NONE", "FlowKeys", "extract", "flow_keys"]


@dataclass(frozen=True, eq=False)
class FlowKeys:
    """One row per packet, parallel arrays (see the module docstring for what each holds).

    ``family`` uint8 (0 none, 4, 6); ``proto`` uint8; ``src``/``dst`` ``(n, 16)`` uint8 (an
    IPv4 address in the first 4 bytes, the rest zero); ``sport``/``dport`` uint16;
    ``l3_off``/``l4_off``/``payload_off`` int32 (-1 when absent); ``fragment`` uint8
    (0 none, 1 first, 2 later).
    """

    family: np.ndarray
    proto: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    l3_off: np.ndarray
    l4_off: np.ndarray
    payload_off: np.ndarray
    fragment: np.ndarray

    @classmethod
    def allocate(cls, n: int) -> FlowKeys:
        """Uninitialised arrays for ``n`` packets, ready for ``extract`` to fill."""
        return cls(
            family=np.empty(n, np.uint8),
            proto=np.empty(n, np.uint8),
            src=np.empty((n, 16), np.uint8),
            dst=np.empty((n, 16), np.uint8),
            sport=np.empty(n, np.uint16),
            dport=np.empty(n, np.uint16),
            l3_off=np.empty(n, np.int32),
            l4_off=np.empty(n, np.int32),
            payload_off=np.empty(n, np.int32),
            fragment=np.empty(n, np.uint8),
        )

    def __len__(self) -> int:
        return len(self.family)

    def take(self, indices) -> FlowKeys:
        """The rows at ``indices`` (an index array, a boolean mask or a slice)."""
        return FlowKeys(**{f: getattr(self, f)[indices] for f in self.__dataclass_fields__})

    def equals(self, other: FlowKeys) -> bool:
        """Whether every array of both is equal (what tests compare twins with)."""
        return all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__
        )

    def row(self, i: int) -> dict:
        """Packet ``i``'s keys as plain Python values (for messages and tests, not hot paths)."""
        alen = 4 if self.family[i] == 4 else 16 if self.family[i] == 6 else 0
        return {
            "family": int(self.family[i]),
            "proto": int(self.proto[i]),
            "src": bytes(self.src[i, :alen]),
            "dst": bytes(self.dst[i, :alen]),
            "sport": int(self.sport[i]),
            "dport": int(self.dport[i]),
            "l3_off": int(self.l3_off[i]),
            "l4_off": int(self.l4_off[i]),
            "payload_off": int(self.payload_off[i]),
            "fragment": int(self.fragment[i]),
        }


def flow_keys(batch: PacketBatch, *, impl=None) -> FlowKeys:
    """The flow keys of every packet in ``batch``.

    ``impl`` picks a backend module (one of ``backend.variants("flowkeys")``); by default the
    compiled one when it is built.
    """
    if not isinstance(batch, PacketBatch):
        raise TypeError(f"flow_keys needs a PacketBatch, not {type(batch).__name__}")
    return extract(batch.data, batch.offsets, batch.caplen, batch.linktypes, impl=impl)


def extract(data, offsets, caplen, linktypes, *, impl=None) -> FlowKeys:
    """Flow keys of packets ``data[offsets[i] : offsets[i] + caplen[i]]`` of link type
    ``linktypes[i]`` (an int applies to all). Raises ``ValueError`` when a packet lies outside
    ``data`` or the arrays differ in length.
    """
    data = np.ascontiguousarray(data, np.uint8).reshape(-1)
    offsets = np.ascontiguousarray(offsets, np.int64)
    caplen = np.ascontiguousarray(caplen, np.uint32)
    n = len(offsets)
    if np.ndim(linktypes) == 0:
        linktypes = np.full(n, int(linktypes), np.uint32)
    linktypes = np.ascontiguousarray(linktypes, np.uint32)
    if not (len(caplen) == len(linktypes) == n):
        raise ValueError(
            f"offsets, caplen and linktypes differ in length ({n}, {len(caplen)}, {len(linktypes)})"
        )
    if n:
        ends = offsets + caplen
        bad = np.flatnonzero((offsets < 0) | (ends > len(data)))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"packet {i} (offset {int(offsets[i])}, caplen {int(caplen[i])}) "
                f"lies outside the {len(data)}-byte buffer"
            )
    keys = FlowKeys.allocate(n)
    (impl or _impl).extract_flow_keys(
        data,
        offsets,
        caplen,
        linktypes,
        keys.family,
        keys.proto,
        keys.src,
        keys.dst,
        keys.sport,
        keys.dport,
        keys.l3_off,
        keys.l4_off,
        keys.payload_off,
        keys.fragment,
    )
    return keys
