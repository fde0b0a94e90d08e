"""How pktx processes log (issue 12): JSON lines a collector can read, the same -q/-v before or
after the command's name, the job's ids on every line, and a registered secret masked in
every line whatever logged it."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import datetime

import pytest
from locations import ROOT

from engine import logs

WORKER = ("worker", "--connect", "tcp://127.0.0.1:1", "--max-idle", "1")


def pktx(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    environment.pop("PKTX_LOG_FORMAT", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


def test_a_worker_logs_json_lines_with_its_role_and_the_job_it_serves():
    run = pktx(
        *WORKER,
        "--log-format",
        "json",
        "-v",
        env={"PKTX_LOG_JOB_ID": "42", "PKTX_LOG_AWARD_ID": "7"},
    )
    assert run.returncode == 1
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    assert len(lines) >= 2
    for line in lines:
        assert line["role"] == "worker" and line["level"] in ("debug", "info", "warning", "error")
        assert (line["job_id"], line["award_id"]) == (42, 7)
        when = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
        assert when.utcoffset().total_seconds() == 0
    assert lines[-1]["level"] == "error" and "giving up" in lines[-1]["message"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_and_verbose_mean_the_same_before_or_after_the_command(where, tmp_path):
    source = tmp_path / "in.pcap"
    assert pktx("generate", str(source), "--packets", "200").returncode == 0
    deliver = ("deliver", str(source), "-o", str(tmp_path / "out.pcap"), "--workers", "1")

    def run(*flags: str) -> tuple[set[str], str]:
        args = (*flags, *deliver) if where == "before" else (*deliver, *flags)
        done = pktx(*args)
        assert done.returncode == 0, done.stderr
        levels = {
            line.split(":")[1].strip()
            for line in done.stderr.splitlines()
            if line.startswith("pktx deliver: ")
        }
        return levels, done.stderr

    quiet, said = run("-q")
    assert quiet <= {"WARNING", "ERROR"} and "delivered" not in said  # no summary line
    default, said = run()
    assert default <= {"WARNING", "ERROR"} and "delivered 200 of 200 packets" in said
    verbose, _ = run("-vv")
    assert {"DEBUG", "INFO"} <= verbose


def test_a_bad_log_format_is_a_usage_error():
    run = pktx(*WORKER, env={"PKTX_LOG_FORMAT": "xml"})
    assert run.returncode == 2 and "PKTX_LOG_FORMAT is one of text, json" in run.stderr
    assert pktx(*WORKER, "--log-format", "xml").returncode == 2


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_a_registered_secret_is_masked_wherever_it_appears(fmt):
    key = bytes(range(32))
    logs.register_secret(key)
    logs.register_secret("pktx_s3cr3t-token")
    out = io.StringIO()
    try:
        logs.setup("daemon", fmt=fmt, stream=out)
        log = logging.getLogger("pktx.test")
        log.warning("key %s and token %s", key.hex().upper(), "pktx_s3cr3t-token")
        try:
            raise ValueError(f"bad key {key.hex()}")
        except ValueError:
            log.exception("failed with %r", {"key": key.hex()})
    finally:
        logs.setup("", stream=sys.stderr)
    text = out.getvalue()
    assert key.hex() not in text.lower() and "s3cr3t" not in text
    assert text.count(logs.MASK) >= 4
    if fmt == "json":
        first, second = (json.loads(line) for line in text.splitlines())
        assert first["message"] == f"key {logs.MASK} and token {logs.MASK}"
        assert second["error"].startswith("Traceback") and logs.MASK in second["error"]
