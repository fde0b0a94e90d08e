"""Captures the corpus lacks, crafted with scapy's writers and by hand; and writer round trips."""

from __future__ import annotations

import os
import stat
import struct
import tracemalloc
import warnings
from dataclasses import replace

import numpy as np
import pytest
from capture_craft import (
    CORPUS,
    backend_params,
    block,
    dpkt_packets,
    end_of_options,
    epb,
    idb,
    obsolete_pb,
    option,
    packets_of,
    pcap_file,
    pcap_header,
    pcap_record,
    readable_corpus_files,
    same_time,
    scapy_packets,
    shb,
    spb,
)

from engine import (
    CaptureError,
    CaptureTruncatedWarning,
    CaptureWriter,
    EngineError,
    Interface,
    PacketBatch,
    open_capture,
    read_capture,
    write_capture,
)
from engine.capture.timestamps import TsResolution, ticks_to_ns

SEC = 1_700_000_000  # 2023-11-14
PKTS = [bytes(range(i, i + 40 + 7 * i)) for i in range(6)]  # assorted lengths, none alike


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read_both_ways(path, walker, **kw) -> PacketBatch:
    """``read_capture`` and ``open_capture`` at two batch sizes must agree; returns the first."""
    whole = read_capture(path, backend_module=walker, **kw)
    for n in (1, 4):
        batches = list(open_capture(path, batch_packets=n, backend_module=walker, **kw))
        streamed = PacketBatch.concat(batches) if batches else PacketBatch.empty()
        assert packets_of(streamed) == packets_of(whole)
    return whole


def _fails(path, walker, match: str) -> CaptureError:
    with pytest.raises(CaptureError, match=match) as info:
        read_capture(path, backend_module=walker)
    with pytest.raises(CaptureError, match=match):
        list(open_capture(path, backend_module=walker))
    return info.value


def _truncated(path, walker) -> PacketBatch:
    with pytest.warns(CaptureTruncatedWarning):
        return read_capture(path, errors="truncate", backend_module=walker)


# -- pcap ---------------------------------------------------------------------------------------
@backend_params()
@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize("nano", [False, True], ids=["us", "ns"])
def test_pcap_by_scapy(tmp_path, walker, endian, nano):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import EDecimal, wrpcap

    pkts = []
    for i in range(5):
        p = Ether() / IP(dst=f"10.0.0.{i}") / UDP(dport=1000 + i) / (b"x" * (i * 13))
        p.time = EDecimal(f"{SEC + i}.{123456789 * (i + 1) % 10**9:09d}")
        pkts.append(p)
    path = tmp_path / "scapy.pcap"
    wrpcap(str(path), pkts, nano=nano, endianness=endian)
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == scapy_packets(path)
    reader = open_capture(path, backend_module=walker)
    assert reader.byte_order == ("big" if endian == ">" else "little")
    assert reader.ts_resolutions == ["ns" if nano else "us"]
    for (data, *_, ts, _lt), (ddata, dts) in zip(
        packets_of(batch), dpkt_packets(path), strict=True
    ):
        assert data == ddata and same_time(ts, dts)
    if nano:  # the sub-microsecond digits survive
        assert int(batch.ts_ns[0]) == SEC * 10**9 + 123456789


@backend_params()
@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
def test_pcap_by_hand(tmp_path, walker, endian):
    recs = [(p, SEC + i, 999_999_999 - i, len(p) + 100) for i, p in enumerate(PKTS)]
    path = _write(tmp_path, "h.pcap", pcap_file(recs, endian, nano=True, linktype=101))
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == [
        (p, len(p), len(p) + 100, (SEC + i) * 10**9 + 999_999_999 - i, 101)
        for i, p in enumerate(PKTS)
    ]


@backend_params()
@pytest.mark.parametrize("minor", [0, 1, 2, 3, 4])
def test_pcap_versions_2_0_to_2_4(tmp_path, walker, minor):
    path = _write(tmp_path, "v.pcap", pcap_file([(PKTS[0], SEC, 5)], version=(2, minor)))
    assert len(read_capture(path, backend_module=walker)) == 1


@backend_params()
@pytest.mark.parametrize("version", [(2, 5), (2, 65535), (1, 4), (3, 0), (0, 0), (543, 0)])
def test_pcap_other_versions_refused(tmp_path, walker, version):
    path = _write(tmp_path, "v.pcap", pcap_file([(PKTS[0], SEC, 5)], version=version))
    err = _fails(path, walker, rf"unsupported pcap savefile version {version[0]}\.{version[1]}")
    assert err.offset == 4


@backend_params()
def test_fcs_bits_in_linktype(tmp_path, walker):
    # libpcap: bit 26 says an FCS length is given, bits 28-31 give it in 16-bit words.
    lt = 1 | 0x04000000 | (2 << 28)
    path = _write(tmp_path, "fcs.pcap", pcap_file([(PKTS[1], SEC, 1)], linktype=lt))
    reader = open_capture(path, backend_module=walker)
    assert reader.fcs_len == 4
    batch = read_capture(path, backend_module=walker)
    assert batch.linktype == 1 and packets_of(batch) == scapy_packets(path)
    # FCS length bits without the "present" bit: no FCS length, still Ethernet.
    path = _write(tmp_path, "fcs2.pcap", pcap_file([(PKTS[1], SEC, 1)], linktype=1 | 3 << 28))
    assert open_capture(path, backend_module=walker).fcs_len is None
    assert read_capture(path, backend_module=walker).linktype == 1
    path = _write(tmp_path, "res.pcap", pcap_file([(PKTS[1], SEC, 1)], linktype=1 | 1 << 16))
    _fails(path, walker, r"linktype reserved field not zero \(0x00010000\)")


@backend_params()
@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty file"),
        (b"\xd4\xc3", "too short"),
        (b"GIF89a" + bytes(30), "unknown file format"),
        (pcap_header()[:20], "pcap file header cut short"),
        (b"\n\r\r\n\x1c\x00", "section header block cut short"),
    ],
)
def test_not_a_capture(tmp_path, walker, data, match):
    _fails(_write(tmp_path, "x", data), walker, match)


@backend_params()
def test_empty_captures(tmp_path, walker):
    for name, data in (("e.pcap", pcap_header(linktype=113)), ("e.pcapng", shb() + idb(105))):
        path = _write(tmp_path, name, data)
        batch = read_capture(path, backend_module=walker)
        assert len(batch) == 0
        assert list(open_capture(path, backend_module=walker)) == []


@backend_params()
def test_pcap_damage_positions(tmp_path, walker):
    good = pcap_file([(p, SEC, 0) for p in PKTS[:3]])
    cut = len(good) - 5
    path = _write(tmp_path, "cut.pcap", good[:cut])
    err = _fails(path, walker, r"record data cut short: \d+ of \d+ bytes")
    assert err.record == 2
    assert err.offset == 24 + 2 * 16 + len(PKTS[0]) + len(PKTS[1])
    assert packets_of(_truncated(path, walker)) == packets_of(
        read_capture(
            _write(tmp_path, "two.pcap", pcap_file([(p, SEC, 0) for p in PKTS[:2]])),
            backend_module=walker,
        )
    )


# -- a record claiming 4 GB -----------------------------------------------------------------------
def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


HUGE = [
    (
        "pcap",
        pcap_file([(PKTS[0], SEC, 0)]) + pcap_record(b"\0" * 8, SEC, 0, caplen=0xFFFFFFF0),
        r"invalid packet capture length 4294967280",
    ),
    # A header snaplen of 4 GB does not make the record any less cut short.
    (
        "pcap",
        pcap_file([(PKTS[0], SEC, 0)], snaplen=0xFFFFFFFF)
        + pcap_record(b"\0" * 8, SEC, 0, caplen=0xFFFFFFF0),
        r"cut short",
    ),
    (
        "pcapng",
        shb()
        + idb()
        + epb(PKTS[0])
        + struct.pack("<IIIIIII", 6, 40, 0, 0, 0, 0xFFFFFFF0, 0xFFFFFFF0)
        + bytes(8)
        + struct.pack("<I", 40),
        r"captured length 4294967280 overruns its block",
    ),
    (
        "pcapng",
        shb() + idb() + epb(PKTS[0]) + struct.pack("<II", 6, 0xFFFFFFF0) + bytes(40),
        r"cut short: 48 of 4294967280 bytes",
    ),
]


@backend_params()
@pytest.mark.parametrize(
    "kind, data, match", HUGE, ids=["pcap", "pcap-snaplen-4G", "pcapng-caplen", "pcapng-blocklen"]
)
def test_four_gigabyte_record(tmp_path, walker, kind, data, match):
    path = _write(tmp_path, f"huge.{kind}", data)

    def strict():
        _fails(path, walker, match)

    def truncate():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CaptureTruncatedWarning)
            batch = read_capture(path, errors="truncate", backend_module=walker)
            assert packets_of(batch)[0][0] == PKTS[0] and len(batch) == 1
            streamed = list(open_capture(path, errors="truncate", backend_module=walker))
            assert sum(len(b) for b in streamed) == 1

    for fn in (strict, truncate):
        assert _peak_bytes(fn) < 8 << 20


# -- pcapng -------------------------------------------------------------------------------------
@backend_params()
def test_pcapng_by_scapy_several_interfaces(tmp_path, walker):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    pkts = []
    for i in range(8):
        inner = IP(dst="192.0.2.1") if i % 2 else IPv6(dst="2001:db8::1")
        p = (Ether() / inner if i % 3 == 0 else inner) / UDP(dport=i) / (b"y" * i)
        p.time = SEC + i / 8
        p.sniffed_on = f"if{i % 3}"
        p.comments = [b"hello"] if i == 4 else None
        pkts.append(p)
    path = tmp_path / "scapy.pcapng"
    with PcapNgWriter(str(path)) as w:
        w.write(pkts)
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == scapy_packets(path)
    assert len(set(batch.linktypes.tolist())) == 3  # Ethernet, IPv4, IPv6
    used = {batch.interfaces[i].name for i in set(batch.iface.tolist())}
    assert used == {"if0", "if1", "if2"}  # scapy also writes an unnamed, unused interface


@backend_params()
def test_pcapng_timestamp_resolutions(tmp_path, walker):
    data = (
        shb()
        + idb(1, tsresol=9, name="ns")
        + idb(1, tsresol=0x80 | 20, name="binary")
        + idb(101, tsresol=6, tsoffset=100)
        + idb(101, tsoffset=-1000)  # no if_tsresol: microseconds
        + idb(1, tsresol=12)
        + epb(PKTS[0], ticks=SEC * 10**9 + 123456789, ifid=0)
        + epb(PKTS[1], ticks=(SEC << 20) | 1, ifid=1)
        + epb(PKTS[2], ticks=(SEC << 20) | (1 << 19), ifid=1)
        + epb(PKTS[3], ticks=5_000_001, ifid=2)
        + epb(PKTS[4], ticks=2000 * 10**6 + 7, ifid=3)
        + epb(PKTS[5], ticks=10**7 * 10**12 + 123456789999, ifid=4)
    )
    path = _write(tmp_path, "res.pcapng", data)
    batch = _read_both_ways(path, walker)
    assert batch.ts_ns.tolist() == [
        SEC * 10**9 + 123456789,
        SEC * 10**9 + 953,  # 2**-20 s is 953.67 ns: rounded down
        SEC * 10**9 + 500_000_000,
        5_000_001_000 + 100 * 10**9,
        (2000 - 1000) * 10**9 + 7000,
        10**7 * 10**9 + 123456789,  # picoseconds, rounded down to ns
    ]
    # scapy ignores if_tsoffset: add it, and compare everything else.
    expected = scapy_packets(path)
    expected[3] = (*expected[3][:3], expected[3][3] + 100 * 10**9, expected[3][4])
    expected[4] = (*expected[4][:3], expected[4][3] - 1000 * 10**9, expected[4][4])
    assert packets_of(batch) == expected
    reader = open_capture(path, backend_module=walker)
    list(reader)
    assert reader.ts_resolutions == ["10^-12 s", "2^-20 s", "ns", "us"]


@pytest.mark.parametrize(
    "res",
    [TsResolution(10, e) for e in range(19)] + [TsResolution(2, e) for e in range(64)],
    ids=str,
)
def test_tick_conversion_is_exact(res):
    rng = np.random.default_rng(res.exp + res.base)
    ticks = np.concatenate(
        [
            rng.integers(0, 1 << 63, 500, np.uint64, endpoint=True),
            np.array([0, 1, (1 << 64) - 1, 1 << 63], np.uint64),
        ]
    )
    for offset_s in (0, -7):
        got = ticks_to_ns(ticks, res, offset_s)
        # floor(ticks / base**exp seconds) in ns, as Python ints, wrapped as int64 would be.
        want = [
            ((int(t) * 10**9 // res.base**res.exp + offset_s * 10**9 + (1 << 63)) % (1 << 64))
            - (1 << 63)
            for t in ticks
        ]
        assert got.tolist() == want


@backend_params()
def test_pcapng_fine_binary_resolution_against_scapy(tmp_path, walker):
    # Fractions where flooring away the low 8 bits first would come out 1 ns short.
    fractions = [0x6D44C3B25, 0xECB320FE4, 0x1908A2B3B5, 0x2346135786, 0x3FB7DA73E7, 1]
    ticks = [(10**6 << 40) | f for f in fractions]
    data = (
        shb()
        + idb(1, tsresol=0x80 | 40)
        + b"".join(epb(p, t) for p, t in zip(PKTS, ticks, strict=True))
    )
    path = _write(tmp_path, "fine.pcapng", data)
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == scapy_packets(path)
    assert batch.ts_ns.tolist() == [t * 10**9 >> 40 for t in ticks]


@backend_params()
def test_pcapng_sections_of_both_byte_orders(tmp_path, walker):
    data = (
        shb("<")
        + idb(1, e="<")
        + epb(PKTS[0], 7, e="<")
        + shb(">")
        + idb(101, e=">", tsresol=9)
        + idb(1, e=">")
        + epb(PKTS[1], SEC * 10**9 + 1, ifid=0, e=">")
        + epb(PKTS[2], 8, ifid=1, e=">")
        + shb("<", version=(1, 2))
        + idb(228, e="<")
        + epb(PKTS[3], 9, e="<")
    )
    path = _write(tmp_path, "sections.pcapng", data)
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == [
        (PKTS[0], len(PKTS[0]), len(PKTS[0]), 7000, 1),
        (PKTS[1], len(PKTS[1]), len(PKTS[1]), SEC * 10**9 + 1, 101),
        (PKTS[2], len(PKTS[2]), len(PKTS[2]), 8000, 1),
        (PKTS[3], len(PKTS[3]), len(PKTS[3]), 9000, 228),
    ]
    assert batch.iface.tolist() == [0, 1, 2, 3]
    reader = open_capture(path, backend_module=walker)
    list(reader)
    assert reader.byte_order == "mixed" and len(reader.sections) == 3
    # Iterating again gives the same thing, not a second copy of every interface.
    again = PacketBatch.concat(list(reader))
    assert packets_of(again) == packets_of(batch) and len(reader.interfaces) == 4


@backend_params()
def test_simple_and_obsolete_packet_blocks(tmp_path, walker):
    data = (
        shb()
        + idb(1, snaplen=65535)
        + spb(PKTS[0])
        + spb(PKTS[5][:61])
        + obsolete_pb(PKTS[2], ticks=SEC * 10**6 + 5, origlen=999)
        + epb(PKTS[3], ticks=1)
    )
    path = _write(tmp_path, "spb.pcapng", data)
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == scapy_packets(path)
    assert packets_of(batch)[1] == (PKTS[5][:61], 61, 61, 0, 1)  # no timestamp, no padding
    assert int(batch.origlen[2]) == 999


@backend_params()
def test_simple_packet_block_cut_to_snaplen(tmp_path, walker):
    # An SPB holds min(original length, snaplen) bytes, padded to 4: the padding is not packet.
    data = shb() + idb(1, snaplen=62) + spb(PKTS[4][:62], origlen=len(PKTS[4]))
    path = _write(tmp_path, "spbsnap.pcapng", data)
    batch = read_capture(path, backend_module=walker)
    assert packets_of(batch) == scapy_packets(path)
    assert int(batch.caplen[0]) == 62


@backend_params()
def test_unknown_blocks_are_skipped(tmp_path, walker):
    data = (
        shb(options=option(4, b"crafted") + end_of_options())
        + block(0x00000BAD, b"custom")
        + idb(1)
        + block(4, b"\x01\x00\x08\x00\xc0\x00\x02\x01a.example\x00\x00\x00\x00\x00")  # NRB
        + epb(PKTS[0], 1, options=option(1, b"a comment") + end_of_options())
        + block(5, struct.pack("<III", 0, 0, 0))  # ISB
        + block(0x40000BAD, bytes(100))
        + block(10, b"TLSK" + struct.pack("<I", 3) + b"abc")  # DSB
        + epb(PKTS[1], 2)
    )
    path = _write(tmp_path, "unknown.pcapng", data)
    batch = _read_both_ways(path, walker)
    assert packets_of(batch) == scapy_packets(path)
    assert [p[0] for p in packets_of(batch)] == PKTS[:2]


def _patch(data: bytes, at: int, fmt: str, *values) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, *values)
    return bytes(b)


HEAD = shb() + idb(1)
GOOD_EPB = epb(PKTS[0], 1)
BAD_PCAPNG = [
    (
        "idb option overruns",
        shb() + block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 2, 200) + b"eth0"),
        r"option 2 of 200 bytes overruns its block",
        len(shb()) + 16,
    ),
    (
        "shb option overruns",
        block(
            0x0A0D0D0A,
            struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + struct.pack("<HH", 4, 9) + b"abcd",
        ),
        r"option 4 of 9 bytes overruns its block",
        24,
    ),
    (
        "epb length not a multiple of 4",
        _patch(HEAD + GOOD_EPB + epb(PKTS[1]), len(HEAD) + len(GOOD_EPB) + 4, "<I", 70),
        r"invalid total length 70",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "epb length below 12",
        HEAD + GOOD_EPB + struct.pack("<II", 6, 8) + bytes(8),
        r"invalid total length 8",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "epb length zero",
        HEAD + GOOD_EPB + bytes(16),
        r"invalid total length 0",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "idb length not a multiple of 4",
        _patch(HEAD + GOOD_EPB + idb(1), len(HEAD) + len(GOOD_EPB) + 4, "<I", 22),
        r"invalid total length 22",
        len(HEAD) + len(GOOD_EPB),
    ),
    ("shb length not a multiple of 4", _patch(shb(), 4, "<I", 30), r"invalid total length 30", 0),
    (
        "epb trailer mismatch",
        HEAD + GOOD_EPB + epb(PKTS[1])[:-4] + struct.pack("<I", 12),
        r"header \d+ and trailer 12 don't match",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "idb trailer mismatch",
        HEAD + GOOD_EPB + idb(1)[:-4] + struct.pack("<I", 24),
        r"header 20 and trailer 24 don't match",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "undescribed interface",
        HEAD + GOOD_EPB + epb(PKTS[1], ifid=1),
        r"refers to interface 1, but the section describes 1",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "packet before any interface",
        shb() + epb(PKTS[1]),
        r"refers to interface 0, but the section describes 0",
        len(shb()),
    ),
    (
        "obsolete packet block, undescribed interface",
        HEAD + GOOD_EPB + obsolete_pb(PKTS[1], ifid=3),
        r"refers to interface 3",
        len(HEAD) + len(GOOD_EPB),
    ),
    (
        "simple packet block before any interface",
        shb() + spb(PKTS[1]),
        r"simple packet block in a section with no interface",
        len(shb()),
    ),
    # Interfaces belong to their section: the second section has none.
    (
        "interface of an earlier section",
        HEAD + GOOD_EPB + shb() + epb(PKTS[1]),
        r"refers to interface 0, but the section describes 0",
        len(HEAD + GOOD_EPB + shb()),
    ),
    (
        "section header version",
        HEAD + GOOD_EPB + shb(version=(2, 0)),
        r"unsupported pcapng savefile version 2\.0",
        len(HEAD) + len(GOOD_EPB) + 12,
    ),
    (
        "bad byte-order magic",
        HEAD + GOOD_EPB + _patch(shb(), 8, "<I", 0x12345678),
        r"bad byte-order magic 0x12345678",
        len(HEAD) + len(GOOD_EPB) + 8,
    ),
    (
        "unsupported resolution",
        HEAD + GOOD_EPB + idb(1, tsresol=19),
        r"unsupported interface timestamp resolution",
        None,
    ),
    (
        "timestamp offset beyond int64 ns",
        HEAD + GOOD_EPB + idb(1, tsoffset=1 << 62),
        r"interface timestamp offset 4611686018427387904 s is out of range",
        None,
    ),
    (
        "block header cut",
        HEAD + GOOD_EPB + b"\x06\x00\x00",
        r"block header cut short",
        len(HEAD) + len(GOOD_EPB),
    ),
]


@backend_params()
@pytest.mark.parametrize("data, match, offset", [pytest.param(*c[1:], id=c[0]) for c in BAD_PCAPNG])
def test_malformed_pcapng(tmp_path, walker, data, match, offset):
    path = _write(tmp_path, "bad.pcapng", data)
    err = _fails(path, walker, match)
    if offset is not None:
        assert err.offset == offset
    assert err.path == str(path)
    if data.startswith(HEAD + GOOD_EPB):
        batch = _truncated(path, walker)
        assert packets_of(batch) == [(PKTS[0], len(PKTS[0]), len(PKTS[0]), 1000, 1)]


@backend_params()
@pytest.mark.parametrize("version", [(1, 0), (1, 2)])
def test_pcapng_versions_accepted(tmp_path, walker, version):
    path = _write(tmp_path, "v.pcapng", shb(version=version) + idb(1) + epb(PKTS[0]))
    assert len(read_capture(path, backend_module=walker)) == 1


@pytest.mark.parametrize("version", [(1, 1), (2, 0), (0, 1)])
def test_pcapng_other_versions_refused_at_open(tmp_path, version):
    # As for a pcap header, opening is enough to be told, before any batch is asked for.
    path = _write(tmp_path, "v.pcapng", shb(version=version) + idb(1) + epb(PKTS[0]))
    with pytest.raises(CaptureError, match=r"unsupported pcapng savefile version") as info:
        open_capture(path)
    assert (info.value.record, info.value.offset) == (0, 12)


@backend_params()
def test_huge_batch_size_allocates_nothing_big(tmp_path, walker):
    for name, data in (
        ("a.pcap", pcap_file([(p, SEC, 0) for p in PKTS])),
        ("a.pcapng", shb() + idb(1) + b"".join(epb(p) for p in PKTS)),
    ):
        path = _write(tmp_path, name, data)

        def stream(path=path):
            batches = list(open_capture(path, batch_packets=10**12, backend_module=walker))
            assert [len(b) for b in batches] == [len(PKTS)]

        assert _peak_bytes(stream) < 1 << 20


def test_reader_arguments(tmp_path):
    path = _write(tmp_path, "a.pcap", pcap_file([(PKTS[0], SEC, 0)]))
    with pytest.raises(ValueError, match="errors must be one of"):
        read_capture(path, errors="ignore")
    with pytest.raises(ValueError, match="batch_packets"):
        open_capture(path, batch_packets=0)
    with pytest.raises(CaptureError, match="cannot read"):
        read_capture(tmp_path / "missing.pcap")
    with pytest.raises(CaptureError, match="cannot read"):
        open_capture(tmp_path / "missing.pcap")
    with pytest.raises(CaptureError, match="cannot read"):
        read_capture(tmp_path)


# -- writer round trips -------------------------------------------------------------------------
def _mixed_source(tmp_path):
    """A pcapng with three interfaces (two link types) and sub-microsecond timestamps."""
    data = (
        shb()
        + idb(1, snaplen=1500, tsresol=9, name="eth0")
        + idb(101, snaplen=9000, tsresol=9, name="tun0")
        + idb(1, tsresol=9, name="eth1")
    )
    for i, p in enumerate(PKTS * 3):
        data += epb(p, SEC * 10**9 + i * 1_000_001_357, ifid=i % 3, origlen=len(p) + i)
    return _write(tmp_path, "mixed.pcapng", data)


def _truncated_to_us(batch: PacketBatch) -> PacketBatch:
    return PacketBatch(
        batch.data,
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.ts_ns // 1000 * 1000,
        batch.iface,
        batch.interfaces,
    )


def _check_oracles(path, batch: PacketBatch, *, single_iface: bool):
    assert scapy_packets(path) == packets_of(batch)
    if single_iface:  # dpkt reads one interface only
        got = dpkt_packets(path)
        assert [d for d, _ in got] == [p[0] for p in packets_of(batch)]
        assert all(same_time(int(t), ts) for t, (_, ts) in zip(batch.ts_ns, got, strict=True))


@backend_params()
@pytest.mark.parametrize("res", ["us", "ns"])
def test_round_trip_pcapng(tmp_path, walker, res):
    src = read_capture(_mixed_source(tmp_path), backend_module=walker)
    out = tmp_path / f"out-{res}.pcapng"
    assert write_capture(
        out, src, format="pcapng", ts_resolution=res, backend_module=walker
    ) == len(src)
    back = read_capture(out, backend_module=walker)
    expected = src if res == "ns" else _truncated_to_us(src)
    assert back.same_packets(expected)
    # Names and snaplens too; the resolution is the one asked for.
    tsresol = 9 if res == "ns" else 6
    assert back.interfaces == tuple(replace(i, tsresol=tsresol) for i in src.interfaces)
    _check_oracles(out, back, single_iface=False)


@backend_params()
@pytest.mark.parametrize("res", ["us", "ns"])
def test_round_trip_pcap(tmp_path, walker, res):
    src = read_capture(_mixed_source(tmp_path), backend_module=walker)
    eth = src.take(np.flatnonzero(src.linktypes == 1))
    out = tmp_path / f"out-{res}.pcap"
    write_capture(out, [eth[:5], eth[5:]], format="pcap", ts_resolution=res, backend_module=walker)
    back = read_capture(out, backend_module=walker)
    assert back.same_packets(eth if res == "ns" else _truncated_to_us(eth))
    _check_oracles(out, back, single_iface=True)


@backend_params()
def test_round_trip_corpus(tmp_path, walker):
    if not CORPUS.is_dir():
        pytest.skip("capture corpus absent")
    for name in readable_corpus_files():
        src = read_capture(CORPUS / name, backend_module=walker)
        for fmt in ("pcap", "pcapng"):
            for res in ("us", "ns"):
                out = tmp_path / f"rt.{fmt}"
                write_capture(out, src, format=fmt, ts_resolution=res, backend_module=walker)
                back = read_capture(out, backend_module=walker)
                assert back.same_packets(src), (name, fmt, res)  # the corpus is in us
                _check_oracles(out, back, single_iface=True)


@backend_params()
def test_streamed_write(tmp_path, walker):
    src = _mixed_source(tmp_path)
    out = tmp_path / "streamed.pcapng"
    with CaptureWriter(out, format="pcapng", ts_resolution="ns", backend_module=walker) as w:
        for batch in open_capture(src, batch_packets=4, backend_module=walker):
            w.write(batch)
    assert w.packets == 18 and w.bytes_written == out.stat().st_size
    assert read_capture(out).same_packets(read_capture(src))


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@backend_params()
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing(tmp_path, walker, existing):
    src = read_capture(_mixed_source(tmp_path), backend_module=walker)
    dest = tmp_path / "dest.pcap"
    if existing:
        dest.write_bytes(b"precious")

    def batches():
        yield src[:3]
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        write_capture(dest, batches(), format="pcapng", backend_module=walker)
    # pcap holds one link type: the second batch mixes two, and the write fails midway.
    with pytest.raises(EngineError, match="pcap holds one link type"):
        write_capture(dest, [src[:1], src[:6]], format="pcap", backend_module=walker)
    if existing:
        assert dest.read_bytes() == b"precious"
    else:
        assert not dest.exists()
    assert _leftovers(tmp_path) == []

    w = CaptureWriter(dest, backend_module=walker)
    w.write(src[:1])
    w.abort()
    assert _leftovers(tmp_path) == [] and dest.exists() == existing


def test_written_file_mode_follows_umask(tmp_path):
    dest = tmp_path / "m.pcap"
    old = os.umask(0o022)
    try:
        write_capture(dest, PacketBatch.from_packets(PKTS))
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


@backend_params()
def test_write_to_dev_null(walker):
    if not os.path.exists(os.devnull):
        pytest.skip("no /dev/null")
    before = os.stat(os.devnull)
    batch = PacketBatch.from_packets(PKTS, ts_ns=range(len(PKTS)))
    for fmt in ("pcap", "pcapng"):
        assert write_capture(os.devnull, batch, format=fmt, backend_module=walker) == len(PKTS)
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_writer_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        CaptureWriter(tmp_path / "x", format="erf")
    with pytest.raises(ValueError, match="ts_resolution"):
        CaptureWriter(tmp_path / "x", ts_resolution="ms")
    assert _leftovers(tmp_path) == []


def test_empty_write_is_a_valid_capture(tmp_path):
    for fmt in ("pcap", "pcapng"):
        dest = tmp_path / f"empty.{fmt}"
        assert write_capture(dest, [], format=fmt) == 0
        assert len(read_capture(dest)) == 0
        assert scapy_packets(dest) == []


def test_interface_of_written_pcapng(tmp_path):
    batch = PacketBatch(
        np.frombuffer(b"".join(PKTS[:2]), np.uint8),
        [0, len(PKTS[0])],
        [len(PKTS[0]), len(PKTS[1])],
        [100, 200],
        [5, 6],
        [1, 0],
        (Interface(1, 1500, "a", "first"), Interface(105, 2346, "wlan0")),
    )
    dest = tmp_path / "i.pcapng"
    write_capture(dest, batch, format="pcapng", ts_resolution="ns")
    back = read_capture(dest)
    assert back.interfaces == tuple(replace(i, tsresol=9) for i in batch.interfaces)
    assert back.same_packets(batch)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_writer_raises_snaplen_for_packets_made_longer(tmp_path, fmt):
    # A service may lengthen packets past the source's snaplen (encrypt adds 32 bytes); the
    # file must still describe them, or readers (libpcap, dpkt) cut them.
    import dpkt

    from engine.capture.batch import PacketBatch
    from engine.capture.writer import write_capture

    pkts = [bytes(range(40)) * 3, bytes(100)]
    batch = PacketBatch.from_packets(pkts, [1_000_000_000, 2_000_000_000], snaplen=100)
    path = tmp_path / f"long.{fmt}"
    write_capture(path, batch, format=fmt)
    back = read_capture(path)
    assert back.same_packets(batch)
    assert back.interfaces[0].snaplen == 120
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f) if fmt == "pcap" else dpkt.pcapng.Reader(f)
        assert [bytes(b) for _, b in reader] == pkts
