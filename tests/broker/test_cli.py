"""``pktx broker admin ...`` bootstraps the directory through the domain functions."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from marketplace import negotiation_status, overdue_negotiation

from broker.actors import authenticate
from broker.cli import add_broker_commands, main
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
    _, prov, _ = run(capsys, db, "provider", "--network", str(net["id"]), "--name", "home",
                     "--services", "identity,checksum", "--capacity-bps", "1000000",
                     "--per-gb", "100", "--per-mbps-hour", "10")
    assert prov["services"] == ["checksum", "identity"] and prov["reputation"]["count"] == 0
    _, user, _ = run(capsys, db, "user", "--name", "alice", "--home-provider", str(prov["id"]))
    _, dev, _ = run(capsys, db, "device", "--user", str(user["id"]), "--name", "phone")
    _, phone, _ = run(capsys, db, "phone", "--user", str(user["id"]), "--number",
                      "030 12345678", "--region", "DE", "--device", str(dev["id"]))
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
    assert (args.host, args.port, args.db) == ("127.0.0.1", 0, "sqlite://")
    with pytest.raises(SystemExit):
        parser.parse_args(["broker", "admin", "key", "martian", "1"])


def test_serve_takes_workers_and_an_expiry_period():
    parser = argparse.ArgumentParser(prog="pktx")
    add_broker_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["broker", "serve"])
    assert (args.workers, args.expire_every, args.log_level) == (1, 30.0, "info")
    args = parser.parse_args(["broker", "serve", "--workers", "3", "--expire-every", "0",
                              "--log-level", "warning"])
    assert (args.workers, args.expire_every, args.log_level) == (3, 0.0, "warning")
    assert args.func(parser.parse_args(["broker", "serve", "--workers", "0"])) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_expires_overdue_negotiations_on_a_timer(world, workers):
    """``pktx broker serve`` as its own process (with one worker, and with uvicorn's worker
    processes) marks a negotiation whose deadline passed expired without being asked to."""
    nid = overdue_negotiation(world)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "broker.cli", "broker", "serve", "--db", world.m.store.url,
           "--port", str(port), "--workers", str(workers), "--expire-every", "0.2",
           "--log-level", "warning"]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as server:
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
