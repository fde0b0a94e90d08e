"""numba kernels (segmentation, symmetric flow hash, worker assignment) against naive versions."""

from __future__ import annotations

import itertools
import warnings

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from locations import CORPUS

from engine.capture.batch import PacketBatch
from engine.packet.flowhash import assign_workers, flow_hash, partition, worker_of_packets
from engine.packet.flowkeys import FlowKeys, flow_keys
from engine.packet.segment import Segmenter, by_bytes, by_packets, by_time, segment_bounds


def sized_batch(sizes: list[int], ts: list[int]) -> PacketBatch:
    """A batch of zero bytes whose packets have the given sizes and timestamps."""
    caplen = np.array(sizes, np.uint32)
    offsets = np.zeros(len(sizes), np.int64)
    if len(sizes) > 1:
        np.cumsum(caplen[:-1], out=offsets[1:])
    return PacketBatch(
        np.zeros(int(caplen.sum()), np.uint8), offsets, caplen, caplen, np.array(ts, np.int64)
    )


# -- segmentation ------------------------------------------------------------------------------


@pytest.fixture(params=["numpy", "numba"])
def segment_path(request, monkeypatch):
    """Every segmentation test runs on both paths: numpy (few segments, no time window) and
    the numba kernel (forced by allowing the numpy path no segment at all)."""
    from engine.packet import segment

    if request.param == "numba":
        monkeypatch.setattr(segment, "NUMPY_SEGMENTS_MAX", -1)
    return request.param


limit = st.one_of(st.just(0), st.integers(1, 40))


@st.composite
def packets(draw, max_size=120):
    sizes = draw(st.lists(st.integers(0, 1600), max_size=max_size))
    start = draw(st.integers(0, 2**40))
    steps = draw(st.lists(st.integers(-50, 400), min_size=len(sizes), max_size=len(sizes)))
    ts = list(np.cumsum([start, *steps[:-1]])) if sizes else []
    return sizes, [int(t) for t in ts]


@pytest.mark.usefixtures("segment_path")
@settings(max_examples=300, deadline=None)
@given(
    packets(),
    limit,
    st.one_of(st.just(0), st.integers(1, 5000)),
    st.one_of(st.just(0), st.integers(1, 2000)),
)
def test_segment_bounds_match_naive(pk, max_packets, max_bytes, window_ns):
    sizes, ts = pk
    got = segment_bounds(
        sized_batch(sizes, ts), max_packets=max_packets, max_bytes=max_bytes, window_ns=window_ns
    )
    want = naive.bounds(naive.segments(sizes, ts, max_packets, max_bytes, window_ns))
    assert got.tolist() == want
    assert got.dtype == np.int64


@pytest.mark.usefixtures("segment_path")
@settings(max_examples=200, deadline=None)
@given(packets(), st.integers(1, 5000), st.data())
def test_byte_budget_is_kept_unless_one_packet_alone_breaks_it(pk, budget, data):
    sizes, ts = pk
    b = by_bytes(sized_batch(sizes, ts), budget)
    for lo, hi in itertools.pairwise(b):
        total = sum(sizes[lo:hi])
        assert total <= budget or hi - lo == 1
        if hi < len(sizes):  # greedy: the next packet would not have fitted
            assert total + sizes[hi] > budget


@pytest.mark.usefixtures("segment_path")
@settings(max_examples=200, deadline=None)
@given(packets(), st.integers(1, 30), st.integers(1, 3000))
def test_count_and_time_segments(pk, k, window):
    sizes, ts = pk
    batch = sized_batch(sizes, ts)
    counts = np.diff(by_packets(batch, k))
    assert (counts[:-1] == k).all() and (len(counts) == 0 or 1 <= counts[-1] <= k)
    b = by_time(batch, window)
    for lo, hi in itertools.pairwise(b):
        assert all(t - ts[lo] < window for t in ts[lo:hi])
        if hi < len(ts):
            assert ts[hi] - ts[lo] >= window


@pytest.mark.usefixtures("segment_path")
@settings(max_examples=200, deadline=None)
@given(
    packets(),
    limit,
    st.one_of(st.just(0), st.integers(1, 5000)),
    st.one_of(st.just(0), st.integers(1, 2000)),
    st.data(),
)
def test_segmenter_cuts_a_stream_as_one_batch(pk, max_packets, max_bytes, window_ns, data):
    if not (max_packets or max_bytes or window_ns):
        max_packets = 7
    sizes, ts = pk
    whole = sized_batch(sizes, ts)
    want = segment_bounds(
        whole, max_packets=max_packets, max_bytes=max_bytes, window_ns=window_ns
    ).tolist()
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(sizes)), max_size=6))))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(sizes)], strict=True)]
    limits = {"max_packets": max_packets, "max_bytes": max_bytes, "window_ns": window_ns}

    seg = Segmenter(**limits)
    out = [s for piece in pieces for s in seg.feed(piece)]
    last = seg.finish()
    out += [last] if last is not None else []
    assert [*(s.first_seq for s in out), len(sizes)] == want if sizes else out == []
    for s in out:
        lo = s.first_seq
        assert s.caplen.tolist() == sizes[lo : lo + len(s)]
        assert s.ts_ns.tolist() == ts[lo : lo + len(s)]

    starts = Segmenter(**limits)
    found = [int(i) + piece.first_seq for piece in pieces for i in starts.starts(piece)]
    assert [*found, len(sizes)] == want if sizes else found == []


@pytest.mark.usefixtures("segment_path")
def test_segment_edge_cases():
    assert segment_bounds(PacketBatch.empty(), max_packets=3).tolist() == [0]
    batch = sized_batch([10, 5000, 10, 10], [0, 1, 2, 3])
    assert by_bytes(batch, 100).tolist() == [0, 1, 2, 4]
    assert segment_bounds(batch).tolist() == [0, 4]  # no limit: one segment
    assert segment_bounds(batch, max_packets=3, max_bytes=30).tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize(
    "call",
    [
        lambda b: by_packets(b, 0),
        lambda b: by_bytes(b, -1),
        lambda b: by_time(b, 1.5),
        lambda b: segment_bounds(b, max_packets=-2),
        lambda b: Segmenter(),
    ],
)
def test_segment_arguments_are_checked(call):
    with pytest.raises(ValueError):
        call(sized_batch([1, 2], [0, 1]))


def test_segment_needs_a_batch():
    with pytest.raises(TypeError):
        segment_bounds([1, 2, 3], max_packets=1)


# -- symmetric flow hash -----------------------------------------------------------------------


@st.composite
def flow_rows(draw, max_size=40):
    n = draw(st.integers(0, max_size))
    rows = []
    for _ in range(n):
        family = draw(st.sampled_from([0, 4, 6]))
        alen = {0: 0, 4: 4, 6: 16}[family]
        rows.append(
            {
                "family": family,
                "proto": draw(st.sampled_from([0, 1, 6, 17, 33, 47, 58, 132, 136, 255])),
                "src": draw(st.binary(min_size=alen, max_size=alen)),
                "dst": draw(st.binary(min_size=alen, max_size=alen)),
                "sport": draw(st.integers(0, 65535)),
                "dport": draw(st.integers(0, 65535)),
                "fragment": draw(st.sampled_from([0, 0, 1, 2])),
            }
        )
    return rows


def keys_from_rows(rows: list[dict]) -> FlowKeys:
    n = len(rows)
    keys = FlowKeys.allocate(n)
    for name in ("l3_off", "l4_off", "payload_off"):
        getattr(keys, name)[:] = -1
    keys.src[:] = 0
    keys.dst[:] = 0
    for i, r in enumerate(rows):
        for name in ("family", "proto", "sport", "dport", "fragment"):
            getattr(keys, name)[i] = r[name]
        keys.src[i, : len(r["src"])] = np.frombuffer(r["src"], np.uint8)
        keys.dst[i, : len(r["dst"])] = np.frombuffer(r["dst"], np.uint8)
    return keys


def reversed_keys(keys: FlowKeys) -> FlowKeys:
    return FlowKeys(
        keys.family,
        keys.proto,
        keys.dst,
        keys.src,
        keys.dport,
        keys.sport,
        keys.l3_off,
        keys.l4_off,
        keys.payload_off,
        keys.fragment,
    )


seeds = st.one_of(st.just(0), st.integers(0, 2**64 - 1))


@settings(max_examples=300, deadline=None)
@given(flow_rows(), seeds)
def test_flow_hash_matches_naive(rows, seed):
    got = flow_hash(keys_from_rows(rows), seed)
    assert got.dtype == np.uint64
    want = [
        naive.flow_hash(
            r["family"], r["proto"], r["src"], r["dst"], r["sport"], r["dport"], r["fragment"], seed
        )
        for r in rows
    ]
    assert got.tolist() == want


@settings(max_examples=300, deadline=None)
@given(flow_rows(), seeds)
def test_flow_hash_is_symmetric(rows, seed):
    keys = keys_from_rows(rows)
    assert np.array_equal(flow_hash(keys, seed), flow_hash(reversed_keys(keys), seed))


@settings(max_examples=100, deadline=None)
@given(flow_rows(), st.integers(1, 64), seeds)
def test_assign_workers_matches_naive_and_is_symmetric(rows, n, seed):
    keys = keys_from_rows(rows)
    h = flow_hash(keys, seed)
    got = assign_workers(h, n)
    assert got.dtype == np.uint32
    assert got.tolist() == [naive.assign_worker(int(x), n) for x in h]
    assert np.array_equal(got, worker_of_packets(reversed_keys(keys), n, seed))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 20).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), max_size=200))
    )
)
def test_partition_matches_naive(case):
    n, parts = case
    order, bounds = partition(np.array(parts, np.int64), n)
    want_order, want_bounds = naive.partition(parts, n)
    assert order.tolist() == want_order
    assert bounds.tolist() == want_bounds


def test_partition_of_a_batch_by_worker():
    from scapy.layers.inet import IP, TCP

    pkts = [
        bytes(IP(src=f"10.0.{i % 7}.1", dst="10.9.9.9") / TCP(sport=i % 5, dport=80))
        for i in range(60)
    ]
    batch = PacketBatch.from_packets(pkts, linktype=228)
    workers = worker_of_packets(batch, 3)
    order, bounds = partition(workers, 3)
    for w in range(3):
        share = batch.take(order[bounds[w] : bounds[w + 1]])
        assert (workers[order[bounds[w] : bounds[w + 1]]] == w).all()
        assert np.all(np.diff(order[bounds[w] : bounds[w + 1]]) > 0)  # stream order kept
        assert len(share) == bounds[w + 1] - bounds[w]


def test_what_hashes_alike():
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    a, b = "192.0.2.1", "198.51.100.7"
    pkts = [
        IP(src=a, dst=b) / TCP(sport=40000, dport=443),
        IP(src=b, dst=a) / TCP(sport=443, dport=40000),
        IP(src=a, dst=b) / ICMP(type=8),  # echo request
        IP(src=b, dst=a) / ICMP(type=0),  # and its reply
        IP(src=a, dst=b, flags="MF", id=9) / UDP(sport=5000, dport=53) / (b"x" * 40),
        IP(src=a, dst=b, frag=6, id=9, proto=17) / (b"y" * 40),  # its later fragment
        IP(src=a, dst=b) / TCP(sport=40001, dport=443),  # another flow
    ]
    h = flow_hash(PacketBatch.from_packets([bytes(p) for p in pkts], linktype=228))
    assert h[0] == h[1] and h[2] == h[3] and h[4] == h[5]
    assert len({h[0], h[2], h[4], h[6]}) == 4
    assert (
        flow_hash(flow_keys(PacketBatch.from_packets([bytes(pkts[0])], linktype=228)), seed=1)[0]
        != h[0]
    )


def test_distribution_over_workers():
    rng = np.random.default_rng(2024)
    n = 1 << 18
    rows = FlowKeys.allocate(n)
    rows.family[:] = 4
    rows.proto[:] = rng.choice([6, 17], n)
    rows.src[:] = 0
    rows.dst[:] = 0
    # Realistic, low-entropy keys: clients numbered up from 10.0.0.0 talking to one server.
    i = np.arange(n)
    rows.src[:, 0] = 10
    rows.src[:, 1], rows.src[:, 2], rows.src[:, 3] = i >> 16, (i >> 8) & 255, i & 255
    rows.dst[:, :4] = (192, 0, 2, 80)
    rows.sport[:] = rng.integers(1024, 65536, n)
    rows.dport[:] = 443
    rows.fragment[:] = 0
    h = flow_hash(rows)
    assert len(np.unique(h)) == n  # distinct flows, no collisions
    bits = ((h[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    assert np.abs(bits - 0.5).max() < 0.01
    for workers in (2, 3, 8, 13, 64):
        counts = np.bincount(assign_workers(h, workers), minlength=workers)
        expected = n / workers
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        # The 99.9th percentile of chi-square with (workers - 1) degrees of freedom is below
        # 3 * (workers - 1) + 12 for these sizes.
        assert chi2 < 3 * (workers - 1) + 12, (workers, counts)


def test_flow_hash_arguments_are_checked():
    keys = keys_from_rows([])
    with pytest.raises(ValueError):
        flow_hash(keys, -1)
    with pytest.raises(ValueError):
        flow_hash(keys, 2**64)
    with pytest.raises(TypeError):
        flow_hash(np.zeros(3))
    with pytest.raises(ValueError):
        assign_workers(np.zeros(3, np.uint64), 0)
    with pytest.raises(TypeError):
        assign_workers(np.zeros(3, np.int64), 2)
    with pytest.raises(ValueError):
        partition(np.array([0, 3]), 3)
    with pytest.raises(TypeError):
        partition(np.array([0.5]), 3)


def test_corpus_conversations_hash_alike():
    if not CORPUS.is_dir():
        pytest.skip(f"capture corpus not found at {CORPUS} (the shared folder beside the project)")
    from engine import read_capture

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = read_capture(CORPUS / "dpkt" / "http.pcap")
    keys = flow_keys(batch)
    h = flow_hash(keys)
    by_flow: dict = {}
    for i in range(len(batch)):
        r = keys.row(i)
        if r["proto"] != 6:
            continue
        ends = tuple(sorted([(r["src"], r["sport"]), (r["dst"], r["dport"])]))
        by_flow.setdefault(ends, set()).add(int(h[i]))
    assert by_flow and all(len(v) == 1 for v in by_flow.values())
    both_ways = [e for e in by_flow if e[0] != e[1]]
    assert both_ways
    assert len({next(iter(v)) for v in by_flow.values()}) == len(by_flow)
