"""Both capture twins (pure Python, Cython) walk and pack records with identical results.

Every test runs against each implementation ``engine.capture.backend.variants("capture")`` finds;
the hypothesis tests also hold each one to the pure-Python reference, array for array, on random and
damaged bytes.
"""

from __future__ import annotations

import ctypes
import importlib
import mmap
import os
import struct
import sys
import threading

import numpy as np
import pytest
from capture_craft import (
    MAX_SNAPLEN,
    Expected,
    block,
    epb,
    pcap_record,
    pcap_walk,
    shb,
    spb,
)
from capture_craft import idb as _idb
from capture_craft import obsolete_pb as pb
from capture_craft import pcap_header as _pcap_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.capture import backend, capture_py
from engine.capture import pcapformat as F
from engine.capture.reader import CaptureReader


def pcap_header(**kw) -> bytes:
    """A pcap header declaring libpcap's maximum snaplen (what these tests always declared)."""
    return _pcap_header(**{"snaplen": MAX_SNAPLEN, **kw})


def idb(**kw) -> bytes:
    return _idb(**{"snaplen": MAX_SNAPLEN, **kw})


VARIANTS = backend.variants("capture")
IDS = ["cython" if m.__name__.startswith("ext.") else "pure" for m in VARIANTS]
impls = pytest.mark.parametrize("impl", VARIANTS, ids=IDS)
REF = capture_py
STATUSES = (
    "OK",
    "BLOCK",
    "TRUNC_HEADER",
    "TRUNC_DATA",
    "BAD_CAPLEN",
    "BAD_BLOCK_LEN",
    "BAD_TRAILER",
    "BAD_IFACE",
)
NAMES = ("walk_pcap", "walk_pcapng", "gather", "pack_pcap", "pack_pcapng")
fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
fuzz_packers = settings(fuzz, max_examples=150)

# Output arrays start full of this, so a write past the count shows.
SENTINEL = 0x5A


def outputs(room: int, pcapng: bool = False) -> list[np.ndarray]:
    dtypes = (
        [np.int64, np.uint32, np.uint32, np.uint64, np.uint32]
        if pcapng
        else [np.int64, np.uint32, np.uint32, np.int64]
    )
    return [np.full(max(room, 0), SENTINEL, d) for d in dtypes]


def walk(
    impl,
    buf,
    pos=None,
    end=None,
    *,
    pcapng=False,
    swap=False,
    nano=False,
    max_caplen=F.MAX_SNAPLEN,
    iface_base=0,
    n_ifaces=1,
    snaplen0=0,
    limit=64,
    room=None,
):
    """Run one walker; returns ``(count, pos, status)`` or the exception type, and the arrays."""
    pos = (0 if pcapng else F.PCAP_HEADER_LEN) if pos is None else pos
    end = len(buf) if end is None else end
    arrays = outputs(max(limit, 0) if room is None else room, pcapng)
    try:
        if pcapng:
            got = impl.walk_pcapng(
                buf, pos, end, swap, iface_base, n_ifaces, snaplen0, limit, *arrays
            )
        else:
            got = impl.walk_pcap(buf, pos, end, swap, nano, max_caplen, limit, *arrays)
    except (ValueError, OverflowError) as exc:
        got = type(exc)
    return got, arrays


def check_expected(got, arrays, exp: Expected, pos: int, status: int = F.OK) -> None:
    assert got == (len(exp.caplen), pos, status)
    n = len(exp.caplen)
    assert arrays[0][:n].tolist() == exp.offsets
    assert arrays[1][:n].tolist() == exp.caplen
    assert arrays[2][:n].tolist() == exp.origlen
    assert arrays[3][:n].tolist() == exp.stamps
    if len(arrays) == 5:
        assert arrays[4][:n].tolist() == exp.iface
    assert all((a[n:] == SENTINEL).all() for a in arrays)


def same_as_reference(impl, buf, **kw):
    """``impl`` and the pure twin agree on a walk: result, and arrays unless it raised."""
    got, arrays = walk(impl, buf, **kw)
    ref, ref_arrays = walk(REF, buf, **kw)
    assert got == ref
    if isinstance(got, tuple):
        for a, b in zip(arrays, ref_arrays):
            np.testing.assert_array_equal(a, b)
    return got, arrays


# -- the modules -----------------------------------------------------------------------------
def test_compiled_twin_is_built_when_ci_is_set():
    try:
        importlib.import_module("ext._capture")
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(
                f"CI is set but ext._capture is not built ({exc}): build it with "
                "`pip install -e .` or `python setup.py build_ext --inplace`"
            )
        pytest.skip(f"ext._capture not built ({exc}); only the pure twin is tested")


@impls
def test_public_names_and_status_codes(impl):
    assert tuple(impl.PUBLIC) == NAMES
    assert all(callable(getattr(impl, name)) for name in NAMES)
    for name in STATUSES:
        assert getattr(impl, name) == getattr(F, name), name


# -- pcap ------------------------------------------------------------------------------------
def some_packets(k: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(k):
        size = int(rng.choice([0, 1, 14, 60, 333, 1514]))
        data = rng.integers(0, 256, size, np.uint8).tobytes()
        yield data, int(rng.integers(0, 2**32)), int(rng.integers(0, 10**9)), size + i % 3


@impls
@pytest.mark.parametrize("swap", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nano", [False, True], ids=["us", "ns"])
def test_walk_pcap_reads_every_record(impl, swap, nano):
    buf, exp = pcap_walk(some_packets(40, 1), swap=swap, nano=nano)
    got, arrays = walk(impl, buf, swap=swap, nano=nano)
    check_expected(got, arrays, exp, len(buf))


@impls
def test_walk_pcap_in_chunks_resumes_where_it_stopped(impl):
    buf, exp = pcap_walk(some_packets(25, 2))
    pos, offsets = F.PCAP_HEADER_LEN, []
    while pos < len(buf):
        (n, pos, status), arrays = walk(impl, buf, pos, limit=4)
        assert status == F.OK and 1 <= n <= 4
        offsets += arrays[0][:n].tolist()
    assert offsets == exp.offsets


def _rec(incl=None, data=b"\1" * 20, **kw):
    return pcap_record(data, incl=incl, **kw)


PCAP_CASES = {
    # name: (bytes after the file header, walk keywords, (count, pos after header, status))
    "empty": (b"", {}, (0, 0, F.OK)),
    "limit": (_rec() * 3, {"limit": 2}, (2, 72, F.OK)),
    "limit_zero": (_rec(), {"limit": 0}, (0, 0, F.OK)),
    "header_cut": (_rec() + _rec()[:15], {}, (1, 36, F.TRUNC_HEADER)),
    "data_cut": (_rec() + _rec()[:-1], {}, (1, 36, F.TRUNC_DATA)),
    "caplen_at_max": (_rec(), {"max_caplen": 20}, (1, 36, F.OK)),
    "caplen_over_max": (_rec() + _rec(incl=21), {"max_caplen": 20}, (1, 36, F.BAD_CAPLEN)),
    "caplen_huge": (_rec(incl=0xFFFFFFFF), {"max_caplen": 2**40}, (0, 0, F.TRUNC_DATA)),
    "end_inside": (_rec() * 2, {"end_back": 1}, (1, 36, F.TRUNC_DATA)),
}


@impls
@pytest.mark.parametrize("case", list(PCAP_CASES))
def test_walk_pcap_statuses(impl, case):
    body, kw, (n, pos, status) = PCAP_CASES[case]
    kw = dict(kw)
    buf = pcap_header() + body
    end = len(buf) - kw.pop("end_back", 0)
    got, _ = same_as_reference(impl, buf, end=end, **kw)
    assert got == (n, F.PCAP_HEADER_LEN + pos, status)


# -- pcapng ----------------------------------------------------------------------------------
def pcapng_section(swap: bool) -> tuple[bytes, Expected]:
    """Packet blocks of every kind between blocks the walker skips, ending at an IDB."""
    out, exp = bytearray(), Expected.new()
    base = 3  # interfaces of earlier sections

    def put(raw: bytes, *packet):
        if packet:
            exp.add(
                len(out) + (12 if raw[:4] == block(F.BT_SPB, b"", swap=swap)[:4] else 28), *packet
            )
        out.extend(raw)

    put(epb(b"abcde", ifid=1, ticks=2**40 + 7, orig=9, swap=swap), 5, 9, 2**40 + 7, base + 1)
    put(block(0x00000BAD, b"custom, copyable", swap=swap))
    put(block(0x40000BAD, b"custom, not copyable", swap=swap))
    put(spb(b"0123456789", swap=swap), 10, 10, 0, base)
    put(spb(b"0123", orig=1500, swap=swap), 4, 1500, 0, base)  # cut at the block's end
    put(block(4, b"\0" * 8, swap=swap))  # name resolution block
    put(pb(b"xyz", ifid=0, drops=5, ticks=12345, swap=swap), 3, 3, 12345, base)
    put(block(5, b"\0" * 12, swap=swap))  # interface statistics block
    put(epb(b"", ifid=1, swap=swap), 0, 0, 0, base + 1)
    end = len(out)
    out += idb(swap=swap)
    return bytes(out), exp, end, base


@impls
@pytest.mark.parametrize("swap", [False, True], ids=["le", "be"])
def test_walk_pcapng_packet_blocks_and_skipped_blocks(impl, swap):
    buf, exp, end, base = pcapng_section(swap)
    got, arrays = walk(impl, buf, pcapng=True, swap=swap, iface_base=base, n_ifaces=2)
    check_expected(got, arrays, exp, end, F.BLOCK)
    got, arrays = walk(impl, buf, end=end, pcapng=True, swap=swap, iface_base=base, n_ifaces=2)
    check_expected(got, arrays, exp, end, F.OK)


PKT = b"\xaa" * 8
PCAPNG_CASES = {
    # name: (blocks in the given byte order, walk keywords, what the walk returns)
    "shb": (lambda s: epb(PKT, swap=s) + shb(swap=s), {}, (1, 40, F.BLOCK)),
    "idb": (lambda s: idb(swap=s), {}, (0, 0, F.BLOCK)),
    "limit": (lambda s: epb(PKT, swap=s) * 3, {"limit": 2}, (2, 80, F.OK)),
    "header_cut": (lambda s: epb(PKT, swap=s) + epb(PKT, swap=s)[:7], {}, (1, 40, F.TRUNC_HEADER)),
    "blen_small": (lambda s: block(0xBAD, b"", blen=8, swap=s), {}, (0, 0, F.BAD_BLOCK_LEN)),
    "blen_unaligned": (
        lambda s: block(0xBAD, b"1234", blen=15, swap=s),
        {},
        (0, 0, F.BAD_BLOCK_LEN),
    ),
    "epb_short": (lambda s: block(F.BT_EPB, b"\0" * 16, swap=s), {}, (0, 0, F.BAD_BLOCK_LEN)),
    "pb_short": (lambda s: block(F.BT_PB, b"\0" * 16, swap=s), {}, (0, 0, F.BAD_BLOCK_LEN)),
    "spb_short": (lambda s: block(F.BT_SPB, b"", swap=s), {}, (0, 0, F.BAD_BLOCK_LEN)),
    "data_cut": (lambda s: epb(PKT, swap=s) + epb(PKT, swap=s)[:-1], {}, (1, 40, F.TRUNC_DATA)),
    "blen_huge": (lambda s: epb(PKT, blen=0xFFFFFFFC, swap=s), {}, (0, 0, F.TRUNC_DATA)),
    "trailer": (
        lambda s: epb(PKT, swap=s) + epb(PKT, trailer=44, swap=s),
        {},
        (1, 40, F.BAD_TRAILER),
    ),
    "epb_iface": (lambda s: epb(PKT, ifid=1, swap=s), {}, (0, 0, F.BAD_IFACE)),
    "pb_iface": (lambda s: pb(PKT, ifid=2, swap=s), {"n_ifaces": 2}, (0, 0, F.BAD_IFACE)),
    "spb_no_iface": (lambda s: spb(PKT, swap=s), {"n_ifaces": 0}, (0, 0, F.BAD_IFACE)),
    "epb_caplen": (lambda s: epb(PKT, incl=9, swap=s), {}, (0, 0, F.BAD_CAPLEN)),
    "pb_caplen": (lambda s: pb(PKT, incl=0xFFFFFFFF, swap=s), {}, (0, 0, F.BAD_CAPLEN)),
    "iface_beyond_uint32": (
        lambda s: epb(PKT, ifid=1, swap=s),
        {"iface_base": 2**32 - 1, "n_ifaces": 2},
        OverflowError,
    ),
    "spb_iface_negative": (lambda s: spb(PKT, swap=s), {"iface_base": -1}, OverflowError),
}


@impls
@pytest.mark.parametrize("swap", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("case", list(PCAPNG_CASES))
def test_walk_pcapng_statuses(impl, case, swap):
    build, kw, want = PCAPNG_CASES[case]
    got, _ = same_as_reference(impl, build(swap), pcapng=True, swap=swap, **kw)
    assert got == want


# -- arguments -------------------------------------------------------------------------------
@impls
@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_walk_arguments_outside_the_buffer_are_refused(impl, pcapng):
    buf = pcap_header() + _rec()
    assert walk(impl, buf, -1, pcapng=pcapng)[0] is ValueError
    assert walk(impl, buf, 0, len(buf) + 1, pcapng=pcapng)[0] is ValueError
    assert walk(impl, buf, pcapng=pcapng, limit=5, room=4)[0] is ValueError
    assert walk(impl, buf, 30, 20, pcapng=pcapng)[0] == (0, 30, F.OK)
    assert walk(impl, buf, len(buf) + 5, 3, pcapng=pcapng)[0] == (0, len(buf) + 5, F.OK)


@impls
def test_walk_reads_read_only_buffers_and_mmaps(impl, tmp_path):
    buf, exp = pcap_walk(some_packets(10, 3))
    ro = np.frombuffer(buf, np.uint8)
    assert not ro.flags.writeable
    check_expected(*walk(impl, ro), exp, len(buf))
    path = tmp_path / "x.pcap"
    path.write_bytes(buf)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        view = np.frombuffer(m, np.uint8)
        check_expected(*walk(impl, view), exp, len(buf))
        del view


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mprotect")
@impls
def test_walk_never_reads_past_end(impl):
    """Bytes right after ``end`` are unreadable: any read beyond the span would fault."""
    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 2 * page)
    anchor = ctypes.c_char.from_buffer(m)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(ctypes.addressof(anchor) + page, page, 0) != 0:  # PROT_NONE
        pytest.skip("mprotect refused")
    try:
        view = np.frombuffer(m, np.uint8, page)
        rec = _rec(data=b"\7" * 44)
        fill = rec * (page // len(rec) - 1)
        r = page - len(fill)  # what the last record (or the damage) takes, 60 bytes or more
        tails = {
            F.OK: _rec(data=b"\7" * (r - 16)),
            F.TRUNC_DATA: _rec(incl=r, data=b"\7" * (r - 16)),
            F.TRUNC_HEADER: _rec(data=b"\7" * (r - 23)) + b"\0" * 7,
        }
        for status, tail in tails.items():
            view[:] = np.frombuffer(fill + tail, np.uint8)
            assert walk(impl, view, 0, page, limit=page)[0][2] == status
        blocks = epb(b"\1" * 20) * ((page - 20) // 52)
        skip = block(0xBAD, b"\0" * (page - len(blocks) - 20))
        hostile = struct.pack("<II", F.BT_EPB, 0xFFFFFFF0)  # the last 8 bytes of the page
        view[:] = np.frombuffer(blocks + skip + hostile, np.uint8)
        got, _ = walk(impl, view, 0, page, pcapng=True, limit=page)
        assert got == ((page - 20) // 52, page - 8, F.TRUNC_DATA)
        del view
    finally:
        libc.mprotect(ctypes.addressof(anchor) + page, page, 3)
        del anchor
        m.close()


@impls
def test_walk_from_threads(impl):
    buf, exp = pcap_walk(some_packets(300, 4))
    results = [None] * 4

    def run(k):
        results[k] = walk(impl, buf, limit=400)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, arrays in results:
        check_expected(got, arrays, exp, len(buf))


# -- random and damaged bytes ----------------------------------------------------------------
u32 = st.integers(0, 2**32 - 1)
wild = st.one_of(u32, st.integers(0, 64))


@st.composite
def pcap_bytes(draw):
    """Records whose lengths mostly tell the truth, then damage: overwrites and a cut."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 6))):
        data = draw(st.binary(max_size=40))
        incl = draw(st.one_of(st.just(len(data)), wild))
        out += pcap_record(
            data, sec=draw(u32), frac=draw(u32), orig=draw(u32), incl=incl, swap=draw(st.booleans())
        )
    return _damage(draw, out)


@st.composite
def pcapng_bytes(draw):
    out = bytearray()
    types = st.sampled_from(
        [F.BT_EPB, F.BT_EPB, F.BT_PB, F.BT_SPB, F.BT_SHB, F.BT_IDB, 4, 5, 0xBAD, 0x40000BAD]
    )
    for _ in range(draw(st.integers(0, 6))):
        data = draw(st.binary(max_size=40))
        kind = draw(st.one_of(types, u32))
        lie = {}
        if draw(st.integers(0, 4)) == 0:
            lie["blen"] = draw(st.one_of(u32, st.integers(0, 80)))
        if draw(st.integers(0, 4)) == 0:
            lie["trailer"] = draw(u32)
        fields = {"orig": draw(u32), "swap": draw(st.booleans())}
        if kind in (F.BT_EPB, F.BT_PB):
            fields.update(
                ifid=draw(st.integers(0, 3 if kind == F.BT_EPB else 0xFFFF)),
                ticks=draw(st.integers(0, 2**64 - 1)),
                incl=draw(st.one_of(st.just(len(data)), wild)),
            )
            out += (epb if kind == F.BT_EPB else pb)(data, **fields, **lie)
        elif kind == F.BT_SPB:
            out += spb(data, **fields, **lie)
        else:
            out += block(kind, data, swap=fields["swap"], **lie)
    return _damage(draw, out)


def _damage(draw, out: bytearray) -> bytes:
    for _ in range(draw(st.integers(0, 3))):
        if out:
            at = draw(st.integers(0, len(out) - 1))
            out[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
    return bytes(out[: draw(st.integers(0, len(out)))])


@st.composite
def span(draw, buf: bytes):
    pos = draw(st.integers(0, len(buf)))
    return pos, draw(st.integers(max(pos - 2, 0), len(buf)))


limits = st.one_of(st.integers(-1, 8), st.just(64))


@impls
@fuzz
@given(
    raw=st.one_of(pcap_bytes(), st.binary(max_size=200)),
    data=st.data(),
    swap=st.booleans(),
    nano=st.booleans(),
    limit=limits,
    max_caplen=st.one_of(st.integers(0, 64), st.integers(-3, 2**70)),
)
def test_walk_pcap_matches_reference_on_any_bytes(impl, raw, data, swap, nano, limit, max_caplen):
    pos, end = data.draw(span(raw))
    got, arrays = same_as_reference(
        impl, raw, pos=pos, end=end, swap=swap, nano=nano, max_caplen=max_caplen, limit=limit
    )
    n, new_pos, status = got
    assert 0 <= n <= max(limit, 0) and (pos <= new_pos <= max(end, pos))
    assert status in (F.OK, F.TRUNC_HEADER, F.TRUNC_DATA, F.BAD_CAPLEN)
    if status == F.OK and n < limit:
        assert new_pos >= end
    offsets, caplen = arrays[0][:n], arrays[1][:n].astype(np.int64)
    chain = np.concatenate([[pos], offsets + caplen])
    assert (offsets == chain[:-1] + 16).all() and (n == 0 or chain[-1] == new_pos)
    assert (offsets + caplen <= end).all()


@impls
@fuzz
@given(
    raw=st.one_of(pcapng_bytes(), st.binary(max_size=200)),
    data=st.data(),
    swap=st.booleans(),
    limit=limits,
    iface_base=st.one_of(st.integers(0, 5), st.integers(-(2**40), 2**40)),
    n_ifaces=st.one_of(st.integers(-1, 4), st.integers(0, 2**40)),
    snaplen0=st.one_of(st.just(0), st.integers(1, 80), st.integers(0, 2**40)),
)
def test_walk_pcapng_matches_reference_on_any_bytes(
    impl, raw, data, swap, limit, iface_base, n_ifaces, snaplen0
):
    pos, end = data.draw(span(raw))
    got, arrays = same_as_reference(
        impl,
        raw,
        pos=pos,
        end=end,
        pcapng=True,
        swap=swap,
        iface_base=iface_base,
        n_ifaces=n_ifaces,
        snaplen0=snaplen0,
        limit=limit,
    )
    if got is OverflowError:
        return
    n, new_pos, status = got
    assert 0 <= n <= max(limit, 0) and pos <= new_pos <= max(end, pos)
    assert status in (getattr(F, s) for s in STATUSES)
    assert (arrays[0][:n] + arrays[1][:n] <= end).all()
    assert ((arrays[4][:n] >= iface_base) & (arrays[4][:n] < iface_base + n_ifaces)).all()


# -- packing, gathering, round trips ---------------------------------------------------------
@st.composite
def packet_arrays(draw, max_packets=12):
    """Packets scattered through a buffer with gaps, in any order: data and the arrays."""
    k = draw(st.integers(0, max_packets))
    sizes = draw(st.lists(st.integers(0, 70), min_size=k, max_size=k))
    gaps = draw(st.lists(st.integers(0, 5), min_size=k, max_size=k))
    starts = np.cumsum([0] + [s + g for s, g in zip(sizes, gaps)])
    data = np.frombuffer(
        draw(st.binary(min_size=int(starts[-1]), max_size=int(starts[-1]))), np.uint8
    )
    order = draw(st.permutations(range(k)))
    offsets = np.array([starts[i] + gaps[i] for i in order], np.int64)
    caplen = np.array([sizes[i] for i in order], np.uint32)
    origlen = np.array(draw(st.lists(u32, min_size=k, max_size=k)), np.uint32)
    origlen = np.maximum(origlen, caplen)
    return data, offsets, caplen, origlen


def packets_of(data, offsets, caplen) -> list[bytes]:
    return [data[o : o + c].tobytes() for o, c in zip(offsets.tolist(), caplen.tolist())]


def pack(impl, name, size, *args):
    out = np.full(size, 0xEE, np.uint8)
    try:
        n = getattr(impl, name)(*args, out)
    except ValueError:
        return ValueError, out
    return n, out


@impls
@fuzz_packers
@given(
    arrays=packet_arrays(),
    nano=st.booleans(),
    ts=st.lists(st.integers(0, 2**32 * 10**9 - 1), min_size=12, max_size=12),
)
def test_pack_pcap_then_walk_gives_the_packets_back(impl, arrays, nano, ts):
    data, offsets, caplen, origlen = arrays
    k = len(caplen)
    ts_ns = np.array(ts[:k], np.int64)
    size = int(caplen.sum()) + 16 * k
    n, out = pack(impl, "pack_pcap", size + 8, data, offsets, caplen, origlen, ts_ns, nano)
    ref_n, ref_out = pack(REF, "pack_pcap", size + 8, data, offsets, caplen, origlen, ts_ns, nano)
    assert n == ref_n == size and out.tobytes() == ref_out.tobytes()
    (got_n, pos, status), back = walk(impl, out, 0, n, nano=nano, limit=k)
    assert (got_n, pos, status) == (k, n, F.OK)
    assert back[1].tolist() == caplen.tolist() and back[2].tolist() == origlen.tolist()
    assert back[3].tolist() == (ts_ns if nano else ts_ns - ts_ns % 1000).tolist()
    assert packets_of(out, back[0], back[1]) == packets_of(data, offsets, caplen)


@impls
@fuzz_packers
@given(
    arrays=packet_arrays(),
    ticks=st.lists(st.integers(0, 2**64 - 1), min_size=12, max_size=12),
    iface=st.lists(st.integers(0, 3), min_size=12, max_size=12),
)
def test_pack_pcapng_then_walk_gives_the_packets_back(impl, arrays, ticks, iface):
    data, offsets, caplen, origlen = arrays
    k = len(caplen)
    t = np.array(ticks[:k], np.uint64)
    ifc = np.array(iface[:k], np.uint32)
    size = int(((caplen.astype(np.int64) + 3) & ~3).sum()) + 32 * k
    n, out = pack(impl, "pack_pcapng", size + 8, data, offsets, caplen, origlen, t, ifc)
    ref_n, ref_out = pack(REF, "pack_pcapng", size + 8, data, offsets, caplen, origlen, t, ifc)
    assert n == ref_n == size and out.tobytes() == ref_out.tobytes()
    (got_n, pos, status), back = walk(impl, out, 0, n, pcapng=True, n_ifaces=4, limit=k)
    assert (got_n, pos, status) == (k, n, F.OK)
    assert back[1].tolist() == caplen.tolist() and back[2].tolist() == origlen.tolist()
    assert back[3].tolist() == t.tolist() and back[4].tolist() == ifc.tolist()
    assert packets_of(out, back[0], back[1]) == packets_of(data, offsets, caplen)


@impls
def test_pack_pcap_negative_and_far_timestamps_match_reference(impl):
    data = np.arange(8, dtype=np.uint8)
    ts = np.array([-1, -(10**9), 2**63 - 1, -(2**63), 5 * 10**9 + 999_999_999], np.int64)
    k = len(ts)
    args = (data, np.zeros(k, np.int64), np.full(k, 8, np.uint32), np.full(k, 8, np.uint32), ts)
    for nano in (False, True):
        n, out = pack(impl, "pack_pcap", 24 * k, *args, nano)
        ref_n, ref_out = pack(REF, "pack_pcap", 24 * k, *args, nano)
        assert n == ref_n == 24 * k and out.tobytes() == ref_out.tobytes()


@impls
@fuzz_packers
@given(arrays=packet_arrays(), step=st.integers(1, 3))
def test_gather_copies_each_packet(impl, arrays, step):
    data, offsets, caplen, _ = arrays
    offsets, caplen = offsets[::step], caplen[::step]  # strided views, as batch[::2] makes
    dst_off = np.zeros(len(caplen), np.int64)
    np.cumsum(caplen[:-1], out=dst_off[1:])
    dst = np.full(int(caplen.sum()) + 3, 0xEE, np.uint8)
    impl.gather(data, offsets, caplen, dst, dst_off)
    assert dst[: len(dst) - 3].tobytes() == b"".join(packets_of(data, offsets, caplen))
    assert (dst[len(dst) - 3 :] == 0xEE).all()


@impls
def test_gather_within_one_buffer_matches_reference(impl):
    src_off = np.array([10, 0, 3, 40], np.int64)
    dst_off = np.array([0, 5, 12, 20], np.int64)
    caplen = np.array([30, 12, 20, 8], np.uint32)
    got = np.arange(64, dtype=np.uint8)
    ref = got.copy()
    impl.gather(got, src_off, caplen, got, dst_off)
    REF.gather(ref, src_off, caplen, ref, dst_off)
    assert got.tolist() == ref.tolist()


@impls
@pytest.mark.parametrize("name", ["gather", "pack_pcap", "pack_pcapng"])
@pytest.mark.parametrize("fault", ["negative", "past_data", "short_out", "short_array"])
def test_packers_refuse_packets_outside_their_buffers(impl, name, fault):
    data = np.arange(32, dtype=np.uint8)
    offsets = np.array([0, -1 if fault == "negative" else 4], np.int64)
    caplen = np.array([8, 29 if fault == "past_data" else 8], np.uint32)
    origlen = np.full(2, 8, np.uint32)
    out = np.zeros(12 if fault == "short_out" else 200, np.uint8)
    if fault == "short_array":
        offsets = offsets[:1]
    with pytest.raises(ValueError):
        if name == "gather":
            impl.gather(data, offsets, caplen, out, np.array([0, 8], np.int64))
        elif name == "pack_pcap":
            impl.pack_pcap(data, offsets, caplen, origlen, np.zeros(2, np.int64), True, out)
        else:
            impl.pack_pcapng(
                data, offsets, caplen, origlen, np.zeros(2, np.uint64), np.zeros(2, np.uint32), out
            )


# -- through the reader ----------------------------------------------------------------------
@impls
def test_reader_gives_the_same_batches_with_either_twin(impl, tmp_path):
    raw, _ = pcap_walk(some_packets(30, 5), swap=True, nano=True)
    (tmp_path / "a.pcap").write_bytes(raw)
    ng = shb() + idb() + idb(tsresol=9) + epb(b"first", ifid=1, ticks=10**9)
    ng += shb(swap=True) + idb(swap=True) + idb(swap=True)
    ng += pcapng_section(True)[0] + epb(b"tail", swap=True)
    (tmp_path / "b.pcapng").write_bytes(ng)
    for name in ("a.pcap", "b.pcapng"):
        got = CaptureReader(tmp_path / name, backend_module=impl).read_all()
        ref = CaptureReader(tmp_path / name, backend_module=REF).read_all()
        assert len(got) == len(ref) > 0 and got.same_packets(ref)
        assert got.offsets.tolist() == ref.offsets.tolist()
        assert got.iface.tolist() == ref.iface.tolist()
