"""``pktx broker admin ...`` bootstraps the directory through the domain functions."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from locations import ROOT, free_port
from marketplace import negotiation_status, overdue_negotiation

from broker.actors import authenticate
from broker.cli import add_broker_commands, main
from broker.settings import load
from broker.store import Store


def run(capsys, db: str, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["broker", "admin", *argv[:1], "--db", db, *argv[1:]])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


def test_bootstrap_a_market_from_the_command_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    code, _, err = run(capsys, db, "network", "early")
    assert code == 1 and "admin init" in err
    code, admin, _ = run(capsys, db, "init")
    assert code == 0 and admin["token"].startswith("pktx_")
    _, net, _ = run(capsys, db, "network", "home")
    _, prov, _ = run(
        capsys,
        db,
        "provider",
        "--network",
        str(net["id"]),
        "--name",
        "home",
        "--services",
        "identity,checksum",
        "--capacity-bps",
        "1000000",
        "--per-gb",
        "100",
        "--per-mbps-hour",
        "10",
    )
    assert prov["services"] == ["checksum", "identity"] and prov["reputation"]["count"] == 0
    _, user, _ = run(capsys, db, "user", "--name", "alice", "--home-provider", str(prov["id"]))
    _, dev, _ = run(capsys, db, "device", "--user", str(user["id"]), "--name", "phone")
    _, phone, _ = run(
        capsys,
        db,
        "phone",
        "--user",
        str(user["id"]),
        "--number",
        "030 12345678",
        "--region",
        "DE",
        "--device",
        str(dev["id"]),
    )
    assert phone["e164"] == "+493012345678"
    _, key, _ = run(capsys, db, "key", "device", str(dev["id"]))
    store = Store(db)
    with store.read() as s:
        assert authenticate(s, key["token"]).user_id == user["id"]
    _, listing, _ = run(capsys, db, "list")
    assert [u["name"] for u in listing["users"]] == ["alice"]
    code, _, err = run(capsys, db, "phone", "--user", str(user["id"]), "--number", "123")
    assert code == 1 and "field number" in err
    assert run(capsys, db, "revoke", key["key_prefix"])[0] == 0
    store.dispose()


def test_the_commands_hang_off_any_parser():
    parser = argparse.ArgumentParser(prog="pktx")
    add_broker_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["broker", "serve", "--db", "sqlite://", "--port", "0"])
    assert (args.port, args.db) == (0, "sqlite://")
    with pytest.raises(SystemExit):
        parser.parse_args(["broker", "admin", "key", "martian", "1"])


def leaf_commands(parser: argparse.ArgumentParser, path=()) -> dict[tuple, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    return {
        leaf: p
        for name, child in subs[0].choices.items()
        for leaf, p in leaf_commands(child, (*path, name)).items()
    }


def test_every_broker_command_that_reports_takes_json(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="pktx")
    add_broker_commands(parser.add_subparsers(dest="command"))
    commands = leaf_commands(parser)
    assert len(commands) >= 15
    for path, p in commands.items():
        takes = any("--json" in a.option_strings for a in p._actions)
        assert takes == (path != ("broker", "serve")), path  # serve reports nothing: it serves
    shown = parser.parse_args(["broker", "statements", "show", "7", "--json"])
    assert shown.format == "json"  # the statement as JSON, as --format json
    db = f"sqlite:///{tmp_path / 'json.sqlite3'}"
    for argv in (["admin", "init"], ["admin", "network", "home"], ["admin", "list"]):
        code = main(["broker", *argv, "--db", db, "--json"])
        out = capsys.readouterr().out
        assert code == 0 and json.loads(out), argv  # one JSON document, as without the flag
    assert main(["broker", "statements", "list", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def serve_settings(monkeypatch, argv: list[str], env: dict[str, str] | None = None):
    """The settings ``pktx broker serve ARGV`` resolves, in a clean environment."""
    for name in [n for n in os.environ if n.startswith("PKTX_BROKER_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="pktx")
    add_broker_commands(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["broker", "serve", *argv])
    return load(
        a.config,
        db=a.db,
        host=a.host,
        port=a.port,
        processes=a.processes,
        expire_every=a.expire_every,
        log_level=a.log_level,
        reputation_half_life_days=a.reputation_half_life_days,
    )


def test_serve_settings_come_from_flags_over_environment_over_a_file(monkeypatch, tmp_path):
    s = serve_settings(monkeypatch, [])
    assert (s.host, s.port, s.processes, s.expire_every, s.log_level) == (
        "127.0.0.1",
        8040,
        1,
        30.0,
        "info",
    )
    config = tmp_path / "broker.toml"
    config.write_text('port = 9001\nprocesses = 2\nexpire_every = 5.0\nlog_level = "debug"\n')
    s = serve_settings(monkeypatch, ["--config", str(config)])
    assert (s.port, s.processes, s.expire_every, s.log_level) == (9001, 2, 5.0, "debug")
    s = serve_settings(monkeypatch, ["--config", str(config)], {"PKTX_BROKER_PROCESSES": "3"})
    assert (s.port, s.processes) == (9001, 3)
    s = serve_settings(
        monkeypatch, ["--config", str(config), "--processes", "4"], {"PKTX_BROKER_PROCESSES": "3"}
    )
    assert s.processes == 4
    # What the command exports is what a server process then reads back.
    for name, value in s.export().items():
        monkeypatch.setenv(name, value)
    assert load() == s


def test_the_old_name_of_processes_is_still_read(monkeypatch, tmp_path):
    config = tmp_path / "old.toml"
    config.write_text("workers = 2\n")
    assert serve_settings(monkeypatch, ["--config", str(config)]).processes == 2
    assert serve_settings(monkeypatch, [], {"PKTX_BROKER_WORKERS": "3"}).processes == 3
    assert serve_settings(monkeypatch, ["--workers", "5"]).processes == 5


def test_bad_serve_settings_are_one_line_naming_the_setting(monkeypatch, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="pktx")
    add_broker_commands(parser.add_subparsers(dest="command"))
    for name in [n for n in os.environ if n.startswith("PKTX_BROKER_")]:
        monkeypatch.delenv(name)
    assert (
        parser.parse_args(["broker", "serve", "--processes", "0"]).func(
            parser.parse_args(["broker", "serve", "--processes", "0"])
        )
        == 1
    )
    assert "processes" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("port = [\n")
    args = parser.parse_args(["broker", "serve", "--config", str(broken)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "configuration file" in err and "broken.toml" in err and "Traceback" not in err
    args = parser.parse_args(["broker", "serve", "--config", str(tmp_path / "missing.toml")])
    assert args.func(args) == 1 and "no such configuration file" in capsys.readouterr().err
    monkeypatch.setenv("PKTX_BROKER_PORT", "70000")
    args = parser.parse_args(["broker", "serve"])
    assert args.func(args) == 1 and "PKTX_BROKER_PORT" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_expires_overdue_negotiations_on_a_timer(world, workers):
    """``pktx broker serve`` as its own process (with one worker, and with uvicorn's worker
    processes) marks a negotiation whose deadline passed expired without being asked to."""
    nid = overdue_negotiation(world)
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    cmd = [
        sys.executable,
        "-m",
        "broker.cli",
        "broker",
        "serve",
        "--db",
        world.m.store.url,
        "--port",
        str(port),
        "--processes",
        str(workers),
        "--expire-every",
        "0.2",
        "--log-level",
        "warning",
    ]
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as server:
        try:
            deadline = time.monotonic() + 60
            while negotiation_status(world.m.store, nid) == "open":
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "not expired within 60 s"
                time.sleep(0.1)
            while True:  # the first round may run before the socket listens
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server never answered"
                    time.sleep(0.1)
            assert health.json()["status"] == "ok"
        finally:
            server.terminate()
            server.wait(30)
