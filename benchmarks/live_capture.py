"""Live capture for ``pktx bench deliver``: a capture's frames sent as fast as one process goes
from a network namespace across a veth pair, captured through the TPACKET_V3 ring."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time

# Reads the capture before it says it is ready, so the clock covers sending only.
_SENDER = r"""
import socket, sys, time
from engine.capture.reader import read_capture
frames = [bytes(p) for p in read_capture(sys.argv[1])]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[2], 0))
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
for f in frames:
    s.send(f)
print(time.perf_counter() - t0, flush=True)
"""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def why_not() -> str | None:
    """Why live capture cannot be measured here (None: it can)."""
    if sys.platform != "linux" or shutil.which("ip") is None:
        return "needs Linux with iproute2"
    if os.geteuid() != 0:
        return "needs root (a namespace, a veth pair and CAP_NET_RAW)"
    return None


@contextlib.contextmanager
def veth_to_namespace(mtu: int = 9000):
    """(device here, namespace, device there): a veth pair with IPv6 off and no addresses, so
    only what is sent crosses it; both removed afterwards."""
    tag = os.getpid() % 10000
    ns, here, there = f"pktx-bench-{tag}", f"pxb{tag}a", f"pxb{tag}b"
    _ip("netns", "add", ns)
    try:
        _ip(
            "link",
            "add",
            here,
            "mtu",
            str(mtu),
            "type",
            "veth",
            "peer",
            "name",
            there,
            "mtu",
            str(mtu),
        )
        _ip("link", "set", there, "netns", ns)
        for cmd in ([], ["ip", "netns", "exec", ns]):
            dev = there if cmd else here
            subprocess.run(
                [*cmd, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=True
            )
        _ip("link", "set", here, "up")
        _ip("-n", ns, "link", "set", there, "up")
        yield here, ns, there
    finally:
        _ip("link", "del", here, check=False)
        _ip("netns", "del", ns, check=False)


def run(capture: str, packets: int) -> tuple[float, str]:
    """Send ``capture``'s ``packets`` frames and capture them: (seconds from the first send to
    the last block read, a note with the sender's rate, the kernel's drops and the reading
    thread's CPU time as a share of those seconds)."""
    from engine.delivery.sources import open_source

    with veth_to_namespace() as (here, ns, there):
        source = open_source(f"iface:{here}")
        done = {"packets": 0, "last": 0.0, "cpu": 0.0}

        def read() -> None:
            cpu = time.thread_time()
            for b in source:
                if len(b):
                    done["packets"] += len(b)
                    done["last"] = time.perf_counter()
                    done["cpu"] = time.thread_time() - cpu

        sender = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _SENDER, capture, there],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        reader = threading.Thread(target=read, daemon=True)
        try:
            assert sender.stdout.readline().strip() == "ready", "the sender failed"
            reader.start()
            t0 = time.perf_counter()
            sender.stdin.write("go\n")
            sender.stdin.flush()
            send_s = float(sender.stdout.readline())
            sender.wait(60)
            deadline = time.monotonic() + 2
            while (
                done["packets"] + source.stats()["kernel_drops"] < packets
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
        finally:
            source.stop()
            if reader.is_alive():
                reader.join(10)
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        stats = source.stats()
    secs = done["last"] - t0
    note = (
        f"sender {packets / send_s / 1e6:.2f} M/s; captured {done['packets']:,}, kernel "
        f"dropped {stats['kernel_drops']:,}; reader CPU {done['cpu'] / secs:.0%}"
    )
    return secs, note
