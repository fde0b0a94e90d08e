"""The service units in deploy/systemd (issue 12): systemd's own checker finds nothing to say
about them, and the command each starts is one pktx accepts (so they cannot drift from the
command line)."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from locations import ROOT

from engine.cli import build_parser

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/usr/local/bin/pktx"  # where the units expect it (pip install --prefix /usr/local)
FROM_THE_FILE = {
    "daemon": ["--broker", "https://broker.example:8040"],
    "worker": ["--connect", "tcp://dispatcher.example:5555"],
}


def unit(path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def test_there_is_a_unit_for_each_role():
    assert [u.name for u in UNITS] == [
        "pktx-broker.service",
        "pktx-daemon.service",
        "pktx-worker@.service",
    ]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_runs_a_command_pktx_accepts_and_is_hardened(path):
    service = unit(path)["Service"]
    argv = shlex.split(
        service["ExecStart"]
        .replace("%i", "1")
        .replace("%H", "host")
        .replace("${CREDENTIALS_DIRECTORY}", "/run/credentials")
    )
    assert argv[0] == INSTALLED
    # What the unit leaves to /etc/pktx/pktx.toml, given here as flags.
    argv += FROM_THE_FILE.get(argv[1], [])
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert args.func is not None and args.config.startswith("/etc/pktx/")
    assert service["User"] == "pktx" and service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 30
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
    ):
        assert service[key] == value, key
    caps = service["CapabilityBoundingSet"]
    assert caps == ("CAP_NET_RAW" if path.name == "pktx-daemon.service" else "")
    assert service["Environment"] == "PKTX_LOG_FORMAT=json"
    assert "key" not in service["Environment"].lower()


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verify_says_nothing(tmp_path):
    pktx = shutil.which("pktx", path=str(Path(sys.executable).parent))
    if pktx is None:
        pytest.skip("no pktx beside this Python")
    names = []
    for path in UNITS:  # the one change: where pktx is on this machine
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, pktx))
        names.append(path.name.replace("@.", "@1."))
    run = subprocess.run(
        ["systemd-analyze", "verify", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and run.stderr.strip() == "", run.stderr
