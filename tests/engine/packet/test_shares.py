"""Shares of a stream (an auction of k blocks awards k providers one share each): every packet
in exactly one share, both directions of a flow in the same one, and the flows of one share
still spread over the workers that flow affinity picks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from capture_craft import corpus_params
from naive import flow_hash as naive_flow_hash

from engine import read_capture
from engine.capture.generate import generate_batch
from engine.packet.flowhash import SHARE_SEED, flow_hash, share_of_packets, worker_of_packets
from engine.packet.flowkeys import flow_keys


def _shares_hold(batch, k: int) -> np.ndarray:
    shares = share_of_packets(batch, k)
    assert shares.dtype == np.uint32 and len(shares) == len(batch)
    assert ((shares >= 0) & (shares < k)).all()
    # Every packet in one share, so the k deliveries together give back the stream: the
    # multiset of packets over the shares equals the input's, none twice.
    parts = [
        Counter(batch.packet(int(i)).tobytes() for i in np.flatnonzero(shares == s))
        for s in range(k)
    ]
    assert sum(parts, Counter()) == Counter(batch.packet(i).tobytes() for i in range(len(batch)))
    # Both directions of a flow (one symmetric hash) always land in the same share.
    hashes = flow_hash(batch, SHARE_SEED)
    by_flow: dict[int, set[int]] = {}
    for h, s in zip(hashes.tolist(), shares.tolist()):
        by_flow.setdefault(h, set()).add(s)
    assert all(len(v) == 1 for v in by_flow.values())
    return shares


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_generated_traffic_splits_into_k_disjoint_shares(k):
    batch = generate_batch(20_000, flows=500, seed=k)
    shares = _shares_hold(batch, k)
    counts = np.bincount(shares, minlength=k)
    assert (counts > 0).all()  # 500 flows: every share gets some
    # The naive reference's hash with the share seed gives the same shares.
    keys = flow_keys(batch)
    for i in range(0, len(batch), 997):
        h = naive_flow_hash(
            int(keys.family[i]),
            int(keys.proto[i]),
            keys.src[i].tobytes(),
            keys.dst[i].tobytes(),
            int(keys.sport[i]),
            int(keys.dport[i]),
            int(keys.fragment[i]),
            SHARE_SEED,
        )
        assert ((h >> 32) * k) >> 32 == shares[i]


def test_a_share_still_spreads_over_the_workers():
    batch = generate_batch(20_000, flows=2_000, seed=5)
    shares = share_of_packets(batch, 2)
    for s in range(2):
        mine = batch.take(np.flatnonzero(shares == s))
        workers = worker_of_packets(mine, 2)
        assert 0.3 < workers.mean() < 0.7, "one share's flows all went to one worker"


@pytest.mark.filterwarnings("ignore::engine.CaptureTruncatedWarning")  # a cut capture is read
@pytest.mark.parametrize("path", corpus_params())
def test_every_corpus_capture_splits_into_disjoint_shares(path):
    batch = read_capture(path, errors="truncate")
    for k in (2, 3):
        _shares_hold(batch, k)
