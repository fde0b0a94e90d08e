"""PacketBatch: struct-of-arrays access, selection, merging, and its zero-copy wire frames."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from engine import Interface, PacketBatch

PKTS = [b"alpha", b"be", b"gamma-delta", b"", b"epsilon!"]
ETH = Interface(1, 1500, "eth0")
RAW = Interface(101, 9000, "tun0")


@pytest.fixture
def batch() -> PacketBatch:
    b = PacketBatch.from_packets(PKTS, ts_ns=[10, 20, 30, 40, 50], origlen=[5, 9, 11, 60, 8])
    return PacketBatch(b.data, b.offsets, b.caplen, b.origlen, b.ts_ns, first_seq=100)


def _scattered() -> PacketBatch:
    """Packets between junk, out of buffer order, on two interfaces: as a reader may give."""
    buf = np.frombuffer(b"####gamma-delta##alpha####be#", np.uint8)
    return PacketBatch(
        buf, [17, 26, 4], [5, 2, 11], [5, 2, 11], [1, 2, 3], [0, 1, 0], (ETH, RAW), first_seq=7
    )


def _values(b: PacketBatch):
    return [
        (
            b.packet(i).tobytes(),
            int(b.caplen[i]),
            int(b.origlen[i]),
            int(b.ts_ns[i]),
            int(b.linktypes[i]),
        )
        for i in range(len(b))
    ]


def test_len_iteration_and_packets(batch):
    assert len(batch) == 5 and batch.nbytes == sum(map(len, PKTS))
    assert [p.tobytes() for p in batch] == PKTS
    assert batch[2].tobytes() == PKTS[2] and batch[np.int64(-1)].tobytes() == PKTS[-1]
    assert batch.seq.tolist() == [100, 101, 102, 103, 104]
    with pytest.raises(TypeError, match="indices must be int or slice"):
        batch["x"]
    with pytest.raises(IndexError):
        batch.packet(5)


def test_packet_is_a_zero_copy_view(batch):
    p = batch.packet(2)
    assert p.dtype == np.uint8 and np.shares_memory(p, batch.data)
    assert p.base is batch.data or np.shares_memory(p.base, batch.data)
    # A view, so writing through it reaches the buffer (and proves nothing was copied).
    data = batch.data.copy()
    b = PacketBatch(data, batch.offsets, batch.caplen, batch.origlen, batch.ts_ns)
    b.packet(0)[0] = ord("A")
    assert b.data[0] == ord("A") and b.packet(0).tobytes() == b"Alpha"


def test_slicing_keeps_sequence_numbers(batch):
    part = batch[1:4]
    assert part.first_seq == 101 and part.seq.tolist() == [101, 102, 103]
    assert [p.tobytes() for p in part] == PKTS[1:4]
    assert np.shares_memory(part.data, batch.data)
    assert batch[-2:].first_seq == 103
    assert batch[3:1].first_seq == 103 and len(batch[3:1]) == 0
    assert batch[10:].first_seq == 105 and len(batch[10:]) == 0
    assert batch[1:][1:][1:].seq.tolist() == [103, 104]
    # A stride leaves packets out: the numbers of those kept travel with them.
    assert batch[::2].seq.tolist() == [100, 102, 104]
    assert batch[::-1].seq.tolist() == [104, 103, 102, 101, 100]
    assert batch[1::2][1:].seq.tolist() == [103]


def test_take(batch):
    t = batch.take([4, 0, 0, 2])
    assert [p.tobytes() for p in t] == [PKTS[4], PKTS[0], PKTS[0], PKTS[2]]
    assert t.ts_ns.tolist() == [50, 10, 10, 30]
    assert t.seq.tolist() == [104, 100, 100, 102]
    assert t.data is batch.data
    assert len(batch.take([])) == 0
    assert batch.take(np.array([3])).origlen.tolist() == [60]


def test_concat_merges_interfaces():
    a = _scattered()
    b = PacketBatch.from_packets([b"ip-packet"], ts_ns=[9], linktype=101, snaplen=9000)
    b = PacketBatch(
        b.data, b.offsets, b.caplen, b.origlen, b.ts_ns, interfaces=(Interface(228), RAW), iface=[1]
    )
    c = PacketBatch.concat([a, b, a[1:]])
    assert c.interfaces == (ETH, RAW, Interface(228))  # RAW appears once
    assert _values(c) == _values(a) + _values(b) + _values(a[1:])
    assert c.linktypes.tolist() == [1, 101, 1, 101, 101, 1]
    assert c.is_compact() and c.first_seq == a.first_seq
    assert not np.shares_memory(c.data, a.data)
    assert len(PacketBatch.concat([])) == 0
    assert _values(PacketBatch.concat([a])) == _values(a)


def test_concat_keeps_sequence_numbers(batch):
    # Consecutive parts (as open_capture yields them) stay implicit.
    whole = PacketBatch.concat([batch[:2], batch[2:]])
    assert whole.seq.tolist() == batch.seq.tolist() and not whole.has_explicit_seq
    # Parts out of order, or with gaps, keep each packet's own number.
    swapped = PacketBatch.concat([batch[3:], batch[:2]])
    assert swapped.seq.tolist() == [103, 104, 100, 101]
    gap = PacketBatch.concat([batch[:1], batch[4:]])
    assert gap.seq.tolist() == [100, 104]
    assert PacketBatch.concat([batch.take([2, 1]), batch[4:]]).seq.tolist() == [102, 101, 104]


def test_compact():
    s = _scattered()
    assert not s.is_compact()
    c = s.compact()
    assert c.is_compact() and len(c.data) == s.nbytes
    assert _values(c) == _values(s) and c.interfaces == s.interfaces
    assert c.first_seq == s.first_seq and c.seq.tolist() == s.seq.tolist()
    assert c.compact() is c
    assert s[::2].compact().seq.tolist() == [7, 9]
    empty = PacketBatch.empty()
    assert empty.is_compact() and empty.compact() is empty


def test_same_packets():
    s = _scattered()
    assert s.same_packets(s.compact()) and s.compact().same_packets(s)
    assert not s.same_packets(s[:2])
    other = s.compact()

    def changed(**kw):
        fields = dict(
            data=other.data,
            offsets=other.offsets,
            caplen=other.caplen,
            origlen=other.origlen,
            ts_ns=other.ts_ns,
            iface=other.iface,
            interfaces=other.interfaces,
        )
        fields.update(kw)
        return PacketBatch(**fields)

    assert not s.same_packets(changed(ts_ns=other.ts_ns + 1))
    assert not s.same_packets(changed(origlen=other.origlen + 1))
    assert not s.same_packets(changed(data=other.data[::-1].copy()))
    assert not s.same_packets(changed(interfaces=(ETH, Interface(228))))
    # Only the link type matters, not the interface's name.
    assert s.same_packets(changed(interfaces=(Interface(1), Interface(101))))


def test_linktype():
    s = _scattered()
    with pytest.raises(ValueError, match="mixes link types"):
        s.linktype  # noqa: B018
    assert s.take([0, 2]).linktype == 1 and s[1:2].linktype == 101
    assert PacketBatch.empty((RAW,)).linktype == 101


def test_constructor_checks():
    with pytest.raises(ValueError, match="differ in length"):
        PacketBatch(np.zeros(4, np.uint8), [0, 1], [1], [1, 1], [0, 0])
    with pytest.raises(ValueError, match="no interfaces"):
        PacketBatch(np.zeros(4, np.uint8), [0], [1], [1], [0], interfaces=())


# -- frames -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pick",
    [
        lambda b: b,
        lambda b: b[2:4],
        lambda b: b[::2],
        lambda b: b.take([2, 0, 0]),
        lambda b: b.take([2, 0])[::-1],
        lambda b: b[:0],
    ],
    ids=["whole", "slice", "stride", "take", "take-reversed", "empty"],
)
def test_frames_round_trip_without_copying(pick):
    src = pick(_scattered())
    frames = src.to_frames()
    assert all(isinstance(f, (bytes, memoryview)) for f in frames)
    back = PacketBatch.from_frames(frames)
    assert _values(back) == _values(src)
    assert back.interfaces == src.interfaces
    assert back.first_seq == src.first_seq and back.seq.tolist() == src.seq.tolist()
    if len(src):
        # The data frame is a view of the batch's buffer, and the rebuilt batch a view of it.
        assert np.shares_memory(np.frombuffer(frames[-1], np.uint8), src.data)
        assert np.shares_memory(back.data, src.data)
        # Only the span the packets use travels.
        assert len(frames[-1]) <= len(src.data)
    # Frames that went over a wire arrive as bytes.
    again = PacketBatch.from_frames([bytes(f) for f in frames])
    assert _values(again) == _values(src)


@pytest.mark.parametrize("kept", [[], [1], [0, 2]], ids=["none", "one", "two"])
def test_explicit_sequence_numbers_survive_frames_even_when_empty(kept):
    """A worker's result that kept none of its packets says so (an empty explicit list), which
    is not the same as a result that says nothing (all kept): a dispatcher that confused them
    took a service dropping a whole task's packets for a lying worker."""
    result = _scattered().take(kept).with_seq(np.array(kept, np.int64))
    back = PacketBatch.from_frames([bytes(f) for f in result.to_frames()])
    assert back.has_explicit_seq and back.seq.tolist() == kept
    plain = PacketBatch.from_frames([bytes(f) for f in _scattered()[:0].to_frames()])
    assert not plain.has_explicit_seq


def test_frames_of_a_file_batch_send_only_the_packets(tmp_path):
    from engine import read_capture, write_capture

    path = tmp_path / "f.pcap"
    write_capture(path, PacketBatch.from_packets(PKTS * 20))
    batch = read_capture(path)[40:60]
    frames = batch.to_frames()
    assert len(frames[-1]) < 20 * 16 + sum(map(len, PKTS)) * 5
    assert np.shares_memory(PacketBatch.from_frames(frames).data, batch.data)


def _frames():
    return [bytes(f) for f in _scattered().to_frames()]


def _with(i, value):
    f = _frames()
    f[i] = value
    return f


def _header(n=3, magic=b"PKXB", version=1, interfaces=None, first_seq=7):
    ifaces = (
        interfaces
        if interfaces is not None
        else json.dumps(
            [
                {"linktype": 1, "snaplen": 1500, "name": "eth0", "description": None},
                {"linktype": 101, "snaplen": 9000, "name": "tun0", "description": None},
            ]
        ).encode()
    )
    return struct.pack("<4sHHqq", magic, version, 0, n, first_seq) + ifaces


def _arrays(offsets=(17, 26, 4), caplen=(5, 2, 11), iface=(0, 1, 0)):
    return [
        np.array(offsets, np.int64).tobytes(),
        np.array(caplen, np.uint32).tobytes(),
        np.array(caplen, np.uint32).tobytes(),
        np.array([1, 2, 3], np.int64).tobytes(),
        np.array(iface, np.uint32).tobytes(),
    ]


def _build(header=None, arrays=None, seq=b"", data=b"####gamma-delta##alpha####be#"):
    return [header if header is not None else _header(), *(arrays or _arrays()), seq, data]


MALFORMED = {
    "too few frames": _frames()[:-1],
    "too many frames": [*_frames(), b""],
    "header too short": _with(0, b"PKXB\x01\x00"),
    "bad magic": _build(_header(magic=b"XXXX")),
    "bad version": _build(_header(version=9)),
    "interfaces not json": _build(_header(interfaces=b"{nope")),
    "interfaces not a list of objects": _build(_header(interfaces=b"[1, 2]")),
    "interface with unknown field": _build(_header(interfaces=b'[{"linktype": 1, "x": 2}]')),
    "count disagrees with arrays": _build(_header(n=2)),
    "array of ragged size": _with(1, _frames()[1][:-3]),
    "packet past the data": _build(data=b"####gamma-delta##alpha####b"),
    "negative offset": _build(arrays=_arrays(offsets=(17, -1, 4))),
    "offset overflowing int64": _build(arrays=_arrays(offsets=(17, 2**63 - 1, 4))),
    "offset beyond the data": _build(arrays=_arrays(offsets=(17, 4000, 4))),
    "undescribed interface": _build(arrays=_arrays(iface=(0, 2, 0))),
    "seq of the wrong length": _build(seq=np.arange(2, dtype=np.int64).tobytes()),
    "seq of ragged size": _build(seq=b"\0" * 9),
}


@pytest.mark.parametrize("frames", MALFORMED.values(), ids=MALFORMED.keys())
def test_from_frames_rejects_malformed(frames):
    with pytest.raises(ValueError):
        PacketBatch.from_frames(frames)


def test_well_formed_frames_built_by_hand():
    # The malformed cases above differ from this in one thing each.
    b = PacketBatch.from_frames(_build())
    assert _values(b) == _values(_scattered())
