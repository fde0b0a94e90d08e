"""inspect with stream=yes: signatures across in-order TCP segments, against a slow reference
that keeps every direction's whole byte stream; and through a real delivery with affinity."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive_inspect import stream_matches
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from engine.capture.batch import PacketBatch
from engine.packet.ahocorasick import TcpStreams
from engine.services.inspect import Inspect

MACS = {"dst": "02:00:00:00:00:01", "src": "02:00:00:00:00:02"}


def _tcp(
    payload: bytes,
    seq: int,
    *,
    flow: int = 0,
    reverse: bool = False,
    flags: str = "PA",
    v6: bool = False,
) -> bytes:
    a, b = (
        (f"10.0.{flow}.1", f"10.0.{flow}.2") if not v6 else (f"fd00::{flow}:1", f"fd00::{flow}:2")
    )
    sport, dport = 40000 + flow, 80
    if reverse:
        a, b, sport, dport = b, a, dport, sport
    ip = IPv6(src=a, dst=b) if v6 else IP(src=a, dst=b)
    return bytes(
        Ether(**MACS) / ip / TCP(sport=sport, dport=dport, seq=seq % 2**32, flags=flags) / payload
    )


def _run(svc: Inspect, frames: list[bytes], cuts=()) -> list[bool]:
    """The service over ``frames`` in batches split at ``cuts``; which packets matched
    (action=mark sets DSCP 1 on them, so the output says which)."""
    matched = []
    edges = [0, *sorted(set(cuts)), len(frames)]
    for lo, hi in itertools.pairwise(edges):
        if lo == hi:
            continue
        out = svc.process(PacketBatch.from_packets(frames[lo:hi]))
        for i in range(len(out)):
            pkt = Ether(bytes(out.packet(i)))
            layer = pkt[IP] if IP in pkt else pkt[IPv6]
            tos = layer.tos if IP in pkt else layer.tc
            matched.append(tos >> 2 == 1)
    return matched


def test_a_signature_split_across_two_segments_is_found_in_the_second():
    frames = [_tcp(b"GET /se", 1000), _tcp(b"cret HTTP/1.1", 1007)]
    assert _run(Inspect(patterns="/secret", action="mark"), frames) == [False, False]
    assert _run(Inspect(patterns="/secret", action="mark", stream="yes"), frames) == [False, True]
    # Across batches (the service keeps the flows), and in IPv6.
    v6 = [_tcp(b"GET /se", 5, v6=True), _tcp(b"cret", 12, v6=True)]
    assert _run(Inspect(patterns="/secret", action="mark", stream="yes"), v6, [1]) == [False, True]


def test_only_the_continuing_segment_of_the_same_direction_continues():
    svc = lambda: Inspect(patterns="/secret", action="mark", stream="yes")  # noqa: E731
    head = _tcp(b"GET /se", 1000)
    cases = {
        "a gap": [head, _tcp(b"cret", 1008)],
        "a retransmission of the head": [head, _tcp(b"GET /se", 1000), _tcp(b"xcret", 1006)],
        "the other direction": [head, _tcp(b"cret", 1007, reverse=True)],
        "another flow": [head, _tcp(b"cret", 1007, flow=1)],
        "a new SYN": [head, _tcp(b"cret", 1006, flags="S")],
    }
    for what, frames in cases.items():
        assert not any(_run(svc(), frames)), what
    # A retransmission does not lose the stream's place: the next in-order segment continues.
    frames = [head, _tcp(b"GET /se", 1000), _tcp(b"cret", 1007)]
    assert _run(svc(), frames) == [False, False, True]
    # Sequence numbers wrap around 2**32.
    assert _run(svc(), [_tcp(b"GET /se", 2**32 - 3), _tcp(b"cret", 4)]) == [False, True]
    # UDP datagrams are never joined.
    udp = [
        bytes(Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / p)
        for p in (b"GET /se", b"cret")
    ]
    assert _run(svc(), udp) == [False, False]


_letters = st.binary(min_size=1, max_size=12).map(lambda b: bytes(b"ab/"[x % 3] for x in b))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_against_the_whole_stream_reference(data):
    patterns = data.draw(
        st.lists(
            st.binary(min_size=1, max_size=5).map(lambda b: bytes(b"ab/"[x % 3] for x in b)),
            min_size=1,
            max_size=4,
        ),
        label="patterns",
    )
    # Up to three flows, each direction a stream cut into segments, the segments of all
    # interleaved in order; then some of them repeated, dropped or swapped.
    queues = []
    for flow in range(data.draw(st.integers(1, 3))):
        for reverse in (False, True):
            seq = data.draw(st.integers(0, 2**32 - 1))
            segments = []
            for chunk in data.draw(st.lists(_letters, max_size=6)):
                segments.append(_tcp(chunk, seq, flow=flow, reverse=reverse))
                seq += len(chunk)
            queues.append(segments)
    frames = []
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    while any(queues):
        frames.append(rng.choice([q for q in queues if q]).pop(0))
    for _ in range(data.draw(st.integers(0, 3))):
        if len(frames) < 2:
            break
        i = rng.randrange(len(frames) - 1)
        kind = rng.choice(["repeat", "drop", "swap"])
        if kind == "repeat":
            frames.insert(i + 1, frames[i])
        elif kind == "drop":
            del frames[i]
        else:
            frames[i], frames[i + 1] = frames[i + 1], frames[i]
    if not frames:
        return
    cuts = data.draw(st.lists(st.integers(0, len(frames)), max_size=3), label="batch cuts")
    want = stream_matches([Ether(f) for f in frames], patterns)
    text = ",".join("hex:" + p.hex() for p in patterns)
    svc = Inspect(patterns=text, action="mark", stream="yes")
    assert _run(svc, frames, cuts) == [bool(w) for w in want]
    counted = Inspect(patterns=text, stream="yes")
    for lo, hi in itertools.pairwise([0, *sorted(set(cuts)), len(frames)]):
        if lo < hi:
            counted.process(PacketBatch.from_packets(frames[lo:hi]))
    counters = dict(counted.counters)
    for i in range(len(patterns)):
        assert counters.get(f"pattern.{i}", 0) == sum(i in w for w in want)


def test_the_flow_table_grows_and_starts_over_when_full():
    streams = TcpStreams(max_flows=64, initial=8)
    svc = Inspect(patterns="/secret", action="mark", stream="yes")
    svc.streams = streams
    heads = [_tcp(b"GET /se", 100, flow=f) for f in range(40)]
    tails = [_tcp(b"cret", 107, flow=f) for f in range(40)]
    assert not any(_run(svc, heads))
    assert len(streams.keys) >= 80 and streams.flows == 40
    assert all(_run(svc, tails))  # all 40 remembered through the growth
    more = [_tcp(b"x", 1, flow=f) for f in range(100, 140)]
    _run(svc, more)  # 80 flows > 64: the table starts over
    assert streams.resets == 1 and streams.flows == 0
    assert svc.counters["stream_table_resets"] == 1
    # Forgotten: the tail of flow 1 no longer continues anything.
    assert not any(_run(svc, [_tcp(b"GET /se", 100, flow=1), _tcp(b"cret", 107, flow=2)]))
    assert _run(svc, [_tcp(b"cret", 107, flow=1)]) == [True]
    assert np.count_nonzero(streams.keys) == streams.flows == 2


@pytest.mark.parametrize("stream", ["no", "yes"])
def test_stream_param_is_a_flag(stream):
    assert (Inspect(patterns="x", stream=stream).streams is None) == (stream == "no")
