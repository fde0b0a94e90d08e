"""Progress bars (issue 12) as a user sees them: on a terminal (a real pseudo-terminal) the
long commands of known size draw one; into a pipe, or with -q or --json, nothing but the
summary is written."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from locations import ROOT

ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    COLUMNS="100",
    TERM="xterm",
)


def on_a_terminal(*args) -> str:
    """What a terminal shows while ``pktx ARGS`` runs with its stderr on it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=ENV,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(120) == 0
    return seen.decode("utf-8", "replace")


@pytest.mark.parametrize("command", ["generate", "convert"])
def test_a_bar_on_a_terminal_and_none_elsewhere(tmp_path, command):
    src = tmp_path / "in.pcap"
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "generate", str(src), "--packets", "400000", "-q"],
        check=True,
        env=ENV,
    )
    args = (
        ["generate", tmp_path / "g.pcap", "--packets", 400_000]
        if command == "generate"
        else ["convert", src, tmp_path / "c.pcapng"]
    )
    shown = on_a_terminal(*args)
    assert "━" in shown and "%" in shown  # rich's bar and its percentage
    assert "wrote 400000 packets" in shown
    piped = subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert piped.returncode == 0 and "━" not in piped.stderr and "%" not in piped.stderr
    assert piped.stderr.startswith("wrote 400000 packets")
    quiet = on_a_terminal(*args, "-q")
    assert quiet.strip() == ""
