"""The synthetic traffic generator, checked against scapy, dpkt and a slow struct-based twin."""

from __future__ import annotations

import struct
from collections import defaultdict

import dpkt
import numpy as np
import pytest
from scapy.config import conf
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from engine.capture import read_capture
from engine.capture.batch import PacketBatch
from engine.capture.generate import (
    DEFAULT_START_NS,
    _Generator,
    generate_batch,
    generate_batches,
    generate_capture,
)
from engine.capture.generate_kernels import pack_templates

# Traffic shapes the checksum and twin tests run over: the default mix and the corners of it.
MIXES = {
    "default": {},
    "ipv6-qinq": {"ipv6_share": 1.0, "vlan_share": 0.0, "qinq_share": 1.0},
    "ipv4-dot1q-unpadded": {"ipv6_share": 0.0, "vlan_share": 1.0, "qinq_share": 0.0, "pad": False},
    "plain": {"ipv6_share": 0.0, "vlan_share": 0.0, "qinq_share": 0.0},
}


@pytest.fixture(scope="module", autouse=True)
def scapy_stops_at_l4():
    """Dissect no further than TCP/UDP: payloads are random bytes, not DNS or NTP."""
    if conf.layers.filtered:
        yield
        return
    conf.layers.filter([Ether, Dot1Q, Dot1AD, IP, IPv6, TCP, UDP, Raw])
    try:
        yield
    finally:
        conf.layers.unfilter()


def sample(batch: PacketBatch, k: int = 2000, seed: int = 0) -> list[bytes]:
    idx = np.random.default_rng(seed).choice(len(batch), size=min(k, len(batch)), replace=False)
    return [bytes(batch.packet(int(i))) for i in np.sort(idx)]


def five_tuple(pkt) -> tuple:
    net = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    return (net.src, l4.sport, net.dst, l4.dport, l4.__class__.__name__)


def flow_key(pkt) -> tuple[tuple, int]:
    """The direction-free flow of a packet and which way it goes (0 client, 1 server)."""
    src_ip, sport, dst_ip, dport, proto = five_tuple(pkt)
    # Clients use ephemeral ports (>= 32768); servers listen below.
    if sport >= 32768:
        return (src_ip, sport, dst_ip, dport, proto), 0
    return (dst_ip, dport, src_ip, sport, proto), 1


# -- checksums and lengths, with scapy as the oracle ---------------------------------------------
@pytest.mark.parametrize("mix", sorted(MIXES))
def test_scapy_recomputes_identical_checksums_and_lengths(mix):
    batch = generate_batch(20_000, 300, seed=11, **MIXES[mix])
    for raw in sample(batch, 2000 if mix == "default" else 500):
        pkt = Ether(raw)
        assert IP in pkt or IPv6 in pkt, pkt.summary()
        assert TCP in pkt or UDP in pkt, pkt.summary()
        stripped = Ether(raw)
        for layer, fields in (
            (IP, ("chksum", "len")),
            (IPv6, ("plen",)),
            (TCP, ("chksum",)),
            (UDP, ("chksum", "len")),
        ):
            if layer in stripped:
                for f in fields:
                    delattr(stripped[layer], f)
        rebuilt = Ether(bytes(stripped))
        for layer, fields in (
            (IP, ("chksum", "len")),
            (IPv6, ("plen",)),
            (TCP, ("chksum",)),
            (UDP, ("chksum", "len")),
        ):
            if layer in pkt:
                for f in fields:
                    assert getattr(rebuilt[layer], f) == getattr(pkt[layer], f), (
                        mix,
                        f"{layer.__name__}.{f}",
                        pkt.summary(),
                    )
        assert bytes(rebuilt) == raw


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_frames_are_sized_like_ethernet(mix):
    options = MIXES[mix]
    batch = generate_batch(20_000, 300, seed=12, **options)
    assert np.array_equal(batch.caplen, batch.origlen)
    assert batch.linktype == 1
    assert batch.is_compact()
    if options.get("pad") is False:
        assert int(batch.caplen.min()) < 60  # runts, as the sending host captures them
    else:
        assert int(batch.caplen.min()) >= 60
    for raw in sample(batch, 500, seed=1):
        pkt = Ether(raw)
        net = pkt[IP] if IP in pkt else pkt[IPv6]
        l2 = len(raw) - len(net)
        ip_len = net.len if IP in pkt else 40 + net.plen
        assert ip_len <= 1500
        padding = len(raw) - l2 - ip_len
        assert padding == 0 or (len(raw) == 60 and padding > 0), pkt.summary()
        if UDP in pkt:
            assert pkt[UDP].len == ip_len - (net.ihl * 4 if IP in pkt else 40)


def test_mix_of_encapsulations_protocols_and_sizes():
    batch = generate_batch(20_000, 500, seed=13)
    seen = defaultdict(int)
    for raw in sample(batch, 2000, seed=2):
        pkt = Ether(raw)
        seen["qinq" if Dot1AD in pkt else "dot1q" if Dot1Q in pkt else "untagged"] += 1
        seen["ipv6" if IPv6 in pkt else "ipv4"] += 1
        seen["tcp" if TCP in pkt else "udp"] += 1
        if TCP in pkt and pkt[TCP].dataofs == 8:
            seen["tcp-timestamps"] += 1
    for what in ("qinq", "dot1q", "untagged", "ipv6", "ipv4", "tcp", "udp", "tcp-timestamps"):
        assert seen[what] > 0, what
    sizes = batch.caplen
    assert (sizes <= 80).sum() > 0.1 * len(sizes)  # ACK-like
    assert ((sizes > 200) & (sizes < 1000)).sum() > 0.1 * len(sizes)  # mid
    assert (sizes >= 1400).sum() > 0.1 * len(sizes)  # near the MTU


# -- flows -----------------------------------------------------------------------------------
def flows_of(batch: PacketBatch) -> dict[tuple, set[int]]:
    directions: dict[tuple, set[int]] = defaultdict(set)
    for pkt in batch:
        key, direction = flow_key(Ether(bytes(pkt)))
        directions[key].add(direction)
    return directions


@pytest.mark.parametrize(
    ("packets", "flows", "expected"), [(3000, 60, 60), (3000, 1, 1), (40, 100, 40), (500, 500, 500)]
)
def test_flow_count_is_respected(packets, flows, expected):
    assert len(flows_of(generate_batch(packets, flows, seed=21))) == expected


def test_both_directions_of_flows_appear():
    directions = flows_of(generate_batch(4000, 40, seed=22))
    assert len(directions) == 40
    both = sum(1 for d in directions.values() if d == {0, 1})
    assert both >= 36, directions


def test_tcp_sequence_and_ack_numbers_follow_the_bytes_sent():
    batch = generate_batch(3000, 30, seed=23)
    next_seq: dict[tuple, int] = {}
    checked_seq = checked_ack = 0
    for raw in batch:
        pkt = Ether(bytes(raw))
        if TCP not in pkt:
            continue
        key, direction = flow_key(pkt)
        tcp = pkt[TCP]
        net = pkt[IP] if IP in pkt else pkt[IPv6]
        payload = (net.len - net.ihl * 4 if IP in pkt else net.plen) - tcp.dataofs * 4
        if (key, direction) in next_seq:
            assert tcp.seq == next_seq[key, direction]
            checked_seq += 1
        if (key, 1 - direction) in next_seq:
            assert tcp.ack == next_seq[key, 1 - direction]
            checked_ack += 1
        next_seq[key, direction] = (tcp.seq + payload) % 2**32
        assert tcp.flags == ("PA" if payload else "A")
    assert checked_seq > 1000 and checked_ack > 1000


# -- determinism, streaming, time --------------------------------------------------------------
def test_same_seed_same_packets_other_seed_other_packets():
    a = generate_batch(5000, 100, seed=3)
    b = generate_batch(5000, 100, seed=3)
    c = generate_batch(5000, 100, seed=4)
    assert a.same_packets(b)
    assert np.array_equal(a.data, b.data)
    assert not np.array_equal(a.caplen, c.caplen)
    assert not set(flows_of(a[:500])) & set(flows_of(c[:500]))


@pytest.mark.parametrize("batch_packets", [1, 7, 999, 5000, 100_000])
def test_batches_are_the_one_batch_cut_up(batch_packets):
    packets = 300 if batch_packets == 1 else 5000
    whole = generate_batch(packets, 50, seed=5, ipv6_share=0.5)
    parts = list(generate_batches(packets, 50, seed=5, batch_packets=batch_packets, ipv6_share=0.5))
    assert [len(p) for p in parts[:-1]] == [batch_packets] * (len(parts) - 1)
    assert [p.first_seq for p in parts] == list(range(0, packets, batch_packets))
    assert PacketBatch.concat(parts).same_packets(whole)


def test_timestamps_increase_from_start_at_the_rate():
    batch = generate_batch(20_000, 100, seed=6)
    assert int(batch.ts_ns[0]) == DEFAULT_START_NS
    assert (np.diff(batch.ts_ns) > 0).all()
    later = generate_batch(20_000, 100, seed=6, start_ns=10**18, rate_pps=1000.0)
    assert int(later.ts_ns[0]) == 10**18
    mean_gap = float(np.diff(later.ts_ns).mean())
    assert 0.95e6 < mean_gap < 1.05e6


def test_zero_packets():
    assert len(generate_batch(0)) == 0
    assert list(generate_batches(0)) == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"packets": -1}, ValueError),
        ({"packets": 10, "flows": 0}, ValueError),
        ({"packets": 10, "seed": -1}, ValueError),
        ({"packets": 10.0}, TypeError),
        ({"packets": 10, "rate_pps": 0}, ValueError),
        ({"packets": 10, "ipv6_share": 1.5}, ValueError),
        ({"packets": 10, "vlan_share": 0.6, "qinq_share": 0.6}, ValueError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error):
    with pytest.raises(error):
        generate_batch(**kwargs)


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_packets"):
        generate_batches(10, batch_packets=0)
    with pytest.raises(ValueError, match="flows"):
        generate_batches(10, flows=0)  # before the first batch is asked for


# -- the kernel against its slow twin -----------------------------------------------------------
def ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def naive_frames(plan, table, pool, seq, ipid, last_tsval) -> bytes:
    """The obvious twin of ``build_frames``: struct, and checksums over the bytes themselves."""
    out = bytearray()
    for p in range(len(plan.rows)):
        r = int(plan.rows[p])
        peer = r ^ 1
        n, po = int(plan.pay_len[p]), int(plan.pay_off[p])
        frame = bytearray(table.templates[r, : table.hdr_len[r]].tobytes())
        frame += pool[po : po + n].tobytes()
        l3 = int(table.l2_len[r])
        if table.ipv6[r]:
            l4 = l3 + 40
            struct.pack_into("!H", frame, l3 + 4, len(frame) - l4)
            pseudo = frame[l3 + 8 : l3 + 40]
        else:
            l4 = l3 + 20
            struct.pack_into("!HH", frame, l3 + 2, len(frame) - l3, ipid[r] & 0xFFFF)
            ipid[r] += 1
            struct.pack_into("!H", frame, l3 + 10, ones_complement(bytes(frame[l3:l4])))
            pseudo = frame[l3 + 12 : l3 + 20]
        l4len = len(frame) - l4
        if table.tcp[r]:
            struct.pack_into("!II", frame, l4 + 4, seq[r], seq[peer])
            seq[r] = (seq[r] + n) % 2**32
            frame[l4 + 13] = 0x18 if n else 0x10
            if table.tsopt[r]:
                tsval = (int(plan.ts_ns[p]) // 10**6 + int(table.tsval_base[r])) % 2**32
                struct.pack_into("!II", frame, l4 + 24, tsval, last_tsval[peer])
                last_tsval[r] = tsval
            check = ones_complement(bytes(pseudo + struct.pack("!HH", 6, l4len) + frame[l4:]))
            struct.pack_into("!H", frame, l4 + 16, check)
        else:
            struct.pack_into("!H", frame, l4 + 4, l4len)
            check = ones_complement(bytes(pseudo + struct.pack("!HH", 17, l4len) + frame[l4:]))
            struct.pack_into("!H", frame, l4 + 6, check or 0xFFFF)
        frame += bytes(int(plan.frame_len[p]) - len(frame))
        out += frame
    return bytes(out)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_kernel_matches_its_slow_twin(mix):
    fast = _Generator(1200, 25, 31, **MIXES[mix])
    slow = _Generator(1200, 25, 31, **MIXES[mix])
    seq, ipid, tsval = slow.seq.tolist(), slow.ipid.tolist(), slow.last_tsval.tolist()
    for count in (700, 500):  # two batches: the per-flow state carries over
        batch = fast.next_batch(count)
        expected = naive_frames(slow.plan(count), slow.table, slow.pool, seq, ipid, tsval)
        assert batch.data.tobytes() == expected
    assert fast.seq.tolist() == seq
    assert fast.ipid.tolist() == ipid
    assert fast.last_tsval.tolist() == tsval


def test_pack_templates_matches_slicing():
    rng = np.random.default_rng(5)
    blocks = [rng.integers(0, 256, (50, w), dtype=np.uint8) for w in (22, 40, 32)]
    lengths = [rng.choice(choices, 50) for choices in ((14, 18, 22), (20, 40), (8, 20, 32))]
    out = np.zeros((50, 96), np.uint8)
    pack_templates(out, blocks[0], lengths[0], blocks[1], lengths[1], blocks[2], lengths[2])
    for r in range(50):
        parts = b"".join(b[r, : n[r]].tobytes() for b, n in zip(blocks, lengths, strict=True))
        assert out[r].tobytes() == parts.ljust(96, b"\0")


# -- capture files -------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", ["us", "ns"])
def test_pcap_reads_back_identically_with_dpkt(tmp_path, resolution):
    path = tmp_path / "gen.pcap"
    seen = []
    count = generate_capture(
        path, 3000, 50, seed=7, ts_resolution=resolution, batch_packets=1000, progress=seen.append
    )
    assert count == 3000
    assert seen == [1000, 2000, 3000]
    batch = generate_batch(3000, 50, seed=7)
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        records = list(reader)
    assert len(records) == len(batch)
    for (ts, buf), pkt, ts_ns in zip(records, batch, batch.ts_ns, strict=True):
        assert buf == bytes(pkt)
        if resolution == "ns":
            assert int(ts * 10**9) == int(ts_ns)
        else:
            assert round(ts * 10**6) == int(ts_ns) // 1000


def test_pcapng_reads_back_with_dpkt_and_engine(tmp_path):
    path = tmp_path / "gen.pcapng"
    generate_capture(path, 2000, 40, seed=8, format="pcapng", ts_resolution="ns")
    batch = generate_batch(2000, 40, seed=8)
    with open(path, "rb") as f:
        records = list(dpkt.pcapng.Reader(f))
    assert [buf for _, buf in records] == [bytes(p) for p in batch]
    assert read_capture(path).same_packets(batch)


def test_empty_capture_is_a_valid_pcap(tmp_path):
    path = tmp_path / "empty.pcap"
    assert generate_capture(path, 0) == 0
    with open(path, "rb") as f:
        assert list(dpkt.pcap.Reader(f)) == []
