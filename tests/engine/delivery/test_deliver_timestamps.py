"""Timestamps through a delivery: each interface keeps its resolution unless told otherwise."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from delivery_support import pktx_cmd

from engine.capture.batch import Interface, PacketBatch
from engine.capture.reader import CaptureReader, read_capture
from engine.capture.writer import write_capture

WIRESHARK_TOOLS = ("tshark", "mergecap", "capinfos")
need_wireshark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in WIRESHARK_TOOLS),
    reason="needs Wireshark's tshark, mergecap and capinfos (apt-get install tshark)",
)


def _deliver(src, out, *extra) -> None:
    proc = subprocess.run(
        pktx_cmd("deliver", src, "-o", out, "--workers", 1, "-q", *extra),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def _tshark_frames(path) -> list[str]:
    """Per packet, as tshark reads it: time to the nanosecond, interface, lengths, bytes' md5."""
    proc = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-o",
            "frame.generate_md5_hash:TRUE",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_id",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.md5_hash",
            "-E",
            "separator=,",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.splitlines()


def _capinfos_interfaces(path) -> list[dict[str, str]]:
    """capinfos' description of each interface: link type, snapshot length, time precision."""
    text = subprocess.run(
        ["capinfos", str(path)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    out = []
    for block in re.split(r"Interface #\d+ info:", text)[1:]:
        fields = dict(
            re.findall(r"^\s+(Encapsulation|Capture length|Time precision) = (.*)$", block, re.M)
        )
        out.append(fields)
    return out


@need_wireshark
def test_identity_over_mixed_resolution_pcapng_keeps_every_timestamp(tmp_path):
    """Wireshark's mergecap joins a nanosecond pcap and a microsecond one into a pcapng of two
    interfaces (if_tsresol 9 and 6); delivered through identity, tshark and capinfos read the
    same packets, nanosecond timestamps, interfaces and resolutions in the output as in the
    input."""
    ns, us, src = tmp_path / "ns.pcap", tmp_path / "us.pcap", tmp_path / "in.pcapng"
    for path, res, seed in ((ns, "ns", 1), (us, "us", 2)):
        subprocess.run(
            pktx_cmd(
                "generate",
                path,
                "--packets",
                300,
                "--flows",
                20,
                "--ts-resolution",
                res,
                "--seed",
                seed,
                "-q",
            ),
            check=True,
            timeout=60,
        )
    subprocess.run(
        ["mergecap", "-F", "pcapng", "-w", str(src), str(ns), str(us)], check=True, timeout=60
    )
    frames = _tshark_frames(src)
    assert any(not f.split(",")[0].endswith("000") for f in frames)  # sub-microsecond times
    out = tmp_path / "out.pcapng"
    _deliver(src, out)
    assert _tshark_frames(out) == frames
    assert _capinfos_interfaces(out) == _capinfos_interfaces(src)
    assert [i["Time precision"] for i in _capinfos_interfaces(out)] == [
        "nanoseconds (9)",
        "microseconds (6)",
    ]


@need_wireshark
def test_ts_resolution_option_overrides_every_interface(tmp_path):
    src = tmp_path / "in.pcap"
    subprocess.run(
        pktx_cmd("generate", src, "--packets", 200, "--ts-resolution", "ns", "-q"),
        check=True,
        timeout=60,
    )
    out = tmp_path / "out.pcapng"
    _deliver(src, out, "--ts-resolution", "us")
    times = [f.split(",")[0] for f in _tshark_frames(out)]
    want = [f.split(",")[0][:-3] + "000" for f in _tshark_frames(src)]
    assert times == want
    assert [i["Time precision"] for i in _capinfos_interfaces(out)] == ["microseconds (6)"]


def _two_interfaces() -> PacketBatch:
    """Packets on a nanosecond interface and a microsecond one (as a reader would give)."""
    pkts = [bytes([i]) * (60 + i) for i in range(6)]
    ts = np.array([1_704_067_200_000_007_431 + 1000 * i for i in range(6)], np.int64)
    iface = np.array([0, 1, 0, 1, 0, 1], np.uint32)
    ts[iface == 1] = ts[iface == 1] // 1000 * 1000
    batch = PacketBatch.from_packets(pkts, ts)
    return PacketBatch(
        batch.data,
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.ts_ns,
        iface,
        (Interface(1, 65535, "ns0", tsresol=9), Interface(101, 9000, "us0", tsresol=6)),
    )


def test_nanosecond_pcapng_delivered_keeps_nanoseconds(tmp_path):
    """Without Wireshark: the project's writer makes the input, scapy reads the output."""
    from scapy.utils import RawPcapNgReader

    src = tmp_path / "in.pcapng"
    write_capture(src, _two_interfaces(), format="pcapng")
    reader = CaptureReader(src)
    batch = reader.read_all()
    assert reader.ts_resolutions == ["ns", "us"]
    out = tmp_path / "out.pcapng"
    _deliver(src, out)
    back = read_capture(out)
    assert back.same_packets(batch) and back.interfaces == batch.interfaces
    assert int(back.ts_ns[0]) % 1000 == 431
    with RawPcapNgReader(str(out)) as r:
        seen = [(meta.tsresol, meta.tshigh << 32 | meta.tslow) for _, meta in r]
    assert seen == [
        (10**9 if i % 2 == 0 else 10**6, int(t) if i % 2 == 0 else int(t) // 1000)
        for i, t in enumerate(batch.ts_ns)
    ]
