"""Network namespaces joined by veth pairs, for the tests across a network (the engine's
delivery and the daemon's); skipped where they cannot be made."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys

import pytest

# Addresses of our own test hosts, inside namespaces the tests create and remove.
NET = "10.231"


def ip(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def why_not() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"pktx-probe-{os.getpid()}"
    r = ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


@contextlib.contextmanager
def namespaces(roles: list[str], links: list[tuple[str | None, str, int]]):
    """A namespace per role, and a veth pair per ``(a, b, subnet)``: ``a`` gets
    ``NET.subnet.1`` and ``b`` ``NET.subnet.2``; ``a`` None is this process's own namespace
    (its end goes when ``b``'s namespace does). Yields ``{role: namespace}``; removes them."""
    why = why_not()
    if why:
        pytest.skip(why)
    tag = os.getpid() % 10000
    names = {role: f"pktx-{role}-{tag}" for role in roles}
    made = []
    try:
        for ns in names.values():
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for k, (a, b, subnet) in enumerate(links):
            ends = {1: f"pd{tag}{k}a", 2: f"pd{tag}{k}b"}
            ip("link", "add", ends[1], "type", "veth", "peer", "name", ends[2])
            for role, host in ((a, 1), (b, 2)):
                where = () if role is None else ("-n", names[role])
                if role is not None:
                    ip("link", "set", ends[host], "netns", names[role])
                ip(*where, "addr", "add", f"{NET}.{subnet}.{host}/24", "dev", ends[host])
                ip(*where, "link", "set", ends[host], "up")
        yield names
    finally:
        for ns in made:
            ip("netns", "del", ns, check=False)


def inside(ns: str) -> tuple[str, ...]:
    """The prefix that runs a command in ``ns``."""
    return ("ip", "netns", "exec", ns)


def pktx_in(ns: str, *argv) -> list[str]:
    return [*inside(ns), sys.executable, "-m", "engine.cli", *map(str, argv)]
