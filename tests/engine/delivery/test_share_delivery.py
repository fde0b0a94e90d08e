"""``pktx deliver --share I/K`` as the K providers of an auction's awards run it: the K
deliveries of one stream, each a real process, give back every packet exactly once."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from delivery_support import CORPUS, pktx_cmd

from engine import read_capture


def _packets(batch) -> list[tuple[bytes, int]]:
    return [(batch.packet(i).tobytes(), int(batch.ts_ns[i])) for i in range(len(batch))]


def _deliver_shares(src, tmp_path, k: int) -> list[list[tuple[bytes, int]]]:
    outs = []
    for i in range(k):
        out = tmp_path / f"share-{i}-of-{k}.pcap"
        done = subprocess.run(
            pktx_cmd(
                "deliver",
                src,
                "-o",
                out,
                "--share",
                f"{i}/{k}",
                "--workers",
                "1",
                "--segment-packets",
                "512",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outs.append(_packets(read_capture(out)))
    return outs


@pytest.mark.parametrize("k", [2, 3])
def test_k_shares_deliver_every_packet_of_a_stream_exactly_once(tmp_path, k):
    src = tmp_path / "in.pcap"
    made = subprocess.run(
        pktx_cmd("generate", src, "--packets", "20000", "--flows", "300", "--seed", "11"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    whole = _packets(read_capture(src))
    shares = _deliver_shares(src, tmp_path, k)
    assert all(shares), "a share came out empty: 300 flows should reach every share"
    assert sum((Counter(s) for s in shares), Counter()) == Counter(whole)
    assert sum(len(s) for s in shares) == len(whole)
    position = {p: n for n, p in enumerate(whole)}
    for s in shares:  # each share keeps the stream's order
        assert [position[p] for p in s] == sorted(position[p] for p in s)


def test_a_corpus_capture_split_in_two_loses_and_repeats_nothing(tmp_path):
    src = CORPUS / "dpkt" / "http.pcap"
    if not src.exists():
        pytest.skip(f"capture corpus not found at {CORPUS}")
    shares = _deliver_shares(src, tmp_path, 2)
    whole = _packets(read_capture(src))
    assert sum((Counter(s) for s in shares), Counter()) == Counter(whole)


def test_a_bad_share_is_refused_before_any_work(tmp_path):
    for bad in ("3/3", "1/0", "x/2", "-1/2"):
        done = subprocess.run(
            pktx_cmd("deliver", tmp_path / "none.pcap", "-o", tmp_path / "o.pcap", "--share", bad),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and "--share" in done.stderr, (bad, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.pcap").exists()
