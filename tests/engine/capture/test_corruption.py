"""Damaged captures: whatever the bytes, a read gives a PacketBatch or a CaptureError, promptly."""

from __future__ import annotations

import contextlib
import signal
import struct
import warnings

import pytest
from capture_craft import (
    BACKEND_IDS,
    BACKENDS,
    end_of_options,
    epb,
    idb,
    obsolete_pb,
    option,
    packets_of,
    pcap_file,
    shb,
    spb,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import CaptureError, CaptureTruncatedWarning, PacketBatch, open_capture, read_capture

SEC = 1_600_000_000
PKTS = [bytes((i * 7 + k) % 256 for k in range(20 + 9 * i)) for i in range(7)]

FIRST_SHB = shb(options=option(4, b"seed") + end_of_options())
SEEDS = {
    "pcap-us": pcap_file([(p, SEC + i, i * 1000, len(p) + 3) for i, p in enumerate(PKTS)]),
    "pcap-ns-big": pcap_file(
        [(p, SEC + i, i * 7, len(p)) for i, p in enumerate(PKTS)], ">", nano=True, linktype=101
    ),
    "pcapng": (
        FIRST_SHB
        + idb(1, 65535, name="eth0")
        + idb(101, tsresol=9, tsoffset=-5)
        + b"".join(
            epb(
                p,
                SEC * 10**6 + i,
                ifid=i % 2,
                options=option(1, b"c") + end_of_options() if i == 3 else b"",
            )
            for i, p in enumerate(PKTS[:4])
        )
        + spb(PKTS[4])
        + obsolete_pb(PKTS[5], ticks=99)
        + shb(">")
        + idb(228, e=">", tsresol=0x80 | 10)
        + epb(PKTS[6], 5, e=">")
    ),
}

# Values a length field is most likely to trip over.
EDGES = [0, 1, 3, 4, 8, 11, 12, 16, 20, 28, 31, 32, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFF]


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail instead of hanging: a read of a few hundred bytes has no business taking seconds."""

    def expired(signum, frame):
        raise TimeoutError(f"read did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _mutation(size: int):
    pos = st.integers(0, max(size - 1, 0))
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("u32"), pos, st.sampled_from(EDGES), st.booleans()),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=24)),
        st.tuples(st.just("delete"), pos, st.integers(1, 24)),
        st.tuples(st.just("truncate"), pos),
    )


def _apply(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind, at = op[0], min(op[1], max(len(b) - 1, 0))
        if not b:
            break
        if kind == "flip":
            b[at] ^= 1 << op[2]
        elif kind == "byte":
            b[at] = op[2]
        elif kind == "u32" and at + 4 <= len(b):
            struct.pack_into(">I" if op[3] else "<I", b, at, op[2])
        elif kind == "insert":
            b[at:at] = op[2]
        elif kind == "delete":
            del b[at : at + op[2]]
        elif kind == "truncate":
            del b[at:]
    return bytes(b)


@st.composite
def damaged(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = SEEDS[name]
    ops = draw(st.lists(_mutation(len(data)), min_size=1, max_size=4))
    return name, _apply(data, ops)


def _outcome(path, walker, errors: str, batch_packets: int | None = None):
    """The packets read (as values), or the CaptureError's message; anything else propagates."""
    try:
        with warnings.catch_warnings(), time_limit(5):
            warnings.simplefilter("ignore", CaptureTruncatedWarning)
            if batch_packets is None:
                batch = read_capture(path, errors=errors, backend_module=walker)
            else:
                batches = list(
                    open_capture(
                        path, errors=errors, batch_packets=batch_packets, backend_module=walker
                    )
                )
                for b in batches:
                    assert isinstance(b, PacketBatch) and 0 < len(b) <= batch_packets
                batch = PacketBatch.concat(batches) if batches else PacketBatch.empty()
    except CaptureError as err:
        assert err.message, "a CaptureError says what was wrong"
        return ("error", type(err))
    assert isinstance(batch, PacketBatch)
    return ("ok", packets_of(batch))


SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(case=damaged())
def test_damage_gives_a_batch_or_capture_error(tmp_path, case):
    _name, data = case
    path = tmp_path / "damaged"
    path.write_bytes(data)
    for errors in ("strict", "truncate"):
        outcomes = {}
        for walker, wid in zip(BACKENDS, BACKEND_IDS, strict=True):
            whole = _outcome(path, walker, errors)
            streamed = _outcome(path, walker, errors, batch_packets=3)
            assert streamed == whole, f"{wid}: streaming and reading whole disagree"
            outcomes[wid] = whole
        assert len({repr(o) for o in outcomes.values()}) == 1, (
            f"backends disagree ({errors}): {outcomes}"
        )
        if errors == "strict" and whole[0] == "ok":
            # What strict reading accepts, truncate reading reads the same.
            assert _outcome(path, BACKENDS[0], "truncate") == whole


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_are_valid(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(SEEDS[name])
    assert len(read_capture(path)) == len(PKTS)


@SETTINGS
@given(name=st.sampled_from(sorted(SEEDS)), cut=st.floats(0, 1, exclude_max=True))
def test_truncation_gives_a_prefix(tmp_path, name, cut):
    data = SEEDS[name]
    intact_path = tmp_path / "intact"
    intact_path.write_bytes(data)
    intact = read_capture(intact_path)
    expected = packets_of(intact)
    length = int(len(data) * cut)
    path = tmp_path / "cut"
    path.write_bytes(data[:length])
    for walker in BACKENDS:
        for batch_packets in (None, 2):
            kind, got = _outcome(path, walker, "truncate", batch_packets)
            if kind == "error":  # only the file's own header can be too damaged to start
                assert length < (24 if name.startswith("pcap-") else len(FIRST_SHB)), length
                continue
            assert got == expected[: len(got)]
            if name.startswith("pcap-"):
                # Every record that ends before the cut is there, and no other.
                whole = sum(
                    1
                    for i in range(len(intact))
                    if int(intact.offsets[i]) + int(intact.caplen[i]) <= length
                )
                assert len(got) == whole
            strict_kind, strict_got = _outcome(path, walker, "strict", batch_packets)
            if strict_kind == "ok":  # cut on a record boundary: nothing was lost
                assert strict_got == got
