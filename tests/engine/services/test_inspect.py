"""inspect: the Aho-Corasick matcher against bytes.find, and the service on real packets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from locations import CORPUS
from naive_inspect import patterns_in, transport_payload
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from engine import CaptureError, read_capture
from engine.capture.batch import PacketBatch
from engine.capture.generate import generate_batch
from engine.packet import ahocorasick
from engine.packet.ahocorasick import PatternMatcher
from engine.packet.checksum import verify_checksums
from engine.services import parse_chain, service_class
from engine.services.base import ServiceError
from engine.services.inspect import Inspect, parse_pattern

# A small alphabet, so patterns overlap, repeat and hide in each other; case pairs for nocase.
_chunk = st.binary(max_size=6).map(lambda b: bytes(b"abAB\0\xff"[x % 6] for x in b))
_pattern = _chunk.filter(bool)


@st.composite
def pattern_sets(draw) -> list[bytes]:
    """Patterns, some of them prefixes, suffixes or repeats of others."""
    pats = draw(st.lists(_pattern, min_size=1, max_size=8))
    for _ in range(draw(st.integers(0, 4))):
        p = draw(st.sampled_from(pats))
        cut = draw(st.integers(0, len(p) - 1))
        pats.append(draw(st.sampled_from([p[cut:] or p, p[: cut + 1], p + p, p])))
    return pats


@st.composite
def payload_lists(draw, pats: list[bytes]) -> list[bytes]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        parts = draw(st.lists(st.one_of(_chunk, st.sampled_from(pats)), max_size=6))
        out.append(b"".join(parts))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.booleans())
def test_matcher_against_bytes_find(data, nocase):
    pats = data.draw(pattern_sets(), label="patterns")
    payloads = data.draw(payload_lists(pats), label="payloads")
    m = PatternMatcher(pats, nocase=nocase)
    # All regions in one buffer, with gaps and a skipped region, as the service scans them.
    buf = bytearray(b"HEAD")
    starts, ends = [], []
    for p in payloads:
        starts.append(len(buf))
        buf += p
        ends.append(len(buf))
        buf += b"\xffgap"
    starts.append(-1)
    ends.append(-1)
    result = m.scan(
        np.frombuffer(bytes(buf), np.uint8), np.array(starts, np.int64), np.array(ends, np.int64)
    )
    want = [patterns_in(p, pats, nocase) for p in payloads]
    assert result.matched.tolist() == [bool(w) for w in want] + [False]
    assert result.counts.tolist() == [sum(i in w for w in want) for i in range(len(pats))]
    assert result.scanned == sum(len(p) for p in payloads)
    assert m.find(payloads) == want


def test_matcher_classic_example_and_limits(monkeypatch):
    m = PatternMatcher([b"he", b"she", b"his", b"hers"])
    assert m.find([b"ushers", b"ahishers", b"h", b""]) == [{0, 1, 3}, {0, 1, 2, 3}, set(), set()]
    assert m.states == 10
    with pytest.raises(ValueError, match="empty"):
        PatternMatcher([b"a", b""])
    with pytest.raises(ValueError, match="no patterns"):
        PatternMatcher([])
    monkeypatch.setattr(ahocorasick, "MAX_TABLE_BYTES", 1000)
    with pytest.raises(ValueError, match="MiB"):
        PatternMatcher([bytes(range(i, i + 40)) for i in range(100)])


def test_binary_patterns_and_every_byte_value():
    pats = [bytes([b]) * 2 for b in range(256)] + [b"\x00\xff\x00"]
    m = PatternMatcher(pats)
    payload = bytes(range(256)) + b"\x00\xff\x00\x07\x07"
    assert m.find([payload]) == [patterns_in(payload, pats)]


# -- the service on packets ---------------------------------------------------------------------
def _batch(pkts) -> PacketBatch:
    return PacketBatch.from_packets([bytes(p) for p in pkts])


def _http_packets() -> list:
    v4 = dict(src="192.0.2.1", dst="198.51.100.7")
    v6 = dict(src="2001:db8::1", dst="2001:db8::2")
    return [
        Ether() / IP(**v4, tos=0x03) / TCP(dport=80) / b"GET /index.html HTTP/1.1\r\n",
        Ether() / IP(**v4) / TCP(sport=80) / b"HTTP/1.1 200 OK\r\n",
        Ether() / IP(**v4) / UDP(dport=53) / b"no match here",
        Ether() / IPv6(**v6, tc=0x01) / TCP(dport=80) / b"get / http/1.1",
        Ether() / IPv6(**v6) / UDP() / b"xxGET xx",
        Ether() / ARP(),
        Ether() / IP(**v4) / TCP(),
    ]


def test_count_leaves_packets_alone():
    batch = _batch(_http_packets())
    svc = Inspect(patterns="GET ,HTTP/1.1")
    out = svc.process(batch)
    assert out is batch
    c = svc.take_counters()
    assert c["packets_matched"] == 3
    assert c["pattern.0"] == 2 and c["pattern.1"] == 2
    assert c["packets_scanned"] == 6  # not the ARP packet
    assert "packets_dropped" not in c


def test_nocase():
    svc = Inspect(patterns="GET ,HTTP/1.1", nocase="yes")
    svc.process(_batch(_http_packets()))
    c = svc.take_counters()
    assert c["packets_matched"] == 4 and c["pattern.0"] == 3 and c["pattern.1"] == 3


def test_drop_keeps_the_others_in_order():
    batch = _batch(_http_packets())
    svc = Inspect(patterns="HTTP/1.1", action="drop")
    out = svc.process(batch)
    assert out.seq.tolist() == [2, 3, 4, 5, 6]
    assert [p.tobytes() for p in out] == [batch.packet(i).tobytes() for i in (2, 3, 4, 5, 6)]
    assert svc.take_counters()["packets_dropped"] == 2


def test_mark_sets_dscp_keeps_ecn_and_checksums():
    batch = _batch(_http_packets())
    batch.data.setflags(write=False)  # as a batch received from frames
    svc = Inspect(patterns="GET ", action="mark", dscp="46", nocase="1")
    out = svc.process(batch)
    assert svc.take_counters()["packets_marked"] == 3
    assert verify_checksums(out).all_good()
    p0, p3, p4 = (Ether(out.packet(i).tobytes()) for i in (0, 3, 4))
    assert p0[IP].tos == (46 << 2) | 0x03
    assert p3[IPv6].tc == (46 << 2) | 0x01
    assert p4[IPv6].tc == 46 << 2
    for i in (1, 2, 5, 6):
        assert out.packet(i).tobytes() == batch.packet(i).tobytes()
    assert Ether(batch.packet(0).tobytes())[IP].tos == 0x03  # the input is not touched


def test_mark_keeps_a_wrong_ip_checksum_as_wrong():
    pkt = Ether() / IP(src="192.0.2.1", dst="192.0.2.2", chksum=0x1234) / UDP() / b"sig"
    out = Inspect(patterns="sig", action="mark", dscp="10").process(_batch([pkt]))
    good = Ether(bytes(pkt))
    del good[IP].chksum
    right_before = Ether(bytes(good))[IP].chksum
    marked = Ether(out.packet(0).tobytes())
    stored = marked[IP].chksum
    del marked[IP].chksum
    right_after = Ether(bytes(marked))[IP].chksum
    # the stored value is off by the same ones'-complement amount before and after
    assert (stored - right_after) % 0xFFFF == (0x1234 - right_before) % 0xFFFF


def test_padding_and_lengths_bound_the_payload():
    # Ethernet padding after a short UDP datagram; a UDP length shorter than the IP payload.
    short = Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP() / b"ab"
    padded = bytes(short) + b"\0" * 20
    trailer = Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(len=10) / b"abSECRET"
    svc = Inspect(patterns="hex:00 00 00,SECRET,ab")
    svc.process(PacketBatch.from_packets([padded, bytes(trailer)]))
    c = svc.take_counters()
    assert c == {"packets_scanned": 2, "bytes_scanned": 4, "packets_matched": 2, "pattern.2": 2}


def test_generated_traffic_against_scapy_and_bytes_find():
    batch = generate_batch(2500, flows=150, seed=11)
    pats = [b"HTTP/1.1", b"GET ", b"Host:", b"keep-alive", b"the", b"e", b"\x00\x00\x00\x00"]
    text = ",".join(p.decode() for p in pats[:6]) + ",hex:00000000"
    svc = Inspect(patterns=text, action="drop")
    out = svc.process(batch)
    c = svc.take_counters()
    want_counts = [0] * len(pats)
    dropped = []
    for i, raw in enumerate(batch):
        payload = transport_payload(Ether(raw.tobytes()))
        assert payload is not None
        found = patterns_in(payload, pats)
        for k in found:
            want_counts[k] += 1
        if found:
            dropped.append(i)
    assert [c.get(f"pattern.{k}", 0) for k in range(len(pats))] == want_counts
    assert c["packets_matched"] == len(dropped) == c["packets_dropped"]
    assert want_counts[0] and want_counts[1]  # the generator writes HTTP-like text
    keep = np.setdiff1d(np.arange(len(batch)), dropped)
    assert np.array_equal(out.seq, keep)


def _corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*/*.pcap*")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_against_scapy(path):
    try:
        batch = read_capture(path)
    except CaptureError:
        pytest.skip("a capture the readers reject on purpose")
    pats = [b"HTTP/1.1", b"GET ", b"HTTP/1.", b"\x00\x01", b"www"]
    svc = Inspect(patterns="HTTP/1.1,GET ,HTTP/1.,hex:0001,www")
    result_batch = svc.process(batch)
    assert result_batch is batch
    c = svc.take_counters()
    if batch.linktype != 1:
        return  # scapy dissects these differently; the scan itself is checked elsewhere
    counts = [0] * len(pats)
    for pkt in rdpcap(str(path)):
        payload = transport_payload(pkt)
        if payload is None:
            continue
        for k in patterns_in(payload, pats):
            counts[k] += 1
    got = [c.get(f"pattern.{k}", 0) for k in range(len(pats))]
    # scapy's count covers TCP/UDP only; ours also ICMP/SCTP payloads, so it can only be more
    assert all(g >= w for g, w in zip(got, counts, strict=True)), (got, counts)


@pytest.mark.parametrize(
    ("name", "packets", "http"), [("dpkt/http.pcap", 43, 5), ("dpkt/nb6-http.pcap", 62, 6)]
)
def test_corpus_http_captures(name, packets, http):
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at <project>/../shared/corpus ({CORPUS})")
    batch = read_capture(CORPUS / name)
    assert len(batch) == packets
    svc = Inspect(patterns="HTTP/1.1,GET ", action="drop")
    out = svc.process(batch)
    c = svc.take_counters()
    assert c["packets_matched"] == http and c["pattern.0"] == http and c["pattern.1"] >= 2
    assert len(out) == packets - http


def test_patterns_file(tmp_path):
    f = tmp_path / "sigs.txt"
    f.write_text("# web\nGET \n\nhex:48 54 54 50\n#not a pattern\n")
    svc = Inspect(patterns_file=str(f), patterns="ARP")
    assert svc.matcher.patterns == (b"ARP", b"GET ", b"HTTP")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "no patterns"),
        ({"patterns": "a,,b"}, "item 1: empty"),
        ({"patterns": "hex:zz"}, "not hex"),
        ({"patterns": "hex:"}, "empty"),
        ({"patterns": "a", "action": "block"}, "action"),
        ({"patterns": "a", "dscp": "64"}, "dscp"),
        ({"patterns": "a", "dscp": "x"}, "dscp"),
        ({"patterns": "a", "dscp": 1.5}, "dscp"),
        ({"patterns": "a", "nocase": "maybe"}, "nocase"),
        ({"patterns_file": "/nonexistent/sigs"}, "cannot read"),
        ({"patterns": "a", "pattern": "b"}, "unknown"),
    ],
)
def test_bad_params(params, message):
    with pytest.raises(ServiceError, match=message):
        Inspect(**params)


def test_registry_and_chain():
    assert service_class("inspect") is Inspect
    chain = parse_chain("inspect", ["patterns=GET ", "action=drop"])
    assert chain[0]["params"] == {"patterns": "GET ", "action": "drop"}
    assert parse_pattern("hex:0a0B") == b"\n\x0b" and parse_pattern("é") == "é".encode()


def test_empty_batch():
    assert len(Inspect(patterns="x", action="drop").process(PacketBatch.empty())) == 0
