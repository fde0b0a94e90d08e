"""``pktx bench chaos`` (``benchmarks/daemon_chaos.py``): its sink check counts what a sink
does wrong against naive examples, every broken invariant is named, and a tiny run from the
command line (3 SIGKILLs, the broker restarted once) meets every invariant and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dpkt
import pytest
from locations import ROOT

from benchmarks.daemon_chaos import sink_faults, violations


def _udp(sport: int, payload: bytes) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=53, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", p=17, data=udp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


def test_sink_faults_counts_missing_duplicated_and_reordered_packets():
    a1, a2, a3 = (_udp(1000, bytes([i])) for i in range(3))
    b1, b2 = (_udp(2000, bytes([i])) for i in range(2))
    source = [a1, b1, a2, b2, a3]
    assert sink_faults(source, source) == {"missing": 0, "duplicates": 0, "out_of_order": 0}
    # flows interleaved differently, each in its order: nothing wrong
    assert sink_faults(source, [b1, b2, a1, a2, a3]) == {
        "missing": 0,
        "duplicates": 0,
        "out_of_order": 0,
    }
    assert sink_faults(source, [a1, b1, a2, b2]) == {
        "missing": 1,
        "duplicates": 0,
        "out_of_order": 0,
    }
    assert sink_faults(source, [a1, b1, a2, b2, a3, b2])["duplicates"] == 1
    assert sink_faults(source, [a2, b1, a1, b2, a3])["out_of_order"] == 2


def test_every_broken_invariant_is_named():
    good = {
        "job_id": 7,
        "status": "done",
        "source_packets": 3,
        "delivered_packets": 3,
        "delivered_bytes": 3000,
        "missing": 0,
        "duplicates": 0,
        "out_of_order": 0,
        "billed_packets": 3,
        "billed_bytes": 3000,
        "charged_minor": 2000,
        "owed_minor": 2000,
        "reports": 1,
        "counted_twice": 0,
    }
    run = {"jobs": [good], "leftovers": [], "drain_exit": 0}
    assert violations(run) == []
    bad = {
        **good,
        "status": "running",
        "duplicates": 1,
        "billed_bytes": 6000,
        "charged_minor": 5000,
        "counted_twice": 1,
    }
    found = violations({**run, "jobs": [bad], "leftovers": [".job-0.pcap.x.part"], "drain_exit": 1})
    assert len(found) == 7, found
    assert any("1 packet(s) duplicates" in v for v in found)
    assert any("counted twice" in v for v in found)
    assert any("charged 5000" in v for v in found)


@pytest.mark.slow
def test_pktx_bench_chaos_runs_a_few_cycles_and_every_invariant_holds(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "bench",
            "chaos",
            "--cycles",
            "3",
            "--broker-every",
            "2",
            "--packets",
            "500",
            "--job-seconds",
            "0.5",
            "--seed",
            "7",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path), "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)  # --json: one document, its numbers the run's
    assert doc["bench"] == "chaos" and doc["exit_status"] == 0
    assert doc["parameters"]["cycles"] == 3 and doc["parameters"]["broker_every"] == 2
    (table,) = doc["tables"]
    assert "3 SIGKILLs of pktx daemon" in table["title"]
    measured = {r["what"]: r["measured"] for r in table["rows"]}
    assert measured["daemon SIGKILLed and restarted (cycles)"] == {"value": 3, "unit": "kills"}
    assert measured["broker SIGKILLed and restarted"]["value"] >= 1
    jobs, done_jobs = measured["jobs requested / done"]["value"]
    assert jobs == done_jobs >= 1
    delivered, source = measured["packets delivered (sinks, dpkt) / in the sources"]["value"]
    assert delivered == source == jobs * 500
    assert measured["packets missing / duplicated / out of order in their flow"]["value"] == [
        0,
        0,
        0,
    ]
    billed, sent = measured["bytes billed (GET /usage) / delivered (sinks)"]["value"]
    assert billed == sent > 0
    assert "time to recover after a kill, median / p95 / max (s)" in measured
    checks = {c["target"]: c["met"] for c in doc["checks"]}
    for verdict in (
        "every packet in the sink exactly once and in order per flow",
        "usage billed equals usage delivered (packets, bytes, charges)",
        "no report counted twice",
    ):
        assert checks[verdict] is True, doc
    assert not any("violation" in n for n in doc["notes"])
    # Its broker, daemon and files are gone. (A delivery killed with its daemon leaves its
    # local workers' ipc folder, pktx-XXXX, behind: not the bench's to remove.)
    assert list(tmp_path.glob("pktx-bench-chaos-*")) == []
