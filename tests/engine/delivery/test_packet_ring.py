"""Live capture through the TPACKET_V3 ring: the block kernel against the naive walk, then real
frames across a veth pair whose other end lives in a network namespace this test creates (the
project's own test host), sent as fast as the sender goes, captured in-process and by a
`pktx deliver iface:` process stopped with a signal. Needs root; skipped otherwise."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from delivery_support import pktx_cmd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from naive import walk_tpacket_block

from engine.capture.ring_kernels import _walk_block
from engine.errors import EngineError

ETHERTYPE = 0x88B5  # IEEE 802 local experimental: nothing else on the link uses it


# -- the block kernel, no root needed -----------------------------------------------------------
def _align16(n: int) -> int:
    return (n + 15) & ~15


def _build_block(frames, size: int = 1 << 16) -> bytes:
    """A retired block as the kernel lays it out: the block header, then each tpacket3_hdr with
    its frame at ``tp_mac`` (deliberately not word-aligned) and the next 16-byte aligned."""
    block = bytearray(size)
    at = first = 48
    for k, (frame, origlen, ts) in enumerate(frames):
        mac = 66 + (k % 5) * 2
        nxt = _align16(mac + len(frame)) if k + 1 < len(frames) else 0
        struct.pack_into(
            "<6IHH", block, at, nxt, ts // 10**9, ts % 10**9, len(frame), origlen, 1, mac, mac + 14
        )
        block[at + mac : at + mac + len(frame)] = frame
        at += nxt
    struct.pack_into("<IIIIII", block, 0, 2, 0, 1, len(frames), first, at + 200)
    return bytes(block)


def _run_kernel(block: bytes, snaplen: int):
    b = np.frombuffer(block, np.uint8)
    n = struct.unpack_from("<I", block, 12)[0]
    out = [
        np.empty(len(block), np.uint8),
        np.empty(n, np.int64),
        np.empty(n, np.uint32),
        np.empty(n, np.uint32),
        np.empty(n, np.int64),
    ]
    used = _walk_block(b, b.view(np.uint32), 48, n, snaplen, *out)
    data, offsets, caplen, origlen, ts = out
    return used, [
        (bytes(data[o : o + c]), int(ol), int(t))
        for o, c, ol, t in zip(offsets, caplen, origlen, ts)
    ]


@pytest.mark.parametrize("snaplen", [262144, 40, 1])
def test_block_kernel_matches_the_naive_walk(snaplen):
    rng = random.Random(snaplen)
    frames = []
    for k in range(200):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(14, 240)))
        frames.append((body, len(body) + rng.randrange(0, 3), 1_700_000_000_123_456_789 + k * 7))
    block = _build_block(frames)
    used, got = _run_kernel(block, snaplen)
    assert got == walk_tpacket_block(block, snaplen)
    assert used == sum(min(len(f), snaplen) for f, _, _ in frames)
    assert [t for _, _, t in got][:2] == [1_700_000_000_123_456_789, 1_700_000_000_123_456_796]


def test_block_kernel_refuses_a_frame_outside_the_block():
    block = bytearray(_build_block([(b"x" * 60, 60, 1)] * 3))
    struct.pack_into("<I", block, 48, 1 << 20)  # the first frame's next_offset points away
    used, _ = _run_kernel(bytes(block), 262144)
    assert used == -2


# -- a veth pair to a namespace ------------------------------------------------------------------
def _ip(*args, check=True):
    return subprocess.run(["ip", *map(str, args)], capture_output=True, text=True, check=check)


def _why_not() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    if os.geteuid() != 0:
        return "capturing and creating network namespaces need root"
    probe = f"pktx-ringprobe-{os.getpid()}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@pytest.fixture
def veth():
    """(capture device in this namespace, sender namespace, sender device): a veth pair with
    IPv6 off and no addresses, so nothing but the test's frames crosses it."""
    why = _why_not()
    if why:
        pytest.skip(why)
    tag = os.getpid() % 10000
    ns, here, there = f"pktx-ring-{tag}", f"pxr{tag}a", f"pxr{tag}b"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{here}.disable_ipv6=1"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{there}.disable_ipv6=1"],
            check=True,
        )
        _ip("link", "set", here, "up")
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield here, ns, there
    finally:
        _ip("link", "del", here, check=False)
        _ip("netns", "del", ns, check=False)


# The sender: distinct frames (a sequence number, lengths 60..1514), built first, then sent as
# fast as one process goes through a raw socket; prints what it sent and how long it took.
_SEND = r"""
import json, socket, struct, sys, time
dev, count, ethertype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
head = b"\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ethertype)
frames = [head + struct.pack("!Q", i) + bytes((i + k) & 0xFF for k in range(46 + i * 37 % 1447))
          for i in range(count)]
t0 = time.perf_counter()
for f in frames:
    s.send(f)
dt = time.perf_counter() - t0
with open(f"/sys/class/net/{dev}/statistics/tx_dropped") as fd:
    link_drops = int(fd.read())
print(json.dumps({"sent": count, "seconds": dt, "link_drops": link_drops}))
"""


def _frames(count: int) -> list[bytes]:
    head = b"\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01" + struct.pack("!H", ETHERTYPE)
    return [
        head + struct.pack("!Q", i) + bytes((i + k) & 0xFF for k in range(46 + i * 37 % 1447))
        for i in range(count)
    ]


def _send(ns: str, dev: str, count: int) -> dict:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _SEND, dev, str(count), str(ETHERTYPE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _check_capture(packets: list[bytes], ts: np.ndarray, sent: dict, stats: dict, window):
    """Every captured frame is one sent, in order, once; the sent ones are all accounted for;
    the times are nanoseconds, in order, inside the test's window."""
    wanted = _frames(sent["sent"])
    seqs = [struct.unpack_from("!Q", p, 14)[0] for p in packets]
    assert all(p == wanted[s] for p, s in zip(packets, seqs)), "a frame differs from the one sent"
    assert seqs == sorted(set(seqs)), "frames out of order or repeated"
    missing = sent["sent"] - len(packets)
    assert missing == stats["kernel_drops"] + sent["link_drops"], (sent, stats, len(packets))
    assert ts.dtype == np.int64 and len(ts) == len(packets)
    assert np.all(np.diff(ts) >= 0)
    assert np.any(ts % 1000 != 0), "timestamps look like microseconds"
    assert window[0] <= ts[0] and ts[-1] <= window[1]


def _report(what: str, sent: dict, captured: int, stats: dict) -> None:
    rate = sent["sent"] / sent["seconds"]
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    sys.stderr.write(
        f"\n{what}: sent {sent['sent']:,} frames at {rate:,.0f}/s, captured "
        f"{captured:,}, kernel dropped {stats['kernel_drops']:,}, link dropped "
        f"{sent['link_drops']:,} (load {' '.join(load)})\n"
    )


COUNT = 50_000


def test_capture_in_process(veth):
    from engine.delivery.sources import open_source

    here, ns, there = veth
    source = open_source(f"iface:{here}")
    batches = []
    reader = threading.Thread(target=lambda: batches.extend(b for b in source if len(b)))
    t0 = time.time_ns()
    reader.start()
    try:
        sent = _send(ns, there, COUNT)
        t1 = time.time_ns()
        time.sleep(0.1)
    finally:
        source.stop()
        reader.join(30)
    assert not reader.is_alive()
    stats = source.stats()
    packets = [bytes(p) for b in batches for p in b]
    ts = np.concatenate([b.ts_ns for b in batches]) if batches else np.zeros(0, np.int64)
    _report("in-process", sent, len(packets), stats)
    assert batches and all(
        b.interfaces[0].linktype == 1 and b.interfaces[0].tsresol == 9 for b in batches
    )
    assert stats["captured"] == len(packets)
    _check_capture(packets, ts, sent, stats, (t0, t1))


def _ring_open_on(dev: str) -> bool:
    with open(f"/sys/class/net/{dev}/ifindex") as f:
        index = int(f.read())
    with open("/proc/net/packet") as f:
        next(f)
        return any(int(line.split()[4]) == index for line in f)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_pktx_deliver_from_an_interface(veth, tmp_path, signum):
    from engine.capture.reader import read_capture

    here, ns, there = veth
    out, usage_path = tmp_path / "out.pcapng", tmp_path / "usage.json"
    node = subprocess.Popen(
        pktx_cmd(
            "deliver",
            f"iface:{here}",
            "-o",
            out,
            "--workers",
            1,
            "--segment-ms",
            50,
            "--usage-json",
            usage_path,
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _ring_open_on(here):
            assert node.poll() is None, node.stderr.read()
            assert time.monotonic() < deadline, "the ring never opened"
            time.sleep(0.05)
        t0 = time.time_ns()
        sent = _send(ns, there, COUNT)
        t1 = time.time_ns()
        time.sleep(0.2)
        node.send_signal(signum)
        assert node.wait(60) == 0, node.stderr.read()
        summary = node.stderr.read()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    usage = json.loads(usage_path.read_text())
    stats = usage["source_stats"]
    batch = read_capture(out)
    packets = [bytes(p) for p in batch]
    _report(f"pktx deliver, {signal.Signals(signum).name}", sent, len(packets), stats)
    assert f"kernel dropped {stats['kernel_drops']}" in summary
    assert usage["packets_out"] == len(packets) == stats["captured"]
    assert batch.interfaces[0].tsresol == 9 and batch.interfaces[0].name == here
    _check_capture(packets, batch.ts_ns, sent, stats, (t0, t1))


def test_a_full_ring_counts_kernel_drops(veth):
    from engine.capture.packet_ring import PacketRing

    here, ns, there = veth
    with PacketRing(here, block_size=4096, block_count=2) as ring:
        t0 = time.time_ns()
        sent = _send(ns, there, 2000)  # the reader is paused: two 4 KiB blocks fill at once
        t1 = time.time_ns()
        time.sleep(0.05)
        batches = []
        while ring.wait(50):
            batches.append(ring.read_block())
        stats = ring.stats()
    packets = [bytes(p) for b in batches for p in b]
    ts = np.concatenate([b.ts_ns for b in batches])
    _report("paused reader, 8 KiB ring", sent, len(packets), stats)
    assert stats["kernel_drops"] > 1000
    assert stats["kernel_packets"] == sent["sent"] - sent["link_drops"]
    _check_capture(packets, ts, sent, stats, (t0, t1))


def test_clear_errors(veth):
    from engine.delivery.sources import open_source

    here, _ns, _there = veth
    with pytest.raises(EngineError, match="no such interface 'pxnope0'"):
        open_source("iface:pxnope0")
    _ip("link", "set", here, "down")
    with pytest.raises(EngineError, match=f"interface {here} is down"):
        open_source(f"iface:{here}")
    with pytest.raises(EngineError, match="unknown option 'snap'"):
        open_source(f"iface:{here}?snap=3")


def test_snaplen_cuts_in_the_kernel(veth):
    from engine.delivery.sources import open_source

    here, ns, there = veth
    source = open_source(f"iface:{here}?snaplen=32&ring_mb=4")
    batches = []
    reader = threading.Thread(target=lambda: batches.extend(b for b in source if len(b)))
    reader.start()
    try:
        sent = _send(ns, there, 500)
        time.sleep(0.1)
    finally:
        source.stop()
        reader.join(30)
    wanted = _frames(sent["sent"])
    got = [(bytes(p), int(o)) for b in batches for p, o in zip(b, b.origlen)]
    assert len(got) + source.stats()["kernel_drops"] + sent["link_drops"] == 500
    assert all(
        p == wanted[struct.unpack_from("!Q", p, 14)[0]][:32]
        and o == len(wanted[struct.unpack_from("!Q", p, 14)[0]])
        for p, o in got
    )
    assert all(b.interfaces[0].snaplen == 32 for b in batches)


def test_no_cap_net_raw_is_a_clear_error(veth):
    """Without CAP_NET_RAW (dropped from the bounding set before exec, so the root child does
    not get it back), the error names the interface and no traceback is shown."""
    here, _ns, _there = veth
    run = (
        "from engine.cli import main; raise SystemExit(main(['deliver', "
        f"'iface:{here}', '-o', '/dev/null', '-q']))"
    )
    drop = (
        "import ctypes, os, sys\n"
        "if ctypes.CDLL(None, use_errno=True).prctl(24, 13, 0, 0, 0):  # PR_CAPBSET_DROP\n"
        "    sys.exit('cannot drop CAP_NET_RAW')\n"
        "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])"
    )
    r = subprocess.run(
        [sys.executable, "-c", drop, run], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stderr
    assert f"iface:{here}: capturing on {here} needs root or CAP_NET_RAW" in r.stderr
    assert "Traceback" not in r.stderr


def test_count_ends_the_stream(veth):
    from engine.delivery.sources import open_source

    here, ns, there = veth
    source = open_source(f"iface:{here}", count=100)
    batches = []
    reader = threading.Thread(target=lambda: batches.extend(b for b in source if len(b)))
    reader.start()
    try:
        _send(ns, there, 500)
        reader.join(30)
    finally:
        source.stop()
        reader.join(30)
    packets = [bytes(p) for b in batches for p in b]
    assert packets == _frames(100)


def test_link_type_follows_the_hardware_type(veth):
    """A tun device (ARPHRD_NONE) carries bare IP packets: LINKTYPE_RAW."""
    from engine.capture.packet_ring import PacketRing

    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun")
    tun = f"pxt{os.getpid() % 10000}"
    _ip("tuntap", "add", "dev", tun, "mode", "tun")
    try:
        _ip("link", "set", tun, "up")
        with PacketRing(tun, block_size=4096, block_count=2) as ring:
            assert ring.interface.linktype == 101
            assert ring.interface.name == tun and ring.interface.tsresol == 9
    finally:
        _ip("link", "del", tun, check=False)
