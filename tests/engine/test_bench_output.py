"""``pktx bench ... --json`` (issue 12): one JSON document a script can rely on, whose numbers
are the run's own; a progress bar of the run's steps on a terminal, none elsewhere."""

from __future__ import annotations

import io
import json
import math
import os
import re

from terminal import on_a_terminal, piped

from benchmarks import services_table
from benchmarks.report import Report

PACKETS = 3000
BENCH = ("bench", "services", "--packets", PACKETS, "--repeat", 1)


def test_bench_json_is_one_document_of_the_runs_numbers():
    done = piped(*BENCH, "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)  # the whole of stdout, nothing around it
    assert doc["bench"] == "services" and doc["exit_status"] == 0
    assert doc["parameters"] == {"packets": PACKETS, "repeat": 1, "stream_gb": 0.0}
    assert doc["machine"]["cores"] == os.cpu_count()
    assert doc["machine"]["backend"]
    (table,) = doc["tables"]
    units = {c["key"]: c["unit"] for c in table["columns"]}
    assert units == {
        "what": None,
        "seconds": "s",
        "packets_per_s": "packets/s",
        "payload_bytes_per_s": "bytes/s",
        "of_bare": "ratio",
    }
    rows = table["rows"]
    assert len(rows) == 8
    payload_bytes = {round(r["payload_bytes_per_s"] * r["seconds"]) for r in rows}
    assert len(payload_bytes) == 1  # every row covered the same payloads
    for svc, bare in zip(rows[::2], rows[1::2]):
        # each rate is the run's packets over the row's own seconds
        for r in (svc, bare):
            assert r["seconds"] > 0
            assert math.isclose(r["packets_per_s"] * r["seconds"], PACKETS, rel_tol=1e-9)
        assert bare["of_bare"] == "reference"
        assert math.isclose(svc["of_bare"], bare["seconds"] / svc["seconds"], rel_tol=1e-9)
    checks = {c["target"]: c["met"] for c in doc["checks"]}
    assert set(checks) == {
        "encrypt service >= 50% of the bare AES-GCM loop",
        "decrypt service >= 50% of the bare AES-GCM loop",
    }
    for name, (svc, _bare) in zip(("encrypt", "decrypt"), zip(rows[::2], rows[1::2])):
        assert checks[f"{name} service >= 50% of the bare AES-GCM loop"] == (svc["of_bare"] >= 0.5)
    assert "━" not in done.stderr  # not a terminal: no bar


def test_the_table_and_the_json_of_one_run_show_the_same_numbers():
    report = Report("services", out=io.StringIO())
    services_table.run(packets=PACKETS, repeat=1, report=report)
    doc = report.as_json_document()
    report.emit()
    text = report.out.getvalue()
    for row in doc["tables"][0]["rows"]:
        line = next(line for line in text.splitlines() if row["what"][:20] in line)
        cells = [c.strip() for c in line.split("│") if c.strip()]
        assert cells[1] == f"{row['seconds']:.3f}"
        assert cells[2] == f"{row['packets_per_s'] / 1e6:.2f}"
    assert re.search(r"machine: .*, \d+ cores, ", text)


def test_a_bar_of_the_runs_steps_on_a_terminal_and_none_with_json():
    shown = on_a_terminal(*BENCH, "--repeat", 2, timeout=300)
    assert "━" in shown and "pktx bench services" in shown
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # without its colours
    assert "4/4 steps" in plain  # preparing, warming and two rounds
    assert on_a_terminal(*BENCH, "--json", timeout=300).strip() == ""
    assert on_a_terminal(*BENCH, "-q", timeout=300).strip() == ""


def test_bench_daemon_takes_job_sizes_one_by_one():
    from engine.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench", "daemon"]).packets is None  # the table's own sizes
    sizes = parser.parse_args(["bench", "daemon", "--packets", "5", "--packets", "7"]).packets
    assert sizes == [5, 7]
    for table in ("capture", "deliver", "rating", "services", "daemon", "chaos", "broker"):
        assert parser.parse_args(["bench", table, "--json"]).json is True
