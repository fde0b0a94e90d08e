"""A tiny `benchmarks.daemon_table` (``pktx bench daemon``): a real broker and daemon, a
2,000-packet job both ways, one award to a udp:// sink. Its numbers are not asserted against
the targets (a benchmark, not a timed test); what must hold at any speed is: the first packet
arrives after the award and after the claim, the job is done through the daemon, and the table
reports both targets."""

from __future__ import annotations

import io

from rich.console import Console

from benchmarks import daemon_table as dt


def test_a_tiny_bench_daemon(tmp_path):
    r = dt.measure(2000, 1, workdir=str(tmp_path))
    (latency,), (claim,) = r["latency"], r["claim"]
    assert 0 < claim < latency < 60
    (deliver,), (daemon,), (running,) = r["deliver"], r["daemon"], r["running"]
    assert deliver > 0 and 0 < running < daemon
    assert r["bytes"] > 0 and r["packets"] == 2000
    out = io.StringIO()
    dt.report(Console(file=out, width=200), r)
    text = out.getvalue()
    assert "award to first packet on loopback < 1 s" in text
    assert "daemon overhead on a delivery < 2% of pktx deliver's throughput" in text
    assert "pktx deliver (whole process" in text and "load average" in text
    assert list(tmp_path.iterdir()) == []          # its broker, daemon and files are gone
