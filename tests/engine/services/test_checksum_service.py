"""The checksum service: wrong checksums rewritten as scapy computes them, and counted."""

from __future__ import annotations

import numpy as np
import pytest
from payload_oracle import (
    break_checksums,
    eth,
    need_corpus,
    packets,
    read_only,
    scapy_disagreements,
    scapy_rebuild,
    traffic,
)
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.packet import Raw

from engine.capture.batch import PacketBatch
from engine.packet.checksum import verify_checksums
from engine.services import ServiceError, build_chain, parse_chain
from engine.services.checksum import Checksum


def test_generated_traffic_is_already_correct_and_passed_as_is():
    batch = traffic(1000)
    svc = Checksum()
    assert svc.process(batch) is batch
    counters = svc.take_counters()
    assert counters["tcp_correct"] + counters["udp_correct"] == 1000
    assert not any(k.endswith("_fixed") for k in counters)


def test_broken_checksums_are_fixed_as_scapy_computes_them():
    good = traffic(600, seed=11)
    broken = read_only(break_checksums(good, seed=2, share=0.5))
    wrong = verify_checksums(broken)
    svc = Checksum()
    out = svc.process(broken)
    assert out is not broken and not broken.data.flags.writeable
    assert packets(out) == packets(good)
    assert scapy_disagreements(out) == []
    counters = svc.take_counters()
    assert counters["ipv4_fixed"] == int((wrong.ip == 2).sum())
    assert counters["tcp_fixed"] + counters["udp_fixed"] == int((wrong.l4 == 2).sum())
    assert counters["ipv4_fixed"] > 50 and counters["tcp_fixed"] > 50


def test_verify_only_counts_and_changes_nothing():
    broken = break_checksums(traffic(500), seed=3)
    wrong = verify_checksums(broken)
    svc = build_chain(parse_chain("checksum", ["verify_only=true"]))[0]
    out = svc.process(broken)
    assert out is broken
    counters = svc.take_counters()
    assert counters["ipv4_wrong"] == int((wrong.ip == 2).sum())
    assert counters["tcp_wrong"] + counters["udp_wrong"] == int((wrong.l4 == 2).sum())


def test_icmp_icmpv6_and_udp_without_checksum():
    pkts = [
        eth() / IP(src="1.2.3.4", dst="4.3.2.1") / ICMP(chksum=0x1234) / Raw(b"ping"),
        eth()
        / IPv6(src="2001:db8::1", dst="2001:db8::2")
        / ICMPv6EchoRequest(cksum=0x4321, data=b"ping6"),
        eth() / IP(src="1.2.3.4", dst="4.3.2.1", chksum=0xFFFF) / UDP(chksum=0) / Raw(b"none"),
    ]
    batch = PacketBatch.from_packets([bytes(p) for p in pkts])
    svc = Checksum()
    out = svc.process(batch)
    counters = svc.take_counters()
    assert counters["icmp_fixed"] == counters["icmpv6_fixed"] == counters["ipv4_fixed"] == 1
    assert counters["udp_no_checksum"] == 1
    expect = [
        eth() / IP(src="1.2.3.4", dst="4.3.2.1") / ICMP() / Raw(b"ping"),
        eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(data=b"ping6"),
        eth() / IP(src="1.2.3.4", dst="4.3.2.1") / UDP(chksum=0) / Raw(b"none"),
    ]
    assert packets(out) == [bytes(p) for p in expect]  # scapy computes the checksums


def test_corpus_checksums_match_scapy_after_the_service():
    for name, batch in need_corpus():
        broken = break_checksums(batch, seed=9, share=0.5)
        out = Checksum().process(read_only(broken))
        assert verify_checksums(out).all_good() or not verify_checksums(batch).all_good(), name
        rows = [
            i
            for i in range(len(batch))
            if scapy_rebuild(batch.packet(i).tobytes(), int(batch.linktypes[i]))
            == batch.packet(i).tobytes()
        ]
        assert scapy_disagreements(out, rows) == [], name


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_verify_only_must_be_a_boolean(value):
    with pytest.raises(ServiceError, match="verify_only"):
        Checksum(verify_only=value)


def test_fixed_batch_keeps_sequence_numbers():
    broken = break_checksums(traffic(200), seed=4).take(np.arange(0, 200, 3))
    out = Checksum().process(broken)
    assert np.array_equal(out.seq, broken.seq)
