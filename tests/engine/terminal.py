"""Running ``pktx`` as a user sees it on a terminal: its stderr on a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from locations import ROOT

ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    COLUMNS="100",
    TERM="xterm",
)


def on_a_terminal(*args, timeout: float = 120) -> str:
    """What a terminal shows while ``pktx ARGS`` runs with its stderr on it (it must exit 0)."""
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
    assert proc.wait(timeout) == 0, seen.decode("utf-8", "replace")[-3000:]
    return seen.decode("utf-8", "replace")


def piped(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """``pktx ARGS`` with its output into pipes, as a script runs it."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )
