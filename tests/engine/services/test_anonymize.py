"""anonymize: Crypto-PAn against published vectors, a naive twin, its own properties and scapy."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from locations import CORPUS
from naive_cryptopan import NaiveCryptoPAn
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether

from engine import CaptureError, read_capture
from engine.capture.batch import PacketBatch
from engine.capture.generate import generate_batch
from engine.packet.checksum import ones_complement_sum, verify_checksums
from engine.packet.flowkeys import flow_keys
from engine.services import parse_chain, service_class
from engine.services.anonymize import Anonymize, CryptoPAn, _distinct
from engine.services.base import ServiceError

# The key of the Crypto-PAn reference distribution's sample (sample_trace_raw.dat and
# sample_trace_sanitized.dat). The pairs below are those files' addresses as published in
# Yawning Angel's Go implementation, github.com/Yawning/cryptopan, cryptopan_test.go
# (TestCryptopanIPv4, TestCryptopanIPv6), commit 55312e47e95be78f27174a2ae55f8c65b74d4aa0. The
# IPv6 pairs are that implementation's own output, the same construction over 128 bits.
REFERENCE_KEY = bytes(
    [
        21,
        34,
        23,
        141,
        51,
        164,
        207,
        128,
        19,
        10,
        91,
        22,
        73,
        144,
        125,
        16,
        216,
        152,
        143,
        131,
        121,
        121,
        101,
        39,
        98,
        87,
        76,
        45,
        42,
        132,
        34,
        2,
    ]
)
IPV4_VECTORS = [
    ("128.11.68.132", "135.242.180.132"),
    ("129.118.74.4", "134.136.186.123"),
    ("130.132.252.244", "133.68.164.234"),
    ("141.223.7.43", "141.167.8.160"),
    ("141.233.145.108", "141.129.237.235"),
    ("152.163.225.39", "151.140.114.167"),
    ("156.29.3.236", "147.225.12.42"),
    ("165.247.96.84", "162.9.99.234"),
    ("166.107.77.190", "160.132.178.185"),
    ("192.102.249.13", "252.138.62.131"),
    ("192.215.32.125", "252.43.47.189"),
    ("192.233.80.103", "252.25.108.8"),
    ("192.41.57.43", "252.222.221.184"),
    ("193.150.244.223", "253.169.52.216"),
    ("195.205.63.100", "255.186.223.5"),
    ("198.200.171.101", "249.199.68.213"),
    ("198.26.132.101", "249.36.123.202"),
    ("198.36.213.5", "249.7.21.132"),
    ("198.51.77.238", "249.18.186.254"),
    ("199.217.79.101", "248.38.184.213"),
    ("202.49.198.20", "245.206.7.234"),
    ("203.12.160.252", "244.248.163.4"),
    ("204.184.162.189", "243.192.77.90"),
    ("204.202.136.230", "243.178.4.198"),
    ("204.29.20.4", "243.33.20.123"),
    ("205.178.38.67", "242.108.198.51"),
    ("205.188.147.153", "242.96.16.101"),
    ("205.188.248.25", "242.96.88.27"),
    ("205.245.121.43", "242.21.121.163"),
    ("207.105.49.5", "241.118.205.138"),
    ("207.135.65.238", "241.202.129.222"),
    ("207.155.9.214", "241.220.250.22"),
    ("207.188.7.45", "241.255.249.220"),
    ("207.25.71.27", "241.33.119.156"),
    ("207.33.151.131", "241.1.233.131"),
    ("208.147.89.59", "227.237.98.191"),
    ("208.234.120.210", "227.154.67.17"),
    ("208.28.185.184", "227.39.94.90"),
    ("208.52.56.122", "227.8.63.165"),
    ("209.12.231.7", "226.243.167.8"),
    ("209.238.72.3", "226.6.119.243"),
    ("209.246.74.109", "226.22.124.76"),
    ("209.68.60.238", "226.184.220.233"),
    ("209.85.249.6", "226.170.70.6"),
    ("212.120.124.31", "228.135.163.231"),
    ("212.146.8.236", "228.19.4.234"),
    ("212.186.227.154", "228.59.98.98"),
    ("212.204.172.118", "228.71.195.169"),
    ("212.206.130.201", "228.69.242.193"),
    ("216.148.237.145", "235.84.194.111"),
    ("216.157.30.252", "235.89.31.26"),
    ("216.184.159.48", "235.96.225.78"),
    ("216.227.10.221", "235.28.253.36"),
    ("216.254.18.172", "235.7.16.162"),
    ("216.32.132.250", "235.192.139.38"),
    ("216.35.217.178", "235.195.157.81"),
    ("24.0.250.221", "100.15.198.226"),
    ("24.13.62.231", "100.2.192.247"),
    ("24.14.213.138", "100.1.42.141"),
    ("24.5.0.80", "100.9.15.210"),
    ("24.7.198.88", "100.10.6.25"),
    ("24.94.26.44", "100.88.228.35"),
    ("38.15.67.68", "64.3.66.187"),
    ("4.3.88.225", "124.60.155.63"),
    ("63.14.55.111", "95.9.215.7"),
    ("63.195.241.44", "95.179.238.44"),
    ("63.97.7.140", "95.97.9.123"),
    ("64.14.118.196", "0.255.183.58"),
    ("64.34.154.117", "0.221.154.117"),
    ("64.39.15.238", "0.219.7.41"),
]
IPV6_VECTORS = [
    ("::1", "78ff:f001:9fc0:20df:8380:b1f1:704:ed"),
    ("::2", "78ff:f001:9fc0:20df:8380:b1f1:704:ef"),
    ("::ffff", "78ff:f001:9fc0:20df:8380:b1f1:704:f838"),
    ("2001:db8::1", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1e"),
    ("2001:db8::2", "4401:2bc:603f:d91d:27f:ff8e:e6f1:dc1c"),
]
KEY_HEX = REFERENCE_KEY.hex()

v4_ints = st.integers(0, 2**32 - 1)
v6_ints = st.integers(0, 2**128 - 1)


def _packed(values: list[int], width: int) -> np.ndarray:
    raw = b"".join(v.to_bytes(width, "big") for v in values)
    return np.frombuffer(raw, np.uint8).reshape(-1, width)


def _common_prefix(a: int, b: int, bits: int) -> int:
    return bits - (a ^ b).bit_length()


@pytest.fixture(scope="module")
def naive() -> NaiveCryptoPAn:
    return NaiveCryptoPAn(REFERENCE_KEY)


# -- the scheme ---------------------------------------------------------------------------------
@pytest.mark.parametrize("vectors", [IPV4_VECTORS, IPV6_VECTORS], ids=["ipv4", "ipv6"])
def test_published_vectors(vectors, naive):
    assert len(IPV4_VECTORS) == 70
    cp = CryptoPAn(REFERENCE_KEY)
    width = 4 if ":" not in vectors[0][0] else 16
    raw = np.stack([np.frombuffer(ipaddress.ip_address(a).packed, np.uint8) for a, _ in vectors])
    got = cp.anonymize(raw)  # all at once: one batched evaluation
    assert got.shape == (len(vectors), width)
    for row, (orig, want) in zip(got, vectors, strict=True):
        assert str(ipaddress.ip_address(row.tobytes())) == want, orig
        assert naive.anonymize(orig) == want
        assert cp.anonymize_text(orig) == want


def test_published_vectors_keep_their_prefixes():
    """The reference sample's pairs themselves share prefixes exactly as their originals."""
    raw = [int(ipaddress.IPv4Address(a)) for a, _ in IPV4_VECTORS]
    anon = [int(ipaddress.IPv4Address(b)) for _, b in IPV4_VECTORS]
    for i in range(len(raw)):
        for j in range(i + 1, len(raw)):
            assert _common_prefix(raw[i], raw[j], 32) == _common_prefix(anon[i], anon[j], 32)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(v4_ints, min_size=1, max_size=20),
    st.lists(v6_ints, min_size=1, max_size=4),
    st.binary(min_size=32, max_size=32),
)
def test_matches_naive_twin(v4, v6, key):
    cp = CryptoPAn(key)
    slow = NaiveCryptoPAn(key)
    v4 = v4 + v4[:3]  # repeats within one call
    got4 = cp.anonymize(_packed(v4, 4))
    assert [int.from_bytes(r.tobytes(), "big") for r in got4] == [
        slow.anonymize_int(a, 32) for a in v4
    ]
    got6 = cp.anonymize(_packed(v6, 16))
    assert [int.from_bytes(r.tobytes(), "big") for r in got6] == [
        slow.anonymize_int(a, 128) for a in v6
    ]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([32, 128]), st.data())
def test_prefix_preserving(bits, data):
    """Addresses sharing exactly k leading bits map to addresses sharing exactly k."""
    a = data.draw(st.integers(0, 2**bits - 1), label="a")
    k = data.draw(st.integers(0, bits), label="k")
    if k == bits:
        b = a
    else:  # same first k bits, bit k flipped, anything after
        tail = data.draw(st.integers(0, 2 ** (bits - k - 1) - 1), label="tail")
        b = ((a >> (bits - k)) << (bits - k)) | ((~a >> (bits - k - 1) & 1) << (bits - k - 1))
        b |= tail
    assert _common_prefix(a, b, bits) == k
    cp = CryptoPAn(REFERENCE_KEY)
    width = bits // 8
    out = cp.anonymize(_packed([a, b], width))
    x, y = (int.from_bytes(r.tobytes(), "big") for r in out)
    assert _common_prefix(x, y, bits) == k


def test_one_to_one_on_a_slash16_and_random_ipv6():
    cp = CryptoPAn(REFERENCE_KEY)
    net = np.zeros((65536, 4), np.uint8)
    net[:, 0], net[:, 1] = 10, 1
    net[:, 2] = np.arange(65536) >> 8
    net[:, 3] = np.arange(65536) & 255
    out = cp.anonymize(net)
    assert len(np.unique(out.view(">u4"))) == 65536
    # all of 10.1.0.0/16 maps into one /16
    assert len(np.unique(out[:, :2], axis=0)) == 1
    six = np.random.default_rng(7).integers(0, 256, (5000, 16), dtype=np.uint8)
    assert len(np.unique(cp.anonymize(six), axis=0)) == len(np.unique(six, axis=0))


def test_cache_is_bounded_and_consistent():
    cp = CryptoPAn(REFERENCE_KEY, cache_size=100)
    rng = np.random.default_rng(1)
    addrs = rng.integers(0, 256, (500, 4), dtype=np.uint8)
    first = cp.anonymize(addrs)
    assert cp.computed == len(np.unique(addrs.view(">u4")))
    assert len(cp._cache[4]) <= 100
    again = cp.anonymize(addrs)  # most were forgotten, and computed again the same
    assert np.array_equal(first, again)
    recent = rng.integers(0, 256, (10, 4), dtype=np.uint8)
    cp.anonymize(recent)
    before = cp.computed
    cp.anonymize(recent[::-1])  # the newest are remembered
    assert cp.computed == before


def test_distinct_survives_a_hash_clash():
    """Two IPv6 addresses built to give the same 64-bit sort key are still told apart."""
    golden = 0x9E3779B97F4A7C15
    a = np.array([[0, 12345], [1, 12345 ^ golden], [0, 12345]], np.uint64)
    addrs = a.view(np.uint8).reshape(3, 16)
    rows, inverse = _distinct(addrs)
    assert len(rows) == 2
    assert np.array_equal(rows[inverse], addrs)
    cp = CryptoPAn(REFERENCE_KEY)
    slow = NaiveCryptoPAn(REFERENCE_KEY)
    out = cp.anonymize(addrs)
    assert [r.tobytes() for r in out] == [slow.anonymize_bytes(r.tobytes()) for r in addrs]


def test_bad_keys():
    with pytest.raises(ValueError):
        CryptoPAn(b"short")
    with pytest.raises(ServiceError, match="key"):
        Anonymize()
    with pytest.raises(ServiceError, match="32"):
        Anonymize(key="00" * 16)
    with pytest.raises(ServiceError, match="hex"):
        Anonymize(key="zz" * 32)
    assert service_class("anonymize") is Anonymize
    assert parse_chain("anonymize", [f"key={KEY_HEX}"])[0]["params"] == {"key": KEY_HEX}


# -- packets -----------------------------------------------------------------------------------
def _crafted() -> list:
    """Packets of every kind the service meets, with scapy-computed checksums."""
    v4 = dict(src="192.0.2.1", dst="198.51.100.7")
    v6 = dict(src="2001:db8::1", dst="2001:db8:ffff::42")
    load = b"payload bytes " * 3
    return [
        Ether() / IP(**v4) / TCP(sport=1234, dport=80, flags="PA") / load,
        Ether() / IP(**v4) / UDP(sport=53, dport=5353) / load,
        Ether() / IP(**v4) / ICMP() / load,
        Ether() / Dot1Q(vlan=7) / IP(**v4, options=b"\x01\x01\x01\x00") / TCP() / load,
        Ether() / IP(**v4, flags="MF", frag=0, proto=17) / UDP(sport=1, dport=2) / load,
        Ether() / IP(**v4, frag=3, proto=17) / load,
        Ether() / IPv6(**v6) / TCP(sport=443, dport=50000) / load,
        Ether() / IPv6(**v6) / UDP(sport=1, dport=2) / load,
        Ether() / IPv6(**v6) / ICMPv6EchoRequest(data=load),
        Ether() / IPv6(**v6) / IPv6ExtHdrHopByHop() / TCP() / load,
        Ether() / IPv6(**v6) / IPv6ExtHdrFragment(m=1) / UDP() / load,
        Ether()
        / IPv6(**v6)
        / IPv6ExtHdrRouting(addresses=["2001:db8::99"], segleft=1)
        / TCP()
        / load,
        Ether()
        / IPv6(**v6)
        / IPv6ExtHdrRouting(addresses=["2001:db8::99"], segleft=0)
        / UDP()
        / load,
        Ether() / IP(**v4) / GRE() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / load,
        Ether() / IP(**v4) / IPv6(src="fe80::1", dst="fe80::2") / UDP() / load,
        Ether() / ARP(psrc="192.0.2.1", pdst="192.0.2.2"),
    ]


def _batch(pkts) -> PacketBatch:
    return PacketBatch.from_packets([bytes(p) for p in pkts])


def _scapy_fixed(raw: bytes) -> bytes:
    """What scapy writes for ``raw`` with every IP, TCP, UDP, ICMP and ICMPv6 checksum
    recomputed (a UDP checksum of 0, none sent, stays)."""
    p = Ether(raw)
    layer = p
    while layer:
        if isinstance(layer, (IP, TCP, UDP, ICMP)) and not (
            isinstance(layer, UDP) and layer.chksum == 0
        ):
            layer.chksum = None
        elif "cksum" in layer.fields:
            layer.cksum = None
        layer = layer.payload
    return bytes(p)


def test_crafted_packets_against_scapy_and_the_naive_twin(naive):
    pkts = _crafted()
    batch = _batch(pkts)
    batch.data.setflags(write=False)  # as a batch received from frames
    svc = Anonymize(key=KEY_HEX)
    out = svc.process(batch)
    assert len(out) == len(batch)
    before = flow_keys(batch)
    after = flow_keys(out)
    for i, raw in enumerate(out):
        raw = raw.tobytes()
        row, new = before.row(i), after.row(i)
        if row["family"] == 0:  # ARP: left alone
            assert raw == bytes(pkts[i])
            continue
        assert new["src"] == naive.anonymize_bytes(row["src"])
        assert new["dst"] == naive.anonymize_bytes(row["dst"])
        assert {k: v for k, v in new.items() if k not in ("src", "dst")} == {
            k: v for k, v in row.items() if k not in ("src", "dst")
        }
        assert _scapy_fixed(raw) == raw, f"packet {i} ({pkts[i].summary()})"
    # inner (tunnelled) addresses stay
    assert IP(bytes(Ether(out[13].tobytes())[GRE].payload)).src == "10.0.0.1"
    assert Ether(out[14].tobytes())[IPv6].src == "fe80::1"
    assert svc.take_counters() == {
        "addresses": 30,
        "addresses_computed": 4,
        "packets_changed": 15,
        "packets_skipped": 1,
    }
    assert batch.packet(0).tobytes() == bytes(pkts[0])  # the input is not touched


def test_udp_checksum_zero_stays_zero():
    v4 = Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(chksum=0) / (b"x" * 10)
    out = Anonymize(key=KEY_HEX).process(_batch([v4]))
    assert out.packet(0)[34 + 6 : 34 + 8].tobytes() == b"\0\0"


def _residuals(raw: bytes, row: dict) -> tuple[int, int | None]:
    """Ones'-complement sums over what each checksum covers, its own field included: 0xFFFF
    when right, and unchanged by a correct incremental update however wrong it was."""
    p = np.frombuffer(raw, np.uint8)
    l3, l4 = row["l3_off"], row["l4_off"]
    if row["family"] == 4:
        ihl = (raw[l3] & 15) * 4
        ip = ones_complement_sum(p, l3, ihl)
        seg_len = struct.unpack_from(">H", raw, l3 + 2)[0] - ihl
        pseudo = raw[l3 + 12 : l3 + 20] + struct.pack(">BBH", 0, row["proto"], seg_len)
    else:
        ip = None
        seg_len = struct.unpack_from(">H", raw, l3 + 4)[0] - (l4 - l3 - 40)
        pseudo = raw[l3 + 8 : l3 + 40] + struct.pack(">IxxxB", seg_len, row["proto"])
    l4sum = ones_complement_sum(p, l4, seg_len, ones_complement_sum(pseudo))
    return ip, l4sum


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([0, 1, 2, 3]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**128 - 1),
)
def test_wrong_checksums_stay_exactly_as_wrong(kind, ip_sum, l4_sum, load, a4, a6):
    """Captures taken with checksum offload hold wrong checksums: anonymizing must not fix
    them, nor break them further."""
    s4 = str(ipaddress.IPv4Address(a4))
    s6 = str(ipaddress.IPv6Address(a6))
    if kind == 0:
        pkt = Ether() / IP(src=s4, dst="10.9.8.7", chksum=ip_sum) / TCP(chksum=l4_sum) / load
    elif kind == 1:
        pkt = Ether() / IP(src=s4, dst="10.9.8.7", chksum=ip_sum) / UDP(chksum=l4_sum) / load
    elif kind == 2:
        pkt = Ether() / IPv6(src=s6, dst="::1") / TCP(chksum=l4_sum) / load
    else:
        pkt = Ether() / IPv6(src=s6, dst="::1") / ICMPv6EchoRequest(cksum=l4_sum, data=load)
    batch = _batch([pkt])
    out = Anonymize(key=KEY_HEX).process(batch)
    row = flow_keys(batch).row(0)
    before = _residuals(batch.packet(0).tobytes(), row)
    after = _residuals(out.packet(0).tobytes(), row)
    if kind == 1 and l4_sum == 0:  # no checksum sent: left at 0
        assert out.packet(0)[40:42].tobytes() == b"\0\0"
        before, after = before[0], after[0]
    assert before == after


def test_generated_traffic(naive):
    batch = generate_batch(3000, flows=200, seed=3)
    svc = Anonymize(key=KEY_HEX)
    out = svc.process(batch[1:])  # not starting at the buffer's start
    assert svc.take_counters()["packets_changed"] == len(batch) - 1
    status = verify_checksums(out)
    assert np.array_equal(status.ip, verify_checksums(batch[1:]).ip)
    assert status.all_good()
    keys, new = flow_keys(batch[1:]), flow_keys(out)
    for i in range(0, len(out), 37):
        row = keys.row(i)
        assert new.row(i)["src"] == naive.anonymize_bytes(row["src"])
        assert new.row(i)["dst"] == naive.anonymize_bytes(row["dst"])
    for i in range(0, len(out), 101):
        raw = out.packet(i).tobytes()
        assert _scapy_fixed(raw) == raw


def test_explicit_seq_and_empty_batches():
    batch = generate_batch(50, seed=2).take([4, 2, 9])
    out = Anonymize(key=KEY_HEX).process(batch)
    assert np.array_equal(out.seq, batch.seq) and out.has_explicit_seq
    empty = PacketBatch.empty()
    assert len(Anonymize(key=KEY_HEX).process(empty)) == 0


def _corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*/*.pcap*")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_captures_keep_their_checksum_statuses(path):
    try:
        batch = read_capture(path)
    except CaptureError:
        pytest.skip("a capture the readers reject on purpose")
    out = Anonymize(key=KEY_HEX).process(batch)
    assert len(out) == len(batch)
    before, after = verify_checksums(batch), verify_checksums(out)
    keys = flow_keys(batch)
    assert np.array_equal(before.ip, after.ip)
    # engine.packet.checksum puts the IPv6 header's destination in the pseudo-header even behind a
    # routing header with segments left; the service follows RFC 8200 there.
    same = before.l4 == after.l4
    assert same.all() or all(keys.family[i] == 6 for i in np.flatnonzero(~same))
    for i in np.flatnonzero(keys.family == 0):
        assert out.packet(i).tobytes() == batch.packet(i).tobytes()


def test_corpus_present_or_skip():
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at <project>/../shared/corpus ({CORPUS})")
    assert _corpus_files()


def _cut_everywhere_in_the_ip_header():
    """Packets cut by the capture at every byte of their IP header (Ethernet, VLAN, raw IP),
    each with where its IP header starts, the address field offset and width."""
    v4 = IP(src="192.0.2.1", dst="198.51.100.7") / UDP(sport=1, dport=2) / (b"x" * 30)
    v6 = IPv6(src="2001:db8::1", dst="2001:db8:ffff::42") / UDP(sport=1, dport=2) / (b"y" * 30)
    mac = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
    out = []
    for ip, at, width, header in ((v4, 12, 4, 20), (v6, 8, 16, 40)):
        for link, l3, linktype in (
            (Ether(**mac), 14, 1),
            (Ether(**mac) / Dot1Q(vlan=3), 18, 1),
            (None, 0, 101),
        ):
            full = bytes(ip if link is None else link / ip)
            for cut in range(l3, l3 + header):
                out.append((full, full[:cut], linktype, l3 + at, width))
    return out


def test_addresses_before_a_cut_in_the_ip_header_are_anonymized_not_passed(naive):
    """A small snaplen can end a packet inside its IP header: every address byte before the
    cut is the naive twin's anonymized address, cut at the same place; nothing else moves."""
    cases = _cut_everywhere_in_the_ip_header()
    batches = [
        PacketBatch.from_packets([cut], origlen=[len(full)], linktype=lt)
        for full, cut, lt, _, _ in cases
    ]
    batch = PacketBatch.concat(batches)
    svc = Anonymize(key=KEY_HEX)
    out = svc.process(batch)
    with_addresses = 0
    for i, (full, cut, _, at, width) in enumerate(cases):
        want = bytearray(full)
        for a in (at, at + width):
            want[a : a + width] = naive.anonymize_bytes(full[a : a + width])
        assert out.packet(i).tobytes() == bytes(want[: len(cut)]), (i, len(cut))
        with_addresses += len(cut) > at
    counters = svc.take_counters()
    assert counters["cut_headers"] == counters["packets_changed"] == with_addresses
    assert counters["packets_skipped"] == len(cases) - with_addresses
