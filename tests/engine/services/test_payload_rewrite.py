"""The payload-rewriting machinery: lengths and checksums fixed incrementally, exact undo."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from payload_oracle import (
    break_checksums,
    copy_batch,
    eth,
    need_corpus,
    packets,
    read_only,
    scapy_disagreements,
    scapy_rebuild,
    scapy_still_agrees,
    traffic,
)
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import LLC, SNAP, CookedLinux, Dot1Q, Dot3, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Raw

from engine.capture.batch import Interface, PacketBatch
from engine.packet.checksum import recompute_checksums, verify_checksums
from engine.services.payload import FLAG_IP_FFFF, FLAG_L4_FFFF, Payloads, replace, select


def wrap(batch: PacketBatch) -> PacketBatch:
    """A reversible rewrite that keeps the checksum-form flags inside the payload, as the
    services do: ``0xA5, flags, payload, 'Z'``."""
    sel = select(batch)
    pieces = [
        b"\xa5" + bytes([f]) + bytes(p) + b"Z"
        for p, f in zip(sel.payloads.views(), sel.payloads.flags.tolist())
    ]
    return replace(sel, Payloads.pack(pieces))[0]


def unwrap(batch: PacketBatch) -> PacketBatch:
    sel = select(batch)
    views = sel.payloads.views()
    flags = [v[1] for v in views]
    return replace(sel, Payloads.pack([v[2:-1] for v in views], flags))[0]


def same_status(a: PacketBatch, b: PacketBatch) -> bool:
    sa, sb = verify_checksums(a), verify_checksums(b)
    return np.array_equal(sa.ip, sb.ip) and np.array_equal(sa.l4, sb.l4)


def test_unchanged_payloads_give_the_same_packets_in_a_new_buffer():
    batch = read_only(traffic(2000))
    sel = select(batch)
    out, done = replace(sel, Payloads.pack([bytes(v) for v in sel.payloads.views()]))
    assert done.all() and len(sel) > 1000
    assert out.data is not batch.data and out.data.flags.writeable
    assert out.same_packets(batch)


def test_rewritten_packets_are_valid_and_match_a_full_recompute():
    batch = traffic(2000)
    out = wrap(batch)
    assert verify_checksums(out).all_good()
    assert not np.array_equal(out.caplen, batch.caplen)
    assert np.array_equal(out.origlen, out.caplen)
    full = copy_batch(out)
    recompute_checksums(full)
    assert np.array_equal(full.data, out.data), "incremental and full checksums differ"
    assert unwrap(out).same_packets(batch)


def test_scapy_sees_valid_lengths_and_checksums():
    batch = traffic(400, seed=3)
    out = wrap(batch)
    assert scapy_disagreements(batch) == []
    assert scapy_disagreements(out) == []


def test_wrong_checksums_stay_exactly_as_wrong_and_come_back():
    batch = break_checksums(traffic(3000), seed=1)
    status = verify_checksums(batch)
    assert (status.ip == 2).sum() > 100 and (status.l4 == 2).sum() > 300
    sel = select(batch)
    assert (sel.payloads.flags & FLAG_L4_FFFF).any() and (sel.payloads.flags & FLAG_IP_FFFF).any()
    out = wrap(batch)
    assert same_status(batch, out)
    assert unwrap(out).same_packets(batch)


def test_sequence_numbers_timestamps_and_interfaces_are_kept():
    batch = traffic(500).take(np.arange(499, -1, -2))
    batch = PacketBatch(
        batch.data,
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.ts_ns,
        np.arange(len(batch)) % 2,
        (Interface(1), Interface(1, 9000)),
        first_seq=17,
        seq=batch.seq,
    )
    out = wrap(batch)
    assert np.array_equal(out.seq, batch.seq) and out.first_seq == 17
    assert np.array_equal(out.ts_ns, batch.ts_ns) and np.array_equal(out.iface, batch.iface)
    assert out.interfaces == batch.interfaces


def _batch(*pkts, linktype=1) -> PacketBatch:
    return PacketBatch.from_packets([bytes(p) for p in pkts], linktype=linktype)


def test_what_cannot_be_rewritten_passes_unchanged_and_is_counted():
    big = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=6) / Raw(b"x" * 3000)
    frags = fragment(big, fragsize=1000)
    pkts = [eth() / f for f in frags]
    pkts += [
        eth() / IP() / TCP(flags="A"),  # empty
        eth() / IPv6() / UDP(),  # empty
        eth(type=0x0806) / Raw(b"\x00" * 28),  # not IP
        eth() / IP() / Raw(b"abcd"),  # not TCP/UDP
        eth() / IP(len=60) / UDP(len=40) / Raw(b"a" * 10),  # IP length past the end
        eth() / IP() / UDP(len=100) / Raw(b"abc"),
    ]  # UDP length past the end
    pkts.append(eth() / IP() / UDP() / Raw(b"cut short"))
    batch = _batch(*pkts)
    batch.origlen[-1] += 10  # caplen < origlen: truncated
    sel = select(batch)
    assert len(sel) == 0
    assert sel.skipped == {
        "not_tcp_udp": 2,
        "fragment": len(frags),
        "truncated": 1,
        "malformed": 2,
        "empty": 2,
        "too_large": 0,
    }
    counters = Counter()
    sel.count(counters)
    assert counters["skipped_fragment"] == len(frags)
    out, done = replace(sel, Payloads.pack([]))
    assert out is batch and not done.any()


def test_a_payload_too_large_for_the_length_fields_is_left_alone():
    huge = eth() / IP() / UDP() / Raw(b"y" * 65000)
    small = eth() / IP() / UDP() / Raw(b"z" * 10)
    batch = _batch(huge, small)
    sel = select(batch)
    out, done = replace(sel, Payloads.pack([b"y" * 65600, b"w" * 20]))
    assert done.tolist() == [False, True]
    assert sel.skipped["too_large"] == 1
    assert out.packet(0).tobytes() == bytes(huge)
    assert scapy_rebuild(out.packet(1).tobytes(), 1) == out.packet(1).tobytes()


@pytest.mark.parametrize(
    "pkt, linktype",
    [
        (
            Dot3(src="02:00:00:00:00:01", dst="01:02:03:04:05:06")
            / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
            / SNAP(code=0x0800)
            / IP(src="1.2.3.4", dst="5.6.7.8")
            / UDP(sport=7, dport=9)
            / Raw(b"802.3 frame"),
            1,
        ),
        (
            eth()
            / PPPoE(sessionid=9)
            / PPP(proto=0x21)
            / IP(src="1.2.3.4", dst="5.6.7.8")
            / TCP(sport=1000, dport=80, flags="PA")
            / Raw(b"over PPPoE"),
            1,
        ),
        (
            eth()
            / Dot1Q(vlan=5)
            / Dot1Q(vlan=6)
            / PPPoE(sessionid=9)
            / PPP(proto=0x57)
            / IPv6(src="2001:db8::1", dst="2001:db8::2")
            / UDP(sport=1, dport=2)
            / Raw(b"QinQ"),
            1,
        ),
        (
            CookedLinux(proto=0x8864)
            / PPPoE(sessionid=3)
            / PPP(proto=0x21)
            / IP()
            / UDP()
            / Raw(b"cooked"),
            113,
        ),
        (
            eth()
            / IP(src="9.9.9.9", dst="8.8.8.8", options=b"\x01\x01\x01\x00")
            / TCP(sport=5, dport=6, options=[("MSS", 1460), ("NOP", None)])
            / Raw(b"odd!!"),
            1,
        ),
    ],
)
def test_link_layer_lengths_follow_the_payload(pkt, linktype):
    raw = bytes(pkt)
    batch = _batch(raw, linktype=linktype)
    assert scapy_rebuild(raw, linktype) == raw
    out = wrap(batch)
    grown = out.packet(0).tobytes()
    assert len(grown) == len(raw) + 3
    assert scapy_rebuild(grown, linktype) == grown
    assert unwrap(out).packet(0).tobytes() == raw


def test_ethernet_padding_stays_behind_the_ip_packet():
    pkt = eth() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2) / Raw(b"ab")
    raw = bytes(pkt) + b"\x00" * 16  # padded to the 60-byte minimum
    out = wrap(_batch(raw))
    grown = out.packet(0).tobytes()
    assert grown.endswith(b"Z" + b"\x00" * 16)
    assert scapy_rebuild(grown, 1) == grown
    assert unwrap(out).packet(0).tobytes() == raw


def test_udp_without_checksum_keeps_none():
    v4 = eth() / IP() / UDP(sport=1, dport=2, chksum=0) / Raw(b"no checksum")
    v6 = eth() / IPv6() / UDP(sport=1, dport=2, chksum=0) / Raw(b"tunnel, RFC 6935")
    out = wrap(_batch(v4, v6))
    for i in range(2):
        pkt = Ether(out.packet(i).tobytes())
        assert pkt[UDP].chksum == 0 and pkt[UDP].len == 8 + len(pkt[UDP].payload)
    assert unwrap(out).same_packets(_batch(v4, v6))


def test_corpus_round_trips_and_stays_valid():
    for name, batch in need_corpus():
        broken = break_checksums(batch, seed=5, share=0.5)
        for source in (batch, broken):
            out = wrap(read_only(source))
            assert same_status(source, out), name
            assert packets(unwrap(out)) == packets(source), name
        assert scapy_still_agrees(batch, wrap(batch)) == [], name
