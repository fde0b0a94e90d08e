"""Flow-key extraction: both twins against the naive reference, scapy, and arbitrary bytes."""

from __future__ import annotations

import socket
import struct
import warnings
from pathlib import Path

import naive
import numpy as np
import pytest
from capture_craft import corpus_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.capture import backend
from engine.capture.batch import Interface, PacketBatch
from engine.packet.flowkeys import FlowKeys, extract, flow_keys

# Explicit addresses: left out, scapy would look the MAC of the IP destination up (ARP).
MACS = {"dst": "02:00:00:00:00:01", "src": "02:00:00:00:00:02"}
SUPPORTED = (0, 1, 101, 108, 113, 228, 229, 276)
LINKTYPES = (*SUPPORTED, 9, 105, 127, 12345)  # and a few we do not parse


def _impl_id(mod) -> str:
    return "cython" if mod.__name__.startswith("ext.") else "pure"


@pytest.fixture(scope="module", params=backend.variants("flowkeys"), ids=_impl_id)
def impl(request):
    return request.param


def make_batch(packets: list[bytes], linktypes: list[int]) -> PacketBatch:
    """A batch whose packets each have their own link type (one interface per type)."""
    kinds = sorted(set(linktypes)) or [1]
    iface = np.array([kinds.index(lt) for lt in linktypes], np.uint32)
    caplen = np.array([len(p) for p in packets], np.uint32)
    offsets = (
        np.concatenate([[0], np.cumsum(caplen[:-1], dtype=np.int64)])
        if packets
        else np.zeros(0, np.int64)
    )
    data = np.frombuffer(b"".join(packets), np.uint8).copy()
    return PacketBatch(
        data,
        offsets,
        caplen,
        caplen.copy(),
        np.zeros(len(packets), np.int64),
        iface,
        [Interface(lt) for lt in kinds],
    )


def rows(keys: FlowKeys) -> list[dict]:
    return [keys.row(i) for i in range(len(keys))]


def check_against_naive(impl, packets: list[bytes], linktypes: list[int]) -> list[dict]:
    got = rows(flow_keys(make_batch(packets, linktypes), impl=impl))
    want = [naive.flow_keys(p, lt) for p, lt in zip(packets, linktypes, strict=True)]
    assert got == want
    return got


# -- packets built from known fields -----------------------------------------------------------

ETHERTYPE = {4: 0x0800, 6: 0x86DD}


def link_prefix(lt: int, version: int, tpids: list[int], encap: str, af: int, order: str) -> bytes:
    """Link header (and tags, shims) in front of an IP packet of ``version``."""
    if lt in (0, 108):
        return struct.pack(order + "I", af)
    if lt in (101, 228, 229):
        return b""
    if encap == "pppoe":
        final, shim = (
            0x8864,
            b"\x11\x00\x12\x34\x00\x40" + struct.pack(">H", 0x21 if version == 4 else 0x57),
        )
    elif encap == "mpls":
        shim = struct.pack(">II", (100 << 12) | 64, (200 << 12) | 0x100 | 64)
        final = 0x8847
    elif encap == "snap":
        final, shim = 64, b"\xaa\xaa\x03\x00\x00\x00" + struct.pack(">H", ETHERTYPE[version])
    else:
        final, shim = ETHERTYPE[version], b""
    types = [*tpids, final]
    chain = struct.pack(">H", types[0])
    for t in types[1:]:
        chain += struct.pack(">HH", 0x2005, t)  # a TCI, then the next type
    if lt == 1:
        return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + chain + shim
    if lt == 113:
        return struct.pack(">HHH8s", 0, 1, 6, b"\x02\0\0\0\0\x01") + chain + shim
    # SLL2: protocol, reserved, ifindex, hatype, pkttype, halen, address
    return (
        chain[:2] + struct.pack(">HIHBB8s", 0, 3, 1, 0, 6, b"\x02\0\0\0\0\x01") + chain[2:] + shim
    )


@st.composite
def crafted(draw):
    """(packet bytes, link type, the flow keys it was built with)."""
    from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
    from scapy.layers.inet6 import (
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
    )
    from scapy.layers.ipsec import AH
    from scapy.layers.sctp import SCTP
    from scapy.packet import Raw

    lt = draw(st.sampled_from(SUPPORTED))
    version = 4 if lt == 228 else 6 if lt == 229 else draw(st.sampled_from([4, 6]))
    tpids = draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=3))
    encap = draw(st.sampled_from(["none", "none", "pppoe", "mpls", "snap"]))
    af = 2 if version == 4 else draw(st.sampled_from([24, 28, 30]))
    order = draw(st.sampled_from(["<", ">"]))
    link = link_prefix(lt, version, tpids, encap, af, order)

    alen = 4 if version == 4 else 16
    src = draw(st.binary(min_size=alen, max_size=alen))
    dst = draw(st.binary(min_size=alen, max_size=alen))
    kind = draw(st.sampled_from(["tcp", "udp", "sctp", "icmp", "other"]))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    icmp_type, icmp_code = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    frag = draw(st.sampled_from(["none", "none", "first", "later", "atomic"]))
    with_ah = draw(st.booleans()) and frag != "later"
    payload = draw(st.binary(max_size=16))

    number = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1 if version == 4 else 58, "other": 47}[
        kind
    ]
    if kind == "tcp":
        l4 = TCP(sport=sport, dport=dport, options=[("NOP", None)] * draw(st.integers(0, 8)))
    elif kind == "udp":
        l4 = UDP(sport=sport, dport=dport)
    elif kind == "sctp":
        l4 = SCTP(sport=sport, dport=dport)
    elif kind == "icmp":
        l4 = Raw(bytes([icmp_type, icmp_code]) + b"\0" * 6)
    else:
        l4 = Raw(b"\0\0\x08\x00")
    upper = l4 / Raw(payload) if payload else l4
    first = number
    if with_ah:
        upper = AH(nh=number, payloadlen=4, icv=b"\0" * 12) / upper
        first = 51
    if version == 4:
        flags, offset = {
            "none": (0, 0),
            "atomic": (0, 0),
            "first": (1, 0),
            "later": (draw(st.integers(0, 1)), draw(st.integers(1, 8191))),
        }[frag]
        ip = (
            IP(
                src=socket.inet_ntop(socket.AF_INET, src),
                dst=socket.inet_ntop(socket.AF_INET, dst),
                proto=first,
                flags=flags,
                frag=offset,
                options=[IPOption_NOP()] * draw(st.integers(0, 12)),
            )
            / upper
        )
    else:
        exts = draw(st.lists(st.sampled_from(["hbh", "rt", "dst"]), max_size=3))
        chain = []
        for e in exts:
            chain.append(
                {"hbh": IPv6ExtHdrHopByHop, "rt": IPv6ExtHdrRouting, "dst": IPv6ExtHdrDestOpt}[e]()
            )
        if frag != "none":
            offset = draw(st.integers(1, 8191)) if frag == "later" else 0
            more = 1 if frag == "first" else 0 if frag == "atomic" else draw(st.integers(0, 1))
            chain.append(IPv6ExtHdrFragment(offset=offset, m=more))
        nxt = first
        for h in reversed(chain):
            h.nh = nxt
            nxt = {
                IPv6ExtHdrHopByHop: 0,
                IPv6ExtHdrRouting: 43,
                IPv6ExtHdrDestOpt: 60,
                IPv6ExtHdrFragment: 44,
            }[type(h)]
        ip = IPv6(
            src=socket.inet_ntop(socket.AF_INET6, src),
            dst=socket.inet_ntop(socket.AF_INET6, dst),
            nh=nxt,
        )
        for h in chain:
            ip = ip / h
        ip = ip / upper
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip_bytes = bytes(ip)
        upper_len = len(bytes(upper)) if frag != "later" else 0
    l3 = len(link)
    later = frag == "later"
    expected = {
        "family": version,
        "proto": first if later else number,
        "src": src,
        "dst": dst,
        "sport": 0,
        "dport": 0,
        "l3_off": l3,
        "l4_off": -1,
        "payload_off": -1,
        "fragment": {"none": 0, "atomic": 0, "first": 1, "later": 2}[frag],
    }
    if with_ah:
        upper_len -= 24
    if not later:
        l4_off = l3 + len(ip_bytes) - upper_len
        expected["l4_off"] = l4_off
        if kind in ("tcp", "udp", "sctp"):
            expected["sport"], expected["dport"] = sport, dport
        elif kind == "icmp":
            expected["sport"], expected["dport"] = icmp_type, icmp_code
        size = {"tcp": len(bytes(l4)), "udp": 8, "sctp": 12, "icmp": 8}.get(kind)
        if size:
            expected["payload_off"] = l4_off + size
    return link + ip_bytes, lt, expected


# -- the tests ---------------------------------------------------------------------------------

_SLOW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SLOW
@given(crafted())
def test_crafted_packets_give_the_fields_they_were_built_with(impl, case):
    packet, lt, expected = case
    got = check_against_naive(impl, [packet], [lt])
    assert got == [expected]


@_SLOW
@given(crafted(), st.data())
def test_truncated_packets_yield_what_is_there(impl, case, data):
    packet, lt, expected = case
    cut = data.draw(st.integers(0, len(packet)))
    got = check_against_naive(impl, [packet[:cut]], [lt])[0]
    # Whatever survives the cut agrees with the whole packet.
    assert got["family"] in (0, expected["family"])
    if got["family"]:
        assert (got["src"], got["dst"], got["l3_off"]) == (
            expected["src"],
            expected["dst"],
            expected["l3_off"],
        )
    for field in ("l4_off", "payload_off"):
        assert got[field] in (-1, expected[field])
    if got["l4_off"] != -1:
        assert got["proto"] == expected["proto"]
    assert got["sport"] in (0, expected["sport"])
    assert got["dport"] in (0, expected["dport"])


@_SLOW
@given(crafted(), st.data())
def test_mutated_packets_match_the_naive_reference(impl, case, data):
    packet, lt, _ = case
    buf = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        if buf:
            buf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    check_against_naive(impl, [bytes(buf[:cut])], [lt])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=96), st.sampled_from(LINKTYPES)), max_size=8))
def test_random_bytes_never_crash_and_twins_agree(packets):
    got = [
        rows(flow_keys(make_batch([p for p, _ in packets], [lt for _, lt in packets]), impl=mod))
        for mod in backend.variants("flowkeys")
    ]
    want = [naive.flow_keys(p, lt) for p, lt in packets]
    for g in got:
        assert g == want


@_SLOW
@given(crafted(), st.data())
def test_never_reads_past_caplen(impl, case, data):
    packet, lt, _ = case
    cut = data.draw(st.integers(0, len(packet)))
    trailer = data.draw(st.binary(min_size=1, max_size=64))
    # The whole packet then more bytes lie in the buffer, but only ``cut`` bytes are captured.
    buf = np.frombuffer(packet + trailer, np.uint8)
    keys = extract(buf, [0], [cut], lt, impl=impl)
    assert keys.row(0) == naive.flow_keys(packet[:cut], lt)


def test_link_layers_and_tags(impl):
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

    v4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80))
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=53, dport=5353))
    cases = [
        (bytes(Ether(**MACS) / Dot1AD(vlan=10) / Dot1Q(vlan=20, type=0x0800)) + v4, 1),
        (bytes(Ether(type=0x9100, **MACS) / Dot1Q(vlan=20, type=0x0800)) + v4, 1),
        (b"\x02\x00\x00\x00" + v4, 0),
        (b"\x00\x00\x00\x02" + v4, 0),
        (b"\x00\x00\x00\x1e" + v6, 108),
        (b"\x1c\x00\x00\x00" + v6, 108),
        (b"\x18\x00\x00\x00" + v6, 0),
        (v4, 101),
        (v6, 101),
        (v4, 228),
        (v6, 229),
        (b"\x07\x00\x00\x00" + v4, 0),  # AF 7 is OSI: not IP
    ]
    got = check_against_naive(impl, [p for p, _ in cases], [lt for _, lt in cases])
    assert [g["family"] for g in got] == [4, 4, 4, 4, 6, 6, 6, 4, 6, 4, 6, 0]
    assert all(g["sport"] == 1234 and g["dport"] == 80 for g in got if g["family"] == 4)
    assert all(g["sport"] == 53 and g["dport"] == 5353 for g in got if g["family"] == 6)
    assert got[0]["l3_off"] == 22 and got[0]["l4_off"] == 42 and got[0]["payload_off"] == 62


def test_ipv4_in_ipv6_clothing_is_not_ip(impl):
    # The ethertype says IPv4 but the version nibble says 6: not a packet we can key.
    pkt = b"\0" * 12 + b"\x08\x00" + b"\x60" + b"\0" * 39
    assert check_against_naive(impl, [pkt], [1])[0]["family"] == 0


def test_empty_batch(impl):
    keys = flow_keys(PacketBatch.empty(), impl=impl)
    assert len(keys) == 0 and keys.src.shape == (0, 16)


def test_views_and_read_only_buffers(impl):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pkts = [
        bytes(Ether(**MACS) / IP(src=f"10.0.0.{i}") / UDP(sport=i, dport=2 * i)) for i in range(6)
    ]
    batch = PacketBatch.from_packets(pkts)
    received = PacketBatch.from_frames([bytes(f) for f in batch.to_frames()])
    assert not received.data.flags.writeable
    assert flow_keys(received, impl=impl).equals(flow_keys(batch, impl=impl))
    picked = batch.take([5, 1, 3])
    assert list(flow_keys(picked, impl=impl).sport) == [5, 1, 3]


def test_rejects_packets_outside_the_buffer(impl):
    with pytest.raises(ValueError, match="outside"):
        extract(np.zeros(10, np.uint8), [4], [7], 1, impl=impl)
    with pytest.raises(ValueError, match="differ in length"):
        extract(np.zeros(10, np.uint8), [0, 1], [1], 1, impl=impl)


def test_twin_rejects_mismatched_outputs(impl):
    out = FlowKeys.allocate(1)
    with pytest.raises(ValueError):
        impl.extract_flow_keys(
            np.zeros(4, np.uint8),
            np.zeros(2, np.int64),
            np.zeros(2, np.uint32),
            np.ones(2, np.uint32),
            out.family,
            out.proto,
            out.src,
            out.dst,
            out.sport,
            out.dport,
            out.l3_off,
            out.l4_off,
            out.payload_off,
            out.fragment,
        )


# -- real captures, with scapy as the independent oracle ---------------------------------------


def readable_captures() -> list:
    """The corpus captures the reader accepts."""
    return corpus_params()


def read(path: Path) -> PacketBatch:
    from engine import read_capture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_capture(path, errors="truncate")


def scapy_keys(raw: bytes, linktype: int) -> dict | None:
    """What scapy's dissection says about the fields we extract (None: scapy cannot say)."""
    import scapy.all  # noqa: F401  (every layer binding, e.g. PPPoE/PPP, must be loaded)
    from scapy.config import conf
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import (
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        _ICMPv6,
    )
    from scapy.layers.ipsec import AH
    from scapy.layers.sctp import SCTP
    from scapy.packet import NoPayload

    cls = conf.l2types.get(linktype)
    if cls is None:
        return None
    pkt = cls(raw)
    ip = pkt
    while not isinstance(ip, NoPayload) and type(ip) not in (IP, IPv6):
        ip = ip.payload
    if isinstance(ip, NoPayload):
        return {"family": 0}

    def off(layer) -> int:
        return len(raw) - len(bytes(layer))

    v4 = isinstance(ip, IP)
    want = {
        "family": 4 if v4 else 6,
        "l3_off": off(ip),
        "src": socket.inet_pton(socket.AF_INET if v4 else socket.AF_INET6, ip.src),
        "dst": socket.inet_pton(socket.AF_INET if v4 else socket.AF_INET6, ip.dst),
    }
    last, t = ip, ip.payload
    while isinstance(
        t, (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment)
    ):
        last, t = t, t.payload
    if isinstance(t, AH):
        return want  # scapy does not look behind AH
    frag_offset = ip.frag if v4 else last.offset if isinstance(last, IPv6ExtHdrFragment) else 0
    more = ip.flags.MF if v4 else last.m if isinstance(last, IPv6ExtHdrFragment) else 0
    want["fragment"] = 2 if frag_offset else 1 if more else 0
    want["proto"] = ip.proto if v4 else last.nh
    if frag_offset:
        want.update(sport=0, dport=0, l4_off=-1, payload_off=-1)
    elif isinstance(t, (TCP, UDP, SCTP)):
        want.update(
            sport=t.sport,
            dport=t.dport,
            l4_off=off(t),
            payload_off=len(raw) if isinstance(t.payload, NoPayload) else off(t.payload),
        )
    elif isinstance(t, (ICMP, _ICMPv6)):
        want.update(sport=t.type, dport=t.code, l4_off=off(t))
    return want


@pytest.mark.parametrize("path", readable_captures())
def test_corpus_against_scapy_and_naive(impl, path):
    batch = read(path)
    keys = flow_keys(batch, impl=impl)
    linktypes = batch.linktypes
    compared = 0
    for i in range(len(batch)):
        raw = bytes(batch.packet(i))
        lt = int(linktypes[i])
        got = keys.row(i)
        assert got == naive.flow_keys(raw, lt), f"packet {i}"
        if lt not in SUPPORTED:
            assert got["family"] == 0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = scapy_keys(raw, lt)
        if want is None:
            continue
        assert {k: got[k] for k in want} == want, f"packet {i}"
        compared += 1
    assert compared or not set(linktypes.tolist()) & set(SUPPORTED)
