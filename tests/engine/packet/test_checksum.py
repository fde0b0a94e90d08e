"""The Internet checksum: both twins against the naive reference and against scapy."""

from __future__ import annotations

import warnings

import naive
import numpy as np
import pytest
from capture_craft import corpus_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.capture import backend
from engine.capture.batch import PacketBatch
from engine.packet import checksum_py
from engine.packet.checksum import (
    BAD,
    GOOD,
    MALFORMED,
    NO_CHECKSUM,
    NONE,
    TRUNCATED,
    internet_checksum,
    ones_complement_sum,
    recompute_checksums,
    verify_checksums,
)
from engine.packet.flowkeys import flow_keys

# Explicit addresses: left out, scapy would look the MAC of the IP destination up (ARP).
MACS = {"dst": "02:00:00:00:00:01", "src": "02:00:00:00:00:02"}


def _impl_id(mod) -> str:
    return "cython" if mod.__name__.startswith("ext.") else "pure"


@pytest.fixture(scope="module", params=backend.variants("checksum"), ids=_impl_id)
def impl(request):
    return request.param


def writable(batch: PacketBatch) -> PacketBatch:
    """A copy of ``batch`` with its own buffer, packets back to back."""
    c = batch.compact()
    return PacketBatch(
        c.data.copy(), c.offsets, c.caplen, c.origlen, c.ts_ns, c.iface, c.interfaces, c.first_seq
    )


def check_against_naive(impl, batch: PacketBatch) -> tuple:
    """Verify and recompute ``batch`` (a copy) with ``impl``; compare with the naive version."""
    keys = flow_keys(batch)
    linktypes = batch.linktypes
    want = [
        naive.checksum_status(
            bytes(batch.packet(i)), naive.flow_keys(bytes(batch.packet(i)), int(linktypes[i]))
        )
        for i in range(len(batch))
    ]
    seen = verify_checksums(batch, keys, impl=impl)
    fixed = writable(batch)
    before = recompute_checksums(fixed, keys, impl=impl)
    assert np.array_equal(seen.ip, before.ip) and np.array_equal(seen.l4, before.l4)
    assert [(int(a), int(b)) for a, b in zip(seen.ip, seen.l4, strict=True)] == [
        (ip, l4) for ip, l4, _ in want
    ]
    assert [bytes(fixed.packet(i)) for i in range(len(fixed))] == [w[2] for w in want]
    return seen, fixed


# -- the sum itself ----------------------------------------------------------------------------


def test_rfc1071_example(impl):
    # RFC 1071 section 3: these eight bytes sum to 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_complement_sum(data, impl=impl) == 0xDDF2
    assert internet_checksum(data, impl=impl) == 0x220D
    assert internet_checksum(data + bytes.fromhex("220d"), impl=impl) == 0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_sum_matches_naive(impl, data, draws):
    start = draws.draw(st.integers(0, len(data)))
    length = draws.draw(st.integers(0, len(data) - start))
    initial = draws.draw(st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0, 1 << 80)))
    piece = data[start : start + length]
    assert ones_complement_sum(
        data, start, length, initial, impl=impl
    ) == naive.ones_complement_sum(piece, initial)
    assert internet_checksum(data, start, length, initial, impl=impl) == naive.internet_checksum(
        piece, initial
    )


def test_long_buffers_and_every_alignment(impl):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 70_001, dtype=np.uint8)
    for start in range(9):
        for length in (0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 1499, 65535, 70_001 - start - 1):
            want = naive.internet_checksum(bytes(data[start : start + length]))
            assert internet_checksum(data, start, length, impl=impl) == want


def test_all_ones_and_all_zeros(impl):
    assert ones_complement_sum(b"", impl=impl) == 0
    assert ones_complement_sum(b"\0" * 10, impl=impl) == 0
    assert ones_complement_sum(b"\xff" * 10, impl=impl) == 0xFFFF
    assert ones_complement_sum(b"", 0, 0, 0xFFFF, impl=impl) == 0xFFFF
    assert ones_complement_sum(b"", 0, 0, 0x10000, impl=impl) == 1


def test_accepts_any_bytes_like(impl):
    data = bytes(range(50))
    want = naive.internet_checksum(data)
    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert internet_checksum(buf, impl=impl) == want


def test_rejects_regions_outside_the_buffer(impl):
    for start, length in ((-1, 2), (0, 11), (11, 0), (5, -1)):
        with pytest.raises(ValueError, match="outside"):
            internet_checksum(b"\0" * 10, start, length, impl=impl)
    with pytest.raises(ValueError, match="non-negative"):
        internet_checksum(b"\0" * 10, 0, 10, -1, impl=impl)


def test_status_values_are_the_same_in_both_twins():
    for mod in backend.variants("checksum"):
        for name in ("NONE", "GOOD", "BAD", "TRUNCATED", "NO_CHECKSUM", "MALFORMED"):
            assert getattr(mod, name) == getattr(checksum_py, name)


# -- packets, with scapy as the oracle ---------------------------------------------------------


@st.composite
def scapy_packets(draw):
    """Ethernet (maybe VLAN-tagged) packets with checksums scapy computed."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
    from scapy.layers.inet6 import (
        ICMPv6EchoRequest,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        IPv6ExtHdrSegmentRouting,
    )
    from scapy.layers.l2 import Dot1Q, Ether

    version = draw(st.sampled_from([4, 6]))
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    payload = draw(st.binary(max_size=40))
    ports = dict(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535)))
    if kind == "tcp":
        l4 = TCP(
            **ports,
            seq=draw(st.integers(0, 2**32 - 1)),
            options=[("NOP", None)] * draw(st.integers(0, 4)),
        )
    elif kind == "udp":
        l4 = UDP(**ports)
    else:
        l4 = ICMP(id=ports["sport"]) if version == 4 else ICMPv6EchoRequest(id=ports["sport"])
    if version == 4:
        host = st.integers(0, 2**32 - 1).map(
            lambda v: ".".join(str(v >> s & 255) for s in (24, 16, 8, 0))
        )
        ip = IP(
            src=draw(host),
            dst=draw(host),
            id=draw(st.integers(0, 65535)),
            options=[IPOption_NOP()] * draw(st.integers(0, 8)),
        )
    else:
        host = st.binary(min_size=16, max_size=16).map(
            lambda b: ":".join(b[i : i + 2].hex() for i in range(0, 16, 2))
        )
        ip = IPv6(src=draw(host), dst=draw(host))
        for ext in draw(
            st.lists(st.sampled_from([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt]), max_size=2)
        ):
            ip = ip / ext()
        # A routing header: with segments left, the pseudo-header's destination is the final
        # one (RFC 8200 8.1), which scapy takes from it.
        routing = draw(st.sampled_from([None, "type0", "srh"]))
        if routing is not None:
            hops = draw(st.lists(host, min_size=1, max_size=3))
            left = draw(st.integers(0, len(hops)))
            ext = (
                IPv6ExtHdrRouting(addresses=hops, segleft=left)
                if routing == "type0"
                else IPv6ExtHdrSegmentRouting(addresses=hops, segleft=left)
            )
            ip = ip / ext
    link = Ether(**MACS) / Dot1Q(vlan=7) if draw(st.booleans()) else Ether(**MACS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(link / ip / l4 / payload)


_SLOW = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SLOW
@given(scapy_packets())
def test_scapy_checksums_verify_and_survive_recomputation(impl, packet):
    batch = PacketBatch.from_packets([packet])
    seen, fixed = check_against_naive(impl, batch)
    assert seen.l4[0] == GOOD
    assert seen.ip[0] in (GOOD, NONE)
    assert bytes(fixed.packet(0)) == packet


@_SLOW
@given(scapy_packets(), st.data())
def test_corrupted_checksums_are_found_and_fixed(impl, packet, data):
    keys = flow_keys(PacketBatch.from_packets([packet])).row(0)
    # Flip a byte the transport checksum covers, past its header (so the keys stay the same).
    start = keys["l4_off"] + 8
    if start >= len(packet):
        return
    at = data.draw(st.integers(start, len(packet) - 1))
    bad = bytearray(packet)
    bad[at] ^= data.draw(st.integers(1, 255))
    batch = PacketBatch.from_packets([bytes(bad)])
    seen, fixed = check_against_naive(impl, batch)
    assert seen.l4[0] == BAD
    # Recomputed, it verifies.
    assert verify_checksums(fixed, impl=impl).l4[0] == GOOD


@_SLOW
@given(scapy_packets(), st.data())
def test_mutated_and_truncated_packets_match_naive(impl, packet, data):
    buf = bytearray(packet)
    for _ in range(data.draw(st.integers(0, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    check_against_naive(impl, PacketBatch.from_packets([bytes(buf[:cut])]))


def test_special_cases(impl):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    zero4 = bytearray(bytes(Ether(**MACS) / IP() / UDP() / b"data"))
    zero4[14 + 20 + 6 : 14 + 20 + 8] = b"\0\0"
    zero6 = bytearray(bytes(Ether(**MACS) / IPv6() / UDP() / b"data"))
    zero6[14 + 40 + 6 : 14 + 40 + 8] = b"\0\0"
    good6 = bytes(Ether(**MACS) / IPv6() / UDP() / b"data")
    whole = bytes(Ether(**MACS) / IP() / UDP() / (b"x" * 100))
    short_ip = bytearray(whole)
    short_ip[16:18] = (20 + 4).to_bytes(2, "big")  # IP total length leaves no room for UDP
    batch = PacketBatch.from_packets(
        [bytes(zero4), bytes(zero6), whole[:60], bytes(short_ip), b"\0" * 30]
    )
    seen, fixed = check_against_naive(impl, batch)
    assert seen.l4.tolist() == [NO_CHECKSUM, BAD, TRUNCATED, MALFORMED, NONE]
    assert bytes(fixed.packet(0)) == bytes(zero4)  # no checksum stays no checksum
    assert bytes(fixed.packet(1)) == good6
    assert bytes(fixed.packet(2)) == whole[:60]  # what was not captured cannot be summed


def test_recompute_needs_a_writable_buffer(impl):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    batch = PacketBatch.from_packets([bytes(Ether(**MACS) / IP() / UDP())])
    received = PacketBatch.from_frames([bytes(f) for f in batch.to_frames()])
    assert verify_checksums(received, impl=impl).l4[0] == GOOD
    with pytest.raises(ValueError, match="writable"):
        recompute_checksums(received, impl=impl)
    keys = flow_keys(received)
    with pytest.raises(ValueError, match="writable"):
        impl.checksum_packets(
            received.data,
            received.offsets,
            received.caplen,
            keys.family,
            keys.proto,
            keys.l3_off,
            keys.l4_off,
            keys.fragment,
            True,
            np.zeros(1, np.uint8),
            np.zeros(1, np.uint8),
        )


def test_recompute_through_a_view_changes_the_shared_buffer(impl):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkts = [
        bytearray(bytes(Ether(**MACS) / IP(dst=f"10.0.0.{i}") / TCP(dport=i))) for i in range(4)
    ]
    for p in pkts:
        p[-1] ^= 0xFF  # break every TCP checksum
    batch = PacketBatch.from_packets([bytes(p) for p in pkts])
    view = batch.take([3, 1])
    assert recompute_checksums(view, impl=impl).l4.tolist() == [BAD, BAD]
    assert verify_checksums(batch, impl=impl).l4.tolist() == [BAD, GOOD, BAD, GOOD]


def test_rejects_keys_of_another_batch(impl):
    batch = PacketBatch.from_packets([b"\0" * 20] * 3)
    with pytest.raises(ValueError, match="flow keys for 2"):
        verify_checksums(batch, flow_keys(batch[:2]), impl=impl)


# -- real captures -----------------------------------------------------------------------------


def readable_captures() -> list:
    """The corpus captures the reader accepts and that hold IP."""
    return corpus_params(lambda batch: flow_keys(batch).family.any())


@pytest.mark.parametrize("path", readable_captures())
def test_corpus_against_naive_and_scapy(impl, path):
    import scapy.all  # noqa: F401  (every layer binding)
    from scapy.config import conf
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, _ICMPv6
    from scapy.packet import NoPayload

    from engine import read_capture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = read_capture(path, errors="truncate")
    seen, fixed = check_against_naive(impl, batch)
    keys = flow_keys(batch)
    for i in range(len(batch)):
        ip_known, l4_known = seen.ip[i] in (GOOD, BAD), seen.l4[i] in (GOOD, BAD)
        if not (ip_known or l4_known):
            continue
        # scapy recomputes the checksums we can: its bytes must be ours.
        pkt = conf.l2types[int(batch.linktypes[i])](bytes(batch.packet(i)))
        ip = pkt.getlayer(IP if keys.family[i] == 4 else IPv6)
        if ip_known:
            del ip.chksum
        if l4_known:
            t = ip.payload
            while not isinstance(t, (TCP, UDP, ICMP, _ICMPv6, NoPayload)):
                t = t.payload
            if isinstance(t, NoPayload):
                continue  # behind AH, where scapy does not look
            if isinstance(t, _ICMPv6):
                del t.cksum
            else:
                del t.chksum
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert bytes(pkt) == bytes(fixed.packet(i)), f"packet {i}"
