"""What the payload-rewriting service tests share: traffic with broken checksums, the corpus,
and scapy as the independent judge of lengths and checksums."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from locations import CORPUS

from engine import CaptureError, read_capture
from engine.capture.batch import PacketBatch
from engine.capture.generate import generate_batch
from engine.packet.flowkeys import flow_keys

KEY = "00112233445566778899aabbccddeeff" * 2


def corpus_batches() -> list[tuple[str, PacketBatch]]:
    """Every corpus capture we can read whole, as (name, batch); none when it is absent."""
    out = []
    for path in sorted(CORPUS.glob("*/*.pcap*")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = read_capture(path)
        except CaptureError:
            continue
        out.append((f"{path.parent.name}/{path.name}", batch))
    return out


def need_corpus() -> list[tuple[str, PacketBatch]]:
    batches = corpus_batches()
    if not batches:
        pytest.skip(f"capture corpus not found at <project>/../shared/corpus ({CORPUS})")
    return batches


def copy_batch(batch: PacketBatch, data: np.ndarray | None = None) -> PacketBatch:
    return PacketBatch(
        batch.data.copy() if data is None else data,
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.ts_ns,
        batch.iface,
        batch.interfaces,
        batch.first_seq,
        batch.seq if batch.has_explicit_seq else None,
    )


def read_only(batch: PacketBatch) -> PacketBatch:
    """The batch over a read-only copy of its buffer (as a worker receives it)."""
    data = batch.data.copy()
    data.flags.writeable = False
    return copy_batch(batch, data)


def break_checksums(batch: PacketBatch, seed: int = 0, share: float = 0.3) -> PacketBatch:
    """A copy with about ``share`` of the IPv4 header and TCP/UDP checksums overwritten: random
    values, 0x0000 and 0xFFFF (the two ones'-complement zeros) among them; a UDP checksum is
    never set to 0, which means "none sent" rather than wrong."""
    rng = np.random.default_rng(seed)
    out = copy_batch(batch)
    keys = flow_keys(out)
    data = out.data
    ok = keys.payload_off >= 0
    for mask, field, low in (
        ((keys.family == 4) & ok, keys.l3_off + 10, 0),
        (ok & (keys.proto == 6) & (keys.fragment == 0), keys.l4_off + 16, 0),
        (ok & (keys.proto == 17) & (keys.fragment == 0), keys.l4_off + 6, 1),
    ):
        rows = np.flatnonzero(mask & (rng.random(len(out)) < share))
        values = rng.integers(low, 0x10000, len(rows))
        values[: len(rows) // 4] = 0xFFFF
        values[len(rows) // 4 : len(rows) // 3] = low
        at = out.offsets[rows] + field[rows]
        data[at] = values >> 8
        data[at + 1] = values & 0xFF
    return out


def eth(**fields):
    """An Ethernet header with fixed addresses (scapy would otherwise ARP for them)."""
    from scapy.layers.l2 import Ether

    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)


def traffic(packets: int = 3000, seed: int = 7) -> PacketBatch:
    return generate_batch(packets, flows=max(packets // 20, 1), seed=seed)


def packets(batch: PacketBatch) -> list[bytes]:
    return [batch.packet(i).tobytes() for i in range(len(batch))]


@contextmanager
def _l4_payloads_raw():
    """scapy leaves TCP/UDP payloads undissected (a ciphertext is no DNS message)."""
    from scapy.layers.inet import TCP, UDP

    saved = TCP.payload_guess, UDP.payload_guess
    TCP.payload_guess, UDP.payload_guess = [], []
    try:
        yield
    finally:
        TCP.payload_guess, UDP.payload_guess = saved


def scapy_rebuild(raw: bytes, linktype: int) -> bytes | None:
    """The packet as scapy rebuilds it with every length and checksum on the way to the
    outermost TCP/UDP payload recomputed (a UDP/IPv4 checksum of 0 stays 0); None for a link
    type scapy does not know."""
    from scapy.config import conf
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot3
    from scapy.layers.ppp import PPPoE
    from scapy.packet import NoPayload

    if linktype not in conf.l2types.num2layer:
        return None
    with _l4_payloads_raw():
        pkt = conf.l2types[linktype](raw)
        layer, v4 = pkt, None
        while not isinstance(layer, NoPayload):
            if isinstance(layer, (Dot3, PPPoE)):
                layer.len = None
            elif isinstance(layer, IP) and v4 is None:
                layer.len = layer.chksum = None
                v4 = True
            elif isinstance(layer, IPv6) and v4 is None:
                layer.plen = None
                v4 = False
            elif isinstance(layer, (TCP, UDP)) and v4 is not None:
                if isinstance(layer, UDP):
                    layer.len = None
                if not (isinstance(layer, UDP) and layer.chksum == 0):
                    layer.chksum = None
                break
            layer = layer.payload
        return bytes(pkt)


def scapy_disagreements(batch: PacketBatch, rows=None) -> list[int]:
    """The packets (of ``rows``) whose lengths and checksums scapy would write otherwise."""
    lts = batch.linktypes
    rows = range(len(batch)) if rows is None else rows
    return [
        int(i)
        for i in rows
        if scapy_rebuild(batch.packet(int(i)).tobytes(), int(lts[i]))
        != batch.packet(int(i)).tobytes()
    ]


def scapy_still_agrees(before: PacketBatch, after: PacketBatch) -> list[int]:
    """Of the packets scapy found valid in ``before``, those it finds invalid in ``after``."""
    rows = [i for i in range(len(before)) if i not in set(scapy_disagreements(before))]
    return scapy_disagreements(after, rows)


# -- the largest packets, on every link type the payload services know -----------------------
def ip4(total: int, tcp: bool = False, fill=None):
    """An IPv4 UDP (or TCP) packet of ``total`` bytes (65,535 at most); ``fill(n)`` makes the
    payload (default: one repeated byte)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.packet import Raw

    l4 = TCP(sport=40000, dport=80, flags="PA") if tcp else UDP(sport=40000, dport=5001)
    n = total - 20 - len(l4)
    return IP(src="198.51.100.1", dst="203.0.113.9") / l4 / Raw((fill or _same)(n))


def ip6(payload_length: int, fill=None):
    """An IPv6 UDP packet whose payload length field is ``payload_length`` (65,535 at most)."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    return (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / UDP(sport=5, dport=6)
        / Raw((fill or _same)(payload_length - 8))
    )


def _same(n: int) -> bytes:
    return b"q" * n


VLAN, PPPOE = 0x8100, 0x8864  # not link types: Ethernet with a VLAN tag, with a PPPoE session


def on_link(kind: int, ip) -> bytes:
    """``ip`` behind the link-layer header of ``kind`` (a link type, or VLAN or PPPOE)."""
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, Dot1Q
    from scapy.layers.ppp import PPP, PPPoE

    v6 = IPv6 in ip
    if kind == 1:
        return bytes(eth() / ip)
    if kind == VLAN:
        return bytes(eth() / Dot1Q(vlan=7) / ip)
    if kind == PPPOE:
        return bytes(eth() / PPPoE(sessionid=9) / PPP(proto=0x57 if v6 else 0x21) / ip)
    if kind == 113:
        return bytes(CookedLinux(proto=0x86DD if v6 else 0x0800) / ip)
    if kind == 0:
        return (30 if v6 else 2).to_bytes(4, "little") + bytes(ip)
    return bytes(ip)  # 101 (raw), 228 (IPv4), 229 (IPv6)


# (kind, the batch's link type, the largest IP packet the link carries: a PPPoE session's
# length field counts the 2-byte PPP protocol too)
LINKS = [
    (1, 1, 65535),
    (VLAN, 1, 65535),
    (PPPOE, 1, 65533),
    (113, 113, 65535),
    (0, 0, 65535),
    (101, 101, 65535),
    (228, 228, 65535),
    (229, 229, 65535),
]


def too_large_and_small(fill=None) -> tuple[PacketBatch, int]:
    """On every link type of ``LINKS``, the largest IPv4 UDP and TCP packets and (where IPv6
    goes) the largest IPv6 UDP packet, each between small packets; and how many large ones.
    A payload that grows by a byte no longer fits any of the large packets."""
    batches, large = [], 0
    for kind, linktype, biggest in LINKS:
        ips = [] if kind == 229 else [ip4(biggest, fill=fill), ip4(biggest, True, fill)]
        if kind != 228:
            ips.append(ip6(biggest - 40 if kind == PPPOE else 65535, fill))
        small = on_link(kind, ip6(100) if kind == 229 else ip4(200))
        pkts = [small]
        for ip in ips:
            pkts += [on_link(kind, ip), small]
        large += len(ips)
        batches.append(PacketBatch.from_packets(pkts, linktype=linktype))
    return PacketBatch.concat(batches), large
