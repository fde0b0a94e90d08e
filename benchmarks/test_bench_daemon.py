"""A tiny `benchmarks.daemon_table` (``pktx bench daemon``): a real broker and daemon, two
job sizes (2,000 and 3,000 packets) both ways, one award to a udp:// sink. Its numbers are not
asserted against the targets (a benchmark, not a timed test); what must hold at any speed is:
the first packet arrives after the award and after the claim, each job is done through the
daemon, and the table reports both targets at each size."""

from __future__ import annotations

import io

from benchmarks import daemon_table as dt
from benchmarks.report import Report


def test_a_tiny_bench_daemon(tmp_path):
    r = dt.measure([2000, 3000], 1, workdir=str(tmp_path))
    (latency,), (claim,) = r["latency"], r["claim"]
    assert 0 < claim < latency < 60
    assert [j["packets"] for j in r["jobs"]] == [2000, 3000]
    for j in r["jobs"]:
        (deliver,), (daemon,), (running,) = j["deliver"], j["daemon"], j["running"]
        assert deliver > 0 and 0 < running < daemon and j["bytes"] > 0
        (own,) = j["own_ms"]  # the daemon logged its own time on the job
        assert 0 < own < running * 1000
    out = io.StringIO()
    report = Report("daemon", out=out)
    dt.fill(report, r)
    report.emit()
    text = out.getvalue()
    assert "award to first packet on loopback < 1 s" in text
    assert "daemon overhead on a delivery < 2% of pktx deliver's throughput, 2,000" in text
    assert "3,000 packets (award -> complete" in text
    assert "the daemon's own time a job" in text
    assert "pktx deliver (whole process" in text and "load average" in text
    assert list(tmp_path.iterdir()) == []  # its broker, daemon and files are gone
