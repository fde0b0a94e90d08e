"""Configuration files (issue 12) as a user runs them: real ``pktx`` processes taking their
options from a TOML file and the environment, flags over environment over file over defaults,
``pktx config show`` saying where each value came from with secrets masked, and every bad
file or value one line naming the key and the file, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dpkt
import pytest
from locations import ROOT

KEY = "00112233445566778899aabbccddeeff" * 2


def pktx(*args, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PKTX_WORKER_", "PKTX_DELIVER_", "PKTX_DAEMON_"))
        and k != "PKTX_CONFIG"
    }
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    environment["XDG_CONFIG_HOME"] = str(cwd or ROOT / "no-such-config-home")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=cwd,
    )


def shown(*args, env=None) -> dict[str, tuple]:
    run = pktx("config", "show", *args, "--json", env=env)
    assert run.returncode == 0, run.stderr
    return {r["option"]: (r["value"], r["source"]) for r in json.loads(run.stdout)}


def test_a_worker_runs_from_the_file_and_a_flag_or_variable_wins(tmp_path):
    conf = tmp_path / "pktx.toml"
    conf.write_text('[worker]\nconnect = "tcp://127.0.0.1:1"\nmax_idle = 1\ncredit = 8\n')
    run = pktx("worker", "--config", conf)  # no --connect on the command line
    assert run.returncode == 1
    assert "no dispatcher at tcp://127.0.0.1:1 for 1 s; giving up" in run.stderr
    run = pktx("worker", "--config", conf, "--max-idle", "2")
    assert "no dispatcher at tcp://127.0.0.1:1 for 2 s" in run.stderr
    run = pktx("worker", env={"PKTX_CONFIG": str(conf), "PKTX_WORKER_MAX_IDLE": "3"})
    assert "for 3 s" in run.stderr
    seen = shown("worker", "--config", conf, env={"PKTX_WORKER_CREDIT": "3"})
    assert seen["--connect"] == ("tcp://127.0.0.1:1", f"{conf} [worker]")
    assert seen["--credit"] == (3, "env PKTX_WORKER_CREDIT")
    assert seen["--liveness"] == (6, "default")


def test_the_default_file_is_found_and_a_delivery_runs_from_it(tmp_path):
    source = tmp_path / "in.pcap"
    assert pktx("generate", source, "--packets", 300).returncode == 0
    home = tmp_path / "xdg"
    (home / "pktx").mkdir(parents=True)
    (home / "pktx" / "pktx.toml").write_text(
        f'[deliver]\noutput = "{tmp_path / "out.pcap"}"\nworkers = 1\nservice = "encrypt"\n'
        f'param = ["key={KEY}"]\nflow_affinity = true\n'
    )
    run = pktx("deliver", source, cwd=home)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "out.pcap", "rb") as f:
        out = list(dpkt.pcap.Reader(f))
    with open(source, "rb") as f:
        src = list(dpkt.pcap.Reader(f))
    assert len(out) == len(src) and out[0][1] != src[0][1]  # encrypted, every packet there
    seen = shown("deliver", env={"XDG_CONFIG_HOME": str(home)})
    assert seen["--param"][0] == ["key=(secret)"] and KEY not in json.dumps(seen)
    assert seen["--flow-affinity"][0] is True


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[worker]\ncredit = "x"\n', "[worker] credit: not an integer: 'x'"),
        ("[worker]\ncredits = 4\n", "[worker]: unknown key(s) credits"),
        ("[workers]\ncredit = 4\n", "unknown table(s) workers"),
        ("[worker\n", "not TOML"),
        ('[worker]\nexit_on_disconnect = "maybe"\n', "'maybe' is not true or false"),
        ('[deliver]\non_poison = "ignore"\n', "'ignore' is not one of fail, skip"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key_and_the_file(tmp_path, text, said):
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    command = "deliver" if "[deliver]" in text else "worker"
    run = pktx(command, "--config", conf)
    assert run.returncode == 2
    assert run.stderr.startswith(f"pktx: error: {conf}") and said in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_a_bad_variable_and_a_missing_file(tmp_path):
    run = pktx("worker", "--config", tmp_path / "none.toml")
    assert (run.returncode, run.stderr.strip()) == (
        2,
        f"pktx: error: no such configuration file: {tmp_path / 'none.toml'}",
    )
    run = pktx("worker", "--connect", "tcp://127.0.0.1:1", env={"PKTX_WORKER_CREDIT": "-1"})
    assert run.returncode == 2 and "environment PKTX_WORKER_CREDIT" in run.stderr


def test_broker_serve_settings_are_shown_with_their_sources_and_serve_runs_with_them(tmp_path):
    """``pktx config show broker``: broker serve's settings (broker/settings.py) with where each
    came from, the database password masked; then ``broker serve`` with the same file and
    environment listens where the table said."""
    import time

    import httpx
    from locations import free_port

    conf = tmp_path / "broker.toml"
    conf.write_text(
        'db = "postgresql+psycopg://pktx:s3cret-pw@db.example/pktx"\nport = 9000\nworkers = 3\n'
    )
    run = pktx("config", "show", "broker", "--config", conf, env={"PKTX_BROKER_HOST": "0.0.0.0"})
    assert run.returncode == 0, run.stderr
    assert "s3cret-pw" not in run.stdout + run.stderr
    seen = shown("broker", "--config", conf, env={"PKTX_BROKER_PORT": "9001"})
    assert seen["--db"] == ("postgresql+psycopg://pktx:***@db.example/pktx", f"{conf} db")
    assert seen["--port"] == (9001, "env PKTX_BROKER_PORT")  # the environment over the file
    assert seen["--processes"] == (3, f"{conf} workers")  # the old key is still read
    assert seen["--expire-every"] == (30.0, "default")

    conf.write_text("port = 99999\n")
    bad = pktx("config", "show", "broker", "--config", conf)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "port" in bad.stderr and str(conf) in bad.stderr

    port = free_port()
    conf.write_text(f'db = "sqlite:///{tmp_path / "b.sqlite3"}"\nport = {port}\n')
    assert shown("broker", "--config", conf)["--port"] == (port, f"{conf} port")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    serve = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "broker", "serve", "--config", str(conf)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert serve.poll() is None, serve.stderr.read().decode()
            assert time.monotonic() < deadline, "broker serve did not listen where shown"
            time.sleep(0.1)
    finally:
        serve.terminate()
        serve.wait(30)
