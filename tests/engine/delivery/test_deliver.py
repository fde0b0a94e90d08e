"""Delivery end to end: output identical to input, in order, across modes and worker counts."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from delivery_support import CORPUS, pktx_cmd

from engine.capture.reader import read_capture
from engine.delivery.deliver import deliver
from engine.packet.flowhash import flow_hash


@pytest.mark.parametrize(
    ("workers", "mode"),
    [
        (1, {"segment_packets": 500}),
        (2, {"segment_bytes": 64_000}),
        (3, {"segment_ms": 2.0}),
        (2, {}),
    ],
    ids=["1w-packets", "2w-bytes", "3w-ms", "2w-default"],
)
def test_identity_is_byte_identical(sample_pcap, tmp_path, workers, mode):
    out = tmp_path / "out.pcap"
    usage = deliver(str(sample_pcap), str(out), workers=workers, **mode)
    assert out.read_bytes() == sample_pcap.read_bytes()
    assert usage["packets_in"] == usage["packets_out"] == 20_000
    assert usage["bytes_out"] == read_capture(sample_pcap).nbytes
    assert sum(w["packets"] for w in usage["workers"].values()) == 20_000
    assert usage["services"]["identity"]["packets"] == 20_000


def test_time_window_segments_span_at_most_the_window(sample_pcap, tmp_path):
    batch = read_capture(sample_pcap)
    span_ms = (int(batch.ts_ns[-1]) - int(batch.ts_ns[0])) / 1e6
    usage = deliver(str(sample_pcap), str(tmp_path / "o.pcap"), workers=1, segment_ms=span_ms / 10)
    # Ten windows of packet time (give or take the edges) make about ten segments.
    assert 9 <= usage["segments"] <= 12


def test_pcapng_source_keeps_format_and_interfaces(tmp_path):
    src = CORPUS / "libpcap" / "rarp_req_reply.pcapng"
    if not src.exists():
        pytest.skip("capture corpus absent")
    out = tmp_path / "o.pcapng"
    deliver(str(src), str(out), workers=1)
    a, b = read_capture(src), read_capture(out)
    assert a.same_packets(b)
    assert b.interfaces[0].linktype == a.interfaces[0].linktype


@pytest.mark.parametrize(
    "name", ["dpkt/http.pcap", "libpcap/ipv6_ext_headers.pcap", "libpcap/wpa-Induction.pcap"]
)
def test_corpus_captures_pass_through(tmp_path, name):
    src = CORPUS / name
    if not src.exists():
        pytest.skip("capture corpus absent")
    out = tmp_path / "o.pcap"
    deliver(str(src), str(out), workers=2, segment_packets=3)
    assert read_capture(src).same_packets(read_capture(out))


def test_flow_affinity_sends_both_directions_to_one_worker(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    deliver(
        str(sample_pcap),
        str(out),
        workers=3,
        services="stamp",
        flow_affinity=True,
        segment_packets=300,
    )
    a, b = read_capture(sample_pcap), read_capture(out)
    assert len(a) == len(b)
    hashes = flow_hash(a)
    stamps = np.array([bytes(b.packet(i)[8:12]) for i in range(len(b))])
    seen: dict[int, bytes] = {}
    for h, s in zip(hashes.tolist(), stamps.tolist()):
        assert seen.setdefault(h, s) == s, "a flow was split between workers"
    assert len(set(stamps.tolist())) > 1, "all flows went to one worker"
    # Apart from the stamp, the stream is the input, in its original order.
    for i in range(0, len(a), 97):
        x, y = a.packet(i), b.packet(i)
        assert bytes(x[:8]) == bytes(y[:8]) and bytes(x[12:]) == bytes(y[12:])
    assert np.array_equal(a.ts_ns, b.ts_ns)


def test_dropping_service_keeps_order(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    usage = deliver(str(sample_pcap), str(out), workers=2, services="dropodd", segment_packets=100)
    a, b = read_capture(sample_pcap), read_capture(out)
    keep = np.flatnonzero(np.arange(len(a)) % 100 % 2 == 0)
    assert a.take(keep).same_packets(b)
    assert usage["packets_out"] == len(keep)


def test_cli_deliver_writes_usage_record(sample_pcap, tmp_path):
    out, usage_path = tmp_path / "o.pcap", tmp_path / "usage.json"
    proc = subprocess.run(
        pktx_cmd(
            "deliver",
            sample_pcap,
            "-o",
            out,
            "--workers",
            2,
            "--usage-json",
            usage_path,
            "--min-rate",
            "1k",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "delivered 20000 of 20000 packets" in proc.stderr
    usage = json.loads(usage_path.read_text())
    for key in (
        "stream_id",
        "sources",
        "sinks",
        "service_chain",
        "packets_in",
        "bytes_in",
        "packets_out",
        "bytes_out",
        "start",
        "end",
        "duration_ns",
        "mean_rate_bps",
        "peak_rate_bps",
        "rate_series_bps",
        "min_rate_windows_met",
        "min_rate_windows_missed",
        "workers",
        "retries",
        "dead_workers",
        "services",
    ):
        assert key in usage, key
    assert usage["min_rate_windows_missed"] == 0
    assert usage["min_rate_windows_met"] >= 1
    assert out.read_bytes() == sample_pcap.read_bytes()


def test_cli_deliver_bad_source_is_one_line(tmp_path):
    proc = subprocess.run(
        pktx_cmd("deliver", tmp_path / "missing.pcap", "-o", tmp_path / "o.pcap", "--workers", 1),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.pcap").exists()


def test_unknown_service_and_bad_param_are_refused_before_work(sample_pcap, tmp_path):
    from engine.services.base import ServiceError

    with pytest.raises(ServiceError, match="unknown service 'nope'"):
        deliver(str(sample_pcap), str(tmp_path / "o.pcap"), services="nope", workers=1)
    with pytest.raises(ServiceError, match="not taken"):
        deliver(
            str(sample_pcap),
            str(tmp_path / "o.pcap"),
            services="identity",
            params=["level=3"],
            workers=1,
        )
    assert not (tmp_path / "o.pcap").exists()


def test_stream_inspection_with_flow_affinity_finds_split_signatures(tmp_path):
    """200 TCP flows, each sending a signature cut in two segments that land in different
    tasks: with flow affinity each flow's worker sees both halves in order and finds all 200,
    and drops exactly the completing segments."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    flows = 200
    heads = [
        Ether()
        / IP(src=f"10.1.{f // 250}.{f % 250 + 1}", dst="10.9.9.9")
        / TCP(sport=30000 + f, dport=80, seq=1000 * f, flags="PA")
        / b"GET /se"
        for f in range(flows)
    ]
    tails = [
        Ether()
        / IP(src=f"10.1.{f // 250}.{f % 250 + 1}", dst="10.9.9.9")
        / TCP(sport=30000 + f, dport=80, seq=1000 * f + 7, flags="PA")
        / b"cret HTTP/1.1"
        for f in range(flows)
    ]
    src, out = tmp_path / "split.pcap", tmp_path / "o.pcap"
    wrpcap(str(src), heads + tails)  # every head is 200 packets before its tail
    usage = deliver(
        str(src),
        str(out),
        workers=2,
        services="inspect",
        flow_affinity=True,
        segment_packets=16,
        params=["patterns=/secret", "stream=yes", "action=drop"],
    )
    counters = usage["services"]["inspect"]
    assert counters["packets_matched"] == flows
    assert counters["packets_dropped"] == flows
    kept = read_capture(out)
    assert kept.same_packets(read_capture(src).take(np.arange(flows)))
    assert len(usage["workers"]) == 2
