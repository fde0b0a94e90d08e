"""Hostile and confused peers against a real dispatcher: strangers, liars, floods, stale runs."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from delivery_support import (
    RawPeer,
    free_port,
    pktx_cmd,
    result_frames,
    run_in_thread,
    start_worker,
    stop,
    wait_for,
)

from engine.capture.reader import read_capture
from engine.delivery import protocol as P
from engine.delivery.deliver import Delivery, DeliveryOptions

FAST_HB = {"heartbeat_ms": 100, "liveness": 20}


def _delivery(src, out, endpoint, **kw):
    opts = DeliveryOptions(
        **{
            "services": "slow",
            "params": ["ms=20"],
            "workers": 0,
            "bind": endpoint,
            "segment_packets": 200,
            **FAST_HB,
            **kw,
        }
    )
    return Delivery(str(src), str(out), opts)


@pytest.fixture(scope="module")
def other_pcap(tmp_path_factory):
    """Another customer's capture: 20,000 packets, other flows."""
    from engine.capture.generate import generate_capture

    path = tmp_path_factory.mktemp("other") / "other.pcap"
    generate_capture(path, packets=20_000, flows=50, seed=99, format="pcap", ts_resolution="ns")
    return path


def test_results_from_a_peer_that_never_said_ready_are_dropped(sample_pcap, other_pcap, tmp_path):
    """A stranger answers every segment id with another capture's packets (right count, any
    stream id) or with an empty result: none of it may reach the output."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(sample_pcap, out, endpoint)
    foreign = read_capture(other_pcap)[:200]
    empty = foreign.take(np.empty(0, np.int64))
    honest = start_worker(endpoint, "--name", "honest")
    stranger = RawPeer(endpoint)
    try:
        t, box = run_in_thread(delivery)
        wait_for(
            lambda: delivery.dispatcher is not None and delivery.dispatcher.workers,
            60,
            "the honest worker to join",
        )
        sent = 0
        while t.is_alive() and sent < 4000:
            for segment in range(100):
                stream = delivery.stream_id if segment % 4 < 2 else segment
                header = P.TaskHeader(stream, segment, 0, 1, 0, 200)
                batch = foreign if segment % 2 else empty
                stranger.send(*result_frames(header, batch, {"slow": {"x": 1}}))
                sent += 1
            stranger.recv(0.05)
        t.join(120)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
        usage = box["usage"]
        assert set(usage["workers"]) == {"honest"}
        assert sum(usage["rejected_messages"].values()) >= 1
        assert usage["dead_workers"] == []
    finally:
        stranger.close()
        stop(honest)


def test_late_results_of_a_killed_dispatcher_stay_out_of_the_next_stream(
    sample_pcap, other_pcap, tmp_path
):
    """Dispatcher A (customer 1) is killed while a worker processes its segment 0; dispatcher
    B (customer 2) starts on the same endpoint. The worker's late answer must not land in B's
    output, even while B's segment 0 is waiting for another worker."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    a_out, b_out = tmp_path / "a.pcap", tmp_path / "b.pcap"
    mark = tmp_path / "a-started"
    a = subprocess.Popen(
        pktx_cmd(
            "deliver",
            other_pcap,
            "-o",
            a_out,
            "--workers",
            0,
            "--bind",
            endpoint,
            "--service",
            "slow",
            "--param",
            "ms=2500",
            "--param",
            f"mark={mark}",
            "--segment-packets",
            10_000,
            "-q",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    old = start_worker(endpoint, "--name", "old", "--credit", 1)
    late = None
    try:
        wait_for(mark.exists, 60, "old to start on A's segment 0")
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        delivery = _delivery(
            sample_pcap, b_out, endpoint, params=["ms=2500"], segment_packets=10_000
        )
        t, box = run_in_thread(delivery)
        wait_for(lambda: delivery.dispatcher is not None, 60, "B to bind")
        late = start_worker(endpoint, "--name", "new", "--credit", 1)
        t.join(120)
        assert "error" not in box, box.get("error")
        assert b_out.read_bytes() == sample_pcap.read_bytes()
        assert not a_out.exists()
    finally:
        stop(a)
        stop(old)
        if late is not None:
            stop(late)


def test_a_wrong_stream_result_from_a_joined_worker_does_not_lose_the_task(sample_pcap, tmp_path):
    """A joined worker answers its task with another stream's id: a strike, and the task is
    still its (answered properly next, or resent when it stalls); the stream completes."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(
        sample_pcap,
        out,
        endpoint,
        services="identity",
        params=[],
        segment_packets=10_000,
        task_timeout_s=60,
    )
    peer = RawPeer(endpoint)
    try:
        t, box = run_in_thread(delivery)
        peer.ready("confused", credit=1)
        peer.recv_command(P.WELCOME)
        from engine.capture.batch import PacketBatch

        for _ in range(2):  # two segments; each first answered wrongly, then rightly
            frames = peer.recv_command(P.TASK, 60)
            hdr = P.TaskHeader.unpack(frames[2])
            batch = PacketBatch.from_frames(frames[4:])
            wrong = P.TaskHeader(
                hdr.stream ^ 1, hdr.segment, hdr.part, hdr.parts, hdr.attempt, hdr.count
            )
            peer.send(*result_frames(wrong, batch))
            peer.send(*result_frames(hdr, batch, {"identity": {"packets": len(batch)}}))
        t.join(60)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
        usage = box["usage"]
        assert usage["garbage_results"] == 2
        assert usage["services"]["identity"]["packets"] == 20_000
    finally:
        peer.close()


def test_a_flooding_stranger_that_never_reads_cannot_freeze_the_dispatcher(sample_pcap, tmp_path):
    """400,000 heartbeats from a peer that never reads: each earns a DISCONNECT the peer never
    takes. The dispatcher must keep time: --wait-workers ends the run."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(sample_pcap, out, endpoint, wait_workers_s=6)
    flood = None
    try:
        t, box = run_in_thread(delivery)
        wait_for(lambda: delivery.dispatcher is not None, 60, "the dispatcher to bind")
        # Another process, so the flood does not share this one's interpreter lock.
        flood = subprocess.Popen([sys.executable, "-c", _FLOOD, endpoint], stdin=subprocess.DEVNULL)
        t.join(60)
        assert not t.is_alive(), "the dispatcher froze"
        assert "0 of 1 workers joined" in str(box.get("error"))
        assert not out.exists()
    finally:
        if flood is not None:
            stop(flood)


_FLOOD = """
import sys, time, zmq
s = zmq.Context().socket(zmq.DEALER)
s.rcvhwm = 1
s.sndhwm = 0
s.rcvbuf = 4096
s.connect(sys.argv[1])
for _ in range(400_000):
    s.send_multipart([b"PKTX/1", b"\\x06"])
time.sleep(120)  # never reads
"""


def test_an_oversized_frame_drops_the_connection(sample_pcap, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(sample_pcap, out, endpoint, wait_workers_s=120)
    big = RawPeer(endpoint)
    monitor = big.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    honest = None
    try:
        t, box = run_in_thread(delivery)
        wait_for(lambda: delivery.dispatcher is not None, 60, "the dispatcher to bind")
        big.send(P.HEARTBEAT)
        big.send(P.RESULT, b"\0" * ((64 << 20) + 1))  # P.MAX_FRAME_BYTES + 1
        assert monitor.poll(60_000), "the dispatcher kept reading an oversized frame"
        from zmq.utils.monitor import recv_monitor_message

        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        # Dropped by the frame limit, not by a dispatcher that had given up and closed.
        assert t.is_alive()
        honest = start_worker(endpoint, "--name", "honest")
        t.join(120)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
    finally:
        big.sock.disable_monitor()
        monitor.close(0)
        big.close()
        if honest is not None:
            stop(honest)


def test_counters_are_validated_before_they_reach_the_usage_record(sample_pcap, tmp_path):
    """A joined worker answers its tasks rightly but reports counters a bill must never hold:
    text, 1e300, a negative, a bool, more packets than the task had, a service not in the
    chain. Only the true ones are metered, and later good counts still add up."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(
        sample_pcap, out, endpoint, services="identity", params=[], segment_packets=5000
    )
    peer = RawPeer(endpoint)
    bad = {
        "s": "many",
        "big": 1e300,
        "neg": -1,
        "flag": True,
        "frac": 1.5,
        "over": 10_001,
        "bad name!": 1,
    }
    try:
        t, box = run_in_thread(delivery)
        peer.ready("counter", credit=1)
        from engine.capture.batch import PacketBatch

        for k in range(4):
            frames = peer.recv_command(P.TASK, 60)
            hdr = P.TaskHeader.unpack(frames[2])
            batch = PacketBatch.from_frames(frames[4:])
            counters = {"identity": {"packets": len(batch)}}
            if k == 0:
                counters["identity"].update(bad)
                counters["encrypt"] = {"packets_encrypted": 5}
            peer.send(*result_frames(hdr, batch, counters))
        t.join(60)
        assert "error" not in box, box.get("error")
        usage = box["usage"]
        assert usage["services"] == {"identity": {"packets": 20_000}}
        assert usage["counters_dropped"] == len(bad) + 1
        assert out.read_bytes() == sample_pcap.read_bytes()
    finally:
        peer.close()


def test_a_services_time_is_metered_only_when_it_could_be_true(sample_pcap, tmp_path):
    """A worker reports each service's time on a task beside its counters (``time_ns``): kept
    apart from the counters a bill holds, and dropped when it is not an int of nanoseconds no
    longer than the task was out."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(
        sample_pcap, out, endpoint, services="identity", params=[], segment_packets=5000
    )
    peer = RawPeer(endpoint)
    try:
        t, box = run_in_thread(delivery)
        peer.ready("timer", credit=1)
        from engine.capture.batch import PacketBatch

        for spent in (10**15, "1000", 1000, 2000):  # a day and more, text, then true times
            frames = peer.recv_command(P.TASK, 60)
            hdr = P.TaskHeader.unpack(frames[2])
            batch = PacketBatch.from_frames(frames[4:])
            counters = {"identity": {"packets": len(batch), P.SERVICE_TIME_COUNTER: spent}}
            peer.send(*result_frames(hdr, batch, counters))
        t.join(60)
        assert "error" not in box, box.get("error")
        usage = box["usage"]
        assert usage["service_ns"] == {"identity": 3000}
        assert usage["services"] == {"identity": {"packets": 20_000}}
        assert usage["counters_dropped"] == 2
        assert out.read_bytes() == sample_pcap.read_bytes()
    finally:
        peer.close()


def test_peers_that_join_and_leave_are_counted_not_listed(sample_pcap, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(sample_pcap, out, endpoint)
    t, box = run_in_thread(delivery)
    wait_for(lambda: delivery.dispatcher is not None, 60, "the dispatcher to bind")
    passers = [RawPeer(endpoint) for _ in range(5)]
    for i, p in enumerate(passers):
        p.ready(f"passer{i}", services=["nothing"])
    wait_for(lambda: len(delivery.dispatcher.workers) == 5, 30, "the passers to join")
    for p in passers:
        p.close()
    wait_for(lambda: sum(delivery.meter.lost_workers.values()) == 5, 30, "the passers to be missed")
    honest = start_worker(endpoint, "--name", "honest")
    try:
        t.join(120)
        assert "error" not in box, box.get("error")
        usage = box["usage"]
        assert usage["dead_workers"] == []
        assert sum(usage["lost_workers"].values()) == 5
        assert out.read_bytes() == sample_pcap.read_bytes()
    finally:
        stop(honest)


def test_garbage_from_strangers_is_counted_and_logged_at_a_bounded_rate(
    sample_pcap, tmp_path, caplog
):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    delivery = _delivery(sample_pcap, out, endpoint, wait_workers_s=120)
    peer = RawPeer(endpoint)
    honest = None
    try:
        with caplog.at_level(logging.WARNING, logger="engine.delivery.dispatcher"):
            t, box = run_in_thread(delivery)
            wait_for(lambda: delivery.dispatcher is not None, 60, "the dispatcher to bind")
            for i in range(3000):
                peer.sock.send_multipart([b"GARBAGE", b"%d" % i])
            for _ in range(3000):
                peer.send(P.FAIL, b"x", b"y")
            rejected = delivery.meter.rejected
            wait_for(
                lambda: (
                    rejected["not a PKTX/1 message"] == 3000
                    and rejected["FAIL from a peer that is not a worker of this stream"] == 3000
                ),
                60,
                "the garbage to be counted",
            )
            honest = start_worker(endpoint, "--name", "honest")
            t.join(120)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
        lines = [r for r in caplog.records if r.name == "engine.delivery.dispatcher"]
        assert len(lines) <= 20, f"{len(lines)} log lines for 6,000 garbage messages"
    finally:
        peer.close()
        if honest is not None:
            stop(honest)


def test_a_worker_never_sends_an_old_streams_result_to_a_new_dispatcher(sample_pcap, tmp_path):
    """A hand-made dispatcher A gives a real worker a task and vanishes while the worker is
    on it; B binds the same endpoint. The worker must join B afresh and never send B the
    result of A's task."""
    from engine.capture.reader import read_capture

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started, finished = tmp_path / "started", tmp_path / "finished"
    ctx = zmq.Context.instance()
    a = ctx.socket(zmq.ROUTER)
    a.linger = 0
    a.bind(endpoint)
    worker = start_worker(endpoint, "--name", "w", "--credit", 1)
    b = None
    try:
        assert a.poll(60_000), "no READY"
        ident, _, cmd, _ = a.recv_multipart()
        assert cmd == P.READY
        a.send_multipart(
            [
                ident,
                P.PROTOCOL,
                P.WELCOME,
                P.dumps({"heartbeat_ms": 500, "liveness": 6, "stream": "a"}),
            ]
        )
        batch = read_capture(sample_pcap)[:100]
        header = P.TaskHeader(P.new_stream_id(), 0, 0, 1, 0, len(batch))
        chain = [
            {"name": "slow", "params": {"ms": "1500", "mark": str(started)}},
            {"name": "slow", "params": {"ms": "1", "mark": str(finished)}},
        ]
        a.send_multipart(
            [ident, P.PROTOCOL, P.TASK, header.pack(), P.dumps(chain), *batch.to_frames()]
        )
        wait_for(started.exists, 60, "the worker to start on A's task")
        a.close(0)
        b = ctx.socket(zmq.ROUTER)
        b.linger = 0
        wait_for(lambda: _try_bind(b, endpoint), 30, "A's port to be free")  # closes async
        seen = []
        # Listen until the worker has finished A's task and said READY to B, then a while
        # longer: a stale RESULT would be on its way by then.
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            if b.poll(100):
                frames = b.recv_multipart()
                seen.append(frames[2])
            if deadline is None and finished.exists() and P.READY in seen:
                deadline = time.monotonic() + 1.0
        assert P.RESULT not in seen
    finally:
        if b is not None:
            b.close(0)
        stop(worker)


def _try_bind(sock, endpoint: str) -> bool:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError:
        return False
    return True
