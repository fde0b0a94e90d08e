"""Delivery across a network: dispatcher and two workers in separate network namespaces,
joined by veth pairs (the project's own test hosts). Skipped where namespaces can't be made."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
from delivery_support import free_port
from netns_support import NET, why_not
from netns_support import ip as _ip


@contextlib.contextmanager
def _namespaces(roles: list[str], links: list[tuple[str, str, int]]):
    """Namespaces for ``roles``, and a veth pair for each ``(a, b, subnet)``: ``a`` gets
    ``NET.subnet.1``, ``b`` ``NET.subnet.2``. Yields ``{role: namespace}`` and
    ``{(role, subnet): device}``; removes them all afterwards."""
    why = why_not()
    if why:
        pytest.skip(why)
    tag = os.getpid() % 10000
    names = {role: f"pktx-{role}-{tag}" for role in roles}
    devices = {}
    made = []
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for k, (a, b, subnet) in enumerate(links):
            for role, host in ((a, 1), (b, 2)):
                devices[(role, subnet)] = f"px{tag}{k}{host}"
            _ip(
                "link",
                "add",
                devices[(a, subnet)],
                "type",
                "veth",
                "peer",
                "name",
                devices[(b, subnet)],
            )
            for role, host in ((a, 1), (b, 2)):
                dev = devices[(role, subnet)]
                _ip("link", "set", dev, "netns", names[role])
                _ip("-n", names[role], "addr", "add", f"{NET}.{subnet}.{host}/24", "dev", dev)
                _ip("-n", names[role], "link", "set", dev, "up")
        yield names, devices
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def hosts():
    with _namespaces(["disp", "w1", "w2"], [("disp", "w1", 1), ("disp", "w2", 2)]) as (n, _):
        yield n


def _in(ns: str, *cmd) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "engine.cli", *map(str, cmd)]


def test_delivery_across_namespaces(hosts, sample_pcap, tmp_path):
    port = free_port()
    out, usage_path = tmp_path / "o.pcap", tmp_path / "usage.json"
    disp = subprocess.Popen(
        _in(
            hosts["disp"],
            "deliver",
            sample_pcap,
            "-o",
            out,
            "--workers",
            0,
            "--bind",
            f"tcp://0.0.0.0:{port}",
            "--min-workers",
            2,
            "--segment-packets",
            500,
            "--usage-json",
            usage_path,
            "-q",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers = [
        subprocess.Popen(
            _in(
                hosts[w],
                "worker",
                "--connect",
                f"tcp://{NET}.{i}.1:{port}",
                "--name",
                w,
                "--exit-on-disconnect",
                "--max-idle",
                60,
            ),
            stdin=subprocess.DEVNULL,
        )
        for i, w in ((1, "w1"), (2, "w2"))
    ]
    try:
        assert disp.wait(120) == 0, disp.stderr.read().decode()
        for w in workers:
            assert w.wait(30) == 0
    finally:
        for p in (disp, *workers):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert out.read_bytes() == sample_pcap.read_bytes()
    usage = json.loads(usage_path.read_text())
    assert set(usage["workers"]) == {"w1", "w2"}
    assert sum(w["packets"] for w in usage["workers"].values()) == 20_000


@pytest.fixture
def wire():
    """Two namespaces joined by one veth pair: a node that captures, and a sender."""
    with _namespaces(["node", "peer"], [("node", "peer", 9)]) as (names, devices):
        yield names, devices[("node", 9)]


_SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"live packet %05d" % i, (sys.argv[1], 9999))
    time.sleep(0.01)
"""


def test_live_interface_source(wire, tmp_path):
    from engine.capture.packet_ring import _warm_up

    _warm_up()  # numba's cache is warm for the node: its first compile is not what is tested
    names, dev = wire
    out = tmp_path / "o.pcap"
    node = subprocess.Popen(
        _in(
            names["node"],
            "deliver",
            f"iface:{dev}",
            "-o",
            out,
            "--workers",
            1,
            "--segment-ms",
            20,
            "--idle-timeout",
            8,
            "-q",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Up and capturing by then (it waits for its worker first); the idle timeout ends the
        # stream well after the last packet, however fast the node starts.
        time.sleep(4)
        subprocess.run(
            ["ip", "netns", "exec", names["peer"], sys.executable, "-c", _SEND, f"{NET}.9.1", "40"],
            check=True,
            timeout=60,
        )
        assert node.wait(120) == 0, node.stderr.read().decode()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    from engine.capture.reader import read_capture

    batch = read_capture(out)
    wanted = [b"live packet %05d" % i for i in range(40)]
    payloads = [bytes(batch.packet(i))[-len(wanted[0]) :] for i in range(len(batch))]
    seen = [p for p in payloads if p in wanted]
    assert list(dict.fromkeys(seen)) == wanted
    assert batch.interfaces[0].linktype == 1
