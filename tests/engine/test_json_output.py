"""``--json`` on the engine's commands that report (issue 12): one JSON document on stdout that
a script can rely on, checked against the files themselves (dpkt) and the usage record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dpkt
from locations import ROOT


def pktx(*args) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode in (0, 1), run.stderr
    return {"status": run.returncode, **json.loads(run.stdout)}


def count(path) -> int:
    with open(path, "rb") as f:
        reader = dpkt.pcapng.Reader(f) if str(path).endswith("ng") else dpkt.pcap.Reader(f)
        return sum(1 for _ in reader)


def test_generate_convert_deliver_keys_and_worker_report_in_json(tmp_path):
    src, ng = tmp_path / "in.pcap", tmp_path / "in.pcapng"
    made = pktx("generate", src, "--packets", 500, "--flows", 20, "--json")
    assert (made["packets"], made["flows"], made["format"]) == (500, 20, "pcap")
    assert count(src) == 500
    converted = pktx("convert", src, ng, "--json")
    assert (converted["packets"], converted["format"], converted["damage"]) == (
        500,
        "pcapng",
        False,
    )
    assert count(ng) == 500
    usage_file = tmp_path / "usage.json"
    usage = pktx(
        "deliver",
        src,
        "-o",
        tmp_path / "out.pcap",
        "--workers",
        1,
        "--json",
        "--usage-json",
        usage_file,
    )
    recorded = json.loads(usage_file.read_text())
    assert usage["packets_out"] == recorded["packets_out"] == count(tmp_path / "out.pcap")
    assert {k: v for k, v in usage.items() if k != "status"} == recorded
    keys = pktx("keys", "generate", tmp_path / "keys", "--json")
    assert all(os.path.exists(path) for name, path in keys.items() if name != "status")
    worker = pktx("worker", "--connect", "tcp://127.0.0.1:1", "--max-idle", 1, "--json", "-q")
    assert (worker["status"], worker["tasks_done"], worker["exit_status"]) == (1, 0, 1)
