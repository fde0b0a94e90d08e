"""Every capture of the shared corpus, read by us and by scapy and dpkt: the same packets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from capture_craft import (
    CUT,
    REJECTED,
    backend_params,
    corpus_files,
    dpkt_packets,
    need_corpus,
    packets_of,
    readable_corpus_files,
    same_time,
    scapy_packets,
)

from engine import CaptureError, CaptureTruncatedWarning, PacketBatch, open_capture, read_capture

BATCH_SIZES = (1, 3, 64, 65536)


FILES = corpus_files()
GOOD = readable_corpus_files()


def test_corpus_present():
    root = need_corpus()
    assert len(GOOD) >= 30, f"expected the corpus described in {root / 'README.md'}"
    assert set(REJECTED) | {CUT} <= set(FILES)


def _stream(path, batch_packets, walker, **kw) -> PacketBatch:
    batches = list(open_capture(path, batch_packets=batch_packets, backend_module=walker, **kw))
    seq = 0
    for b in batches:
        assert 0 < len(b) <= batch_packets
        assert b.first_seq == seq
        seq += len(b)
    return PacketBatch.concat(batches) if batches else None


@backend_params()
@pytest.mark.parametrize("name", GOOD)
def test_matches_scapy_and_dpkt(name, walker):
    path = need_corpus() / name
    batch = read_capture(path, backend_module=walker)
    ours = packets_of(batch)
    assert ours, "every corpus file that libpcap reads holds packets"

    theirs = scapy_packets(path)
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"packet {i} differs from scapy's"

    for i, ((data, *_, ts_ns, _lt), (ddata, dts)) in enumerate(
        zip(ours, dpkt_packets(path), strict=True)
    ):
        assert data == ddata, f"packet {i} bytes differ from dpkt's"
        assert same_time(ts_ns, dts), f"packet {i}: {ts_ns} ns, dpkt says {dts}"


@backend_params()
@pytest.mark.parametrize("name", GOOD)
def test_streaming_gives_the_same_packets(name, walker):
    path = need_corpus() / name
    whole = read_capture(path, backend_module=walker)
    for size in BATCH_SIZES:
        streamed = _stream(path, size, walker)
        assert streamed.same_packets(whole), f"batch_packets={size}"
        assert [i.linktype for i in streamed.interfaces] == [i.linktype for i in whole.interfaces]


@backend_params()
@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_like_libpcap(name, walker):
    path = need_corpus() / name
    for errors in ("strict", "truncate"):
        with pytest.raises(CaptureError, match=REJECTED[name]) as info:
            read_capture(path, errors=errors, backend_module=walker)
        assert info.value.path == str(path)
        assert info.value.offset is not None
        with pytest.raises(CaptureError, match=REJECTED[name]):
            list(open_capture(path, errors=errors, backend_module=walker))


@backend_params()
def test_cut_mid_record_strict(walker):
    path = need_corpus() / CUT
    with pytest.raises(CaptureError, match="record header cut short") as info:
        read_capture(path, backend_module=walker)
    size = path.stat().st_size
    assert info.value.record == 1
    assert info.value.offset == size - 7
    for n in BATCH_SIZES:
        with pytest.raises(CaptureError, match="cut short"):
            list(open_capture(path, batch_packets=n, backend_module=walker))


@backend_params()
def test_cut_mid_record_truncate(walker):
    path = need_corpus() / CUT
    expected = scapy_packets(path)  # scapy stops quietly at the cut: every complete record
    assert len(expected) == 1
    with pytest.warns(CaptureTruncatedWarning, match="record 1.*dropped the last 7 bytes"):
        batch = read_capture(path, errors="truncate", backend_module=walker)
    assert packets_of(batch) == expected
    for n in BATCH_SIZES:
        reader = open_capture(path, batch_packets=n, errors="truncate", backend_module=walker)
        with pytest.warns(CaptureTruncatedWarning):
            streamed = _stream(path, n, walker, errors="truncate")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CaptureTruncatedWarning)
            list(reader)
        assert reader.damage is not None and reader.dropped_bytes == 7
        assert packets_of(streamed) == expected


@backend_params()
def test_read_capture_is_zero_copy(walker):
    path = need_corpus() / "dpkt/http.pcap"
    batch = read_capture(path, backend_module=walker)
    # Packets point into the file's bytes: the buffer is the file, not a copy per packet.
    assert len(batch.data) == path.stat().st_size
    assert np.shares_memory(batch.packet(0), batch.data)
    assert batch.packet(0).tobytes() == path.read_bytes()[40 : 40 + int(batch.caplen[0])]
