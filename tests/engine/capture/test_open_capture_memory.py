"""Streaming a capture far larger than a batch keeps memory bounded, whatever the file's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from locations import ROOT

from engine import CaptureWriter, PacketBatch

FILE_BYTES = 300 << 20
GROWTH_LIMIT_MB = 200

# Run alone in a fresh interpreter and read VmHWM, the peak resident set of this process image:
# ru_maxrss would not do, since Linux carries it over from the forking parent (pytest, large).
STREAM = """
import json, sys
from engine import open_capture

def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

path, batch_packets = sys.argv[1], int(sys.argv[2])
reader = open_capture(path, batch_packets=batch_packets)
before = peak_kb()
packets = touched = 0
for batch in reader:
    packets += len(batch)
    touched += int(batch.data[::4096].sum())  # read every page the batch spans
after = peak_kb()
print(json.dumps({"packets": packets, "growth_kb": after - before}))
"""


@pytest.fixture(scope="module", params=["pcap", "pcapng"])
def big_capture(request, tmp_path_factory):
    """A ~300 MB capture of 1500-byte packets: one batch written again and again (fast)."""
    fmt = request.param
    path = tmp_path_factory.mktemp("big") / f"big.{fmt}"
    rng = np.random.default_rng(7)
    pkts = [rng.integers(0, 256, 1500, np.uint8).tobytes() for _ in range(2048)]
    batch = PacketBatch.from_packets(pkts, ts_ns=np.arange(len(pkts)) * 1000)
    try:
        with CaptureWriter(path, format=fmt) as w:
            while w.bytes_written < FILE_BYTES:
                w.write(batch)
        yield path, w.packets
    finally:
        path.unlink(missing_ok=True)  # pytest keeps old temporary folders: do not keep 300 MB


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status (Linux)")
@pytest.mark.parametrize("batch_packets", [65536, 1000])
def test_streaming_memory_is_bounded(big_capture, batch_packets):
    path, written = big_capture
    assert path.stat().st_size >= FILE_BYTES
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    done = subprocess.run(
        [sys.executable, "-c", STREAM, str(path), str(batch_packets)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["packets"] == written
    growth_mb = result["growth_kb"] / 1024
    assert growth_mb < GROWTH_LIMIT_MB, f"peak RSS grew by {growth_mb:.0f} MB"
