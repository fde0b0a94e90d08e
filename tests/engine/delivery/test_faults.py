"""Faults: workers killed, stalled, lying or failing; dispatchers restarting. Real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

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

from engine.capture.batch import PacketBatch
from engine.delivery import protocol as P
from engine.delivery.deliver import Delivery, DeliveryOptions, deliver
from engine.delivery.dispatcher import DeliveryError

# Quick to notice a stalled worker, yet patient with one a loaded machine starves for a while.
FAST_HB = {"heartbeat_ms": 100, "liveness": 20}


def _external_delivery(src, out, *, services="slow", params=(), **kw):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    opts = DeliveryOptions(
        services=services,
        params=list(params),
        workers=0,
        bind=endpoint,
        segment_packets=200,
        **FAST_HB,
        **kw,
    )
    return Delivery(str(src), str(out), opts), endpoint


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_worker_dies_mid_stream_and_nothing_is_lost(sample_pcap, tmp_path, how):
    out = tmp_path / "o.pcap"
    # Both workers must have joined before the stream starts, or on a loaded machine w1 can
    # take every task while w0 is still starting, and a stopped w0 held nothing to lose.
    delivery, endpoint = _external_delivery(sample_pcap, out, params=["ms=15"], min_workers=2)
    workers = [start_worker(endpoint, "--name", f"w{i}") for i in range(2)]
    try:
        t, box = run_in_thread(delivery)
        wait_for(lambda: delivery.meter.packets_out >= 2000, 60, "first output")
        d = delivery.dispatcher
        wait_for(
            lambda: any(w.name == "w0" and w.in_flight for w in list(d.workers.values())),
            60,
            "w0 holding a task",
        )
        victim = workers[0]
        os.kill(victim.pid, getattr(signal, how))
        t.join(120)
        assert not t.is_alive()
        assert "error" not in box, box.get("error")
        usage = box["usage"]
        assert out.read_bytes() == sample_pcap.read_bytes()
        assert len(usage["dead_workers"]) == 1
        assert usage["dead_workers"][0]["worker"] == "w0"
        assert usage["packets_out"] == 20_000
    finally:
        if how == "SIGSTOP":
            os.kill(workers[0].pid, signal.SIGCONT)
        for w in workers:
            stop(w)


class LyingWorker(threading.Thread):
    """A worker written from docs/protocol.md that answers every task wrongly, in turn:
    a segment it was not given, a batch of the wrong size, then a FAIL."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.stopping = threading.Event()
        self.lies = 0

    def run(self) -> None:
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(self.endpoint)
        s.send_multipart(
            [
                P.PROTOCOL,
                P.READY,
                P.dumps({"name": "liar", "credit": 2, "services": ["slow", "identity"]}),
            ]
        )
        last = time.monotonic()
        while not self.stopping.is_set():
            if time.monotonic() - last > 0.05:
                s.send_multipart([P.PROTOCOL, P.HEARTBEAT])
                last = time.monotonic()
            if not s.poll(20):
                continue
            frames = s.recv_multipart()
            if frames[1] != P.TASK:
                continue
            hdr = P.TaskHeader.unpack(frames[2])
            kind = self.lies % 3
            self.lies += 1
            if kind == 0:
                wrong = P.TaskHeader(
                    hdr.stream, hdr.segment + 1000, hdr.part, hdr.parts, hdr.attempt, hdr.count
                )
                s.send_multipart([P.PROTOCOL, P.RESULT, wrong.pack(), b"{}", *frames[4:]])
            elif kind == 1:
                batch = PacketBatch.from_frames(frames[4:])
                short = batch[: max(0, len(batch) - 1)]
                s.send_multipart(
                    [
                        P.PROTOCOL,
                        P.RESULT,
                        hdr.pack(),
                        b"{}",
                        *[bytes(f) for f in short.to_frames()],
                    ]
                )
            else:
                s.send_multipart(
                    [
                        P.PROTOCOL,
                        P.FAIL,
                        hdr.pack(),
                        P.dumps({"service": "slow", "error": "made up"}),
                    ]
                )
        s.close(0)


def test_garbage_answers_are_retried_elsewhere(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    delivery, endpoint = _external_delivery(sample_pcap, out, params=["ms=5"])
    liar = LyingWorker(endpoint)
    liar.start()
    good = None
    try:
        t, box = run_in_thread(delivery)
        wait_for(lambda: liar.lies >= 1, 30, "the liar to get work")
        good = start_worker(endpoint, "--name", "honest")
        t.join(120)
        assert "error" not in box, box.get("error")
        usage = box["usage"]
        assert out.read_bytes() == sample_pcap.read_bytes()
        assert usage["garbage_results"] >= 1
        assert usage["retries"] >= 1
        assert set(usage["workers"]) == {"honest"}
    finally:
        liar.stopping.set()
        if good is not None:
            stop(good)


def test_a_failing_service_fails_the_stream_naming_segment_and_service(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    with pytest.raises(DeliveryError) as err:
        deliver(str(sample_pcap), str(out), services="boom", workers=2, segment_packets=500)
    msg = str(err.value)
    assert re.search(r"segment \d+ \(part 1 of 1\) failed 3 times", msg), msg
    assert "'boom'" in msg and "always fails" in msg
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_flaky_service_is_retried(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    usage = deliver(str(sample_pcap), str(out), services="flaky", workers=2, segment_packets=1000)
    assert out.read_bytes() == sample_pcap.read_bytes()
    assert usage["retries"] >= 1


def test_worker_serves_a_restarted_dispatcher(sample_pcap, tmp_path):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    worker = start_worker(endpoint, "--name", "steady")
    try:
        for run in range(2):
            out = tmp_path / f"o{run}.pcap"
            opts = DeliveryOptions(workers=0, bind=endpoint, **FAST_HB)
            usage = Delivery(str(sample_pcap), str(out), opts).run()
            assert out.read_bytes() == sample_pcap.read_bytes()
            assert set(usage["workers"]) == {"steady"}
        assert worker.poll() is None, "the worker left instead of waiting for the next"
    finally:
        stop(worker)


def test_worker_drains_on_sigterm(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    delivery, endpoint = _external_delivery(sample_pcap, out, params=["ms=10"])
    workers = [start_worker(endpoint, "--name", f"w{i}") for i in range(2)]
    try:
        t, box = run_in_thread(delivery)
        # Both have joined and hold work: the one told to stop must finish what it holds.
        wait_for(
            lambda: (
                delivery.meter.packets_out >= 1000 and {"w0", "w1"} <= set(delivery.meter.workers)
            ),
            60,
            "both workers at work",
        )
        workers[0].terminate()
        assert workers[0].wait(30) == 0
        t.join(120)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
        # A clean departure is not a death: nothing had to be resent.
        assert box["usage"]["dead_workers"] == []
    finally:
        for w in workers:
            stop(w)


def _poison_ts(sample_pcap, index: int) -> int:
    from engine.capture.reader import read_capture

    return int(read_capture(sample_pcap).ts_ns[index])


def _no_output_left(folder) -> None:
    left = sorted(p.name for p in folder.iterdir())
    assert left == [], f"left behind: {left}"


def test_a_segment_that_kills_its_workers_fails_the_stream_naming_it(sample_pcap, tmp_path):
    """Packet 1234 (segment 2 of 500-packet segments) kills every worker it reaches: after
    it has killed two, the stream fails with that segment's name and no output."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    opts = DeliveryOptions(
        services="poison",
        params=[f"ts={_poison_ts(sample_pcap, 1234)}"],
        workers=3,
        segment_packets=500,
        max_attempts=2,
        credit=1,
        **FAST_HB,
    )
    t, box = run_in_thread(Delivery(str(sample_pcap), str(out_dir / "o.pcap"), opts))
    t.join(120)
    assert not t.is_alive(), "the stream hangs"
    msg = str(box.get("error"))
    assert isinstance(box.get("error"), DeliveryError), msg
    assert "segment 2 (part 1 of 1) failed 2 times" in msg, msg
    assert "while working on it" in msg, msg
    _no_output_left(out_dir)


def test_a_poison_segment_can_be_skipped_and_is_counted(sample_pcap, tmp_path):
    from engine.capture.reader import read_capture

    out = tmp_path / "o.pcap"
    opts = DeliveryOptions(
        services="poison",
        params=[f"ts={_poison_ts(sample_pcap, 1234)}"],
        workers=3,
        segment_packets=500,
        max_attempts=2,
        credit=1,
        on_poison="skip",
        **FAST_HB,
    )
    t, box = run_in_thread(Delivery(str(sample_pcap), str(out), opts))
    t.join(120)
    assert "error" not in box, box.get("error")
    usage = box["usage"]
    a = read_capture(sample_pcap)
    keep = np.r_[0:1000, 1500 : len(a)]
    assert read_capture(out).same_packets(a.take(keep))
    assert usage["packets_skipped"] == 500 and usage["packets_out"] == 19_500
    assert [p["segment"] for p in usage["poison_segments"]] == [2]


def test_all_local_workers_dying_fails_the_stream(sample_pcap, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    opts = DeliveryOptions(
        services="poison",
        params=[f"ts={_poison_ts(sample_pcap, 1234)}"],
        workers=2,
        segment_packets=500,
        max_attempts=3,
        credit=1,
        **FAST_HB,
    )
    t, box = run_in_thread(Delivery(str(sample_pcap), str(out_dir / "o.pcap"), opts))
    t.join(120)
    assert not t.is_alive(), "the stream hangs with no worker left"
    msg = str(box.get("error"))
    assert "segment 2 (part 1 of 1) cannot be delivered" in msg, msg
    assert "all 2 local workers have exited" in msg, msg
    _no_output_left(out_dir)


class GarbageWorker(threading.Thread):
    """Joins with credit 2 and answers every task with one packet too few, until told to go."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.peer = RawPeer(endpoint)
        self.answers = 0
        self.disconnected = threading.Event()

    def run(self) -> None:
        self.peer.ready("garbage", credit=2)
        last = 0.0
        while not self.disconnected.is_set():
            if time.monotonic() - last > 0.05:
                self.peer.send(P.HEARTBEAT)
                last = time.monotonic()
            frames = self.peer.recv(0.02)
            if frames is None:
                continue
            if frames[1] == P.DISCONNECT:
                self.disconnected.set()
            elif frames[1] == P.TASK:
                hdr = P.TaskHeader.unpack(frames[2])
                batch = PacketBatch.from_frames(frames[4:])
                self.peer.send(*result_frames(hdr, batch[: len(batch) - 1]))
                self.answers += 1


def test_a_worker_sending_garbage_is_disconnected_and_the_stream_completes(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    delivery, endpoint = _external_delivery(sample_pcap, out, params=["ms=5"], min_workers=2)
    liar = GarbageWorker(endpoint)
    liar.start()
    honest = start_worker(endpoint, "--name", "honest", "--credit", 1)
    try:
        t, box = run_in_thread(delivery)
        t.join(120)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
        usage = box["usage"]
        assert liar.disconnected.is_set()
        # Strike 3 disconnects it; an answer already on its way then comes from a stranger.
        assert usage["garbage_results"] == 3 <= liar.answers
        assert usage["lost_workers"] == {"misbehaving": 1}
        assert set(usage["workers"]) == {"honest"}
    finally:
        liar.disconnected.set()
        liar.join(10)
        liar.peer.close()
        stop(honest)


def test_a_busy_worker_keeps_heartbeating(sample_pcap, tmp_path):
    """One segment that takes 3 s, with peers declared dead after 1.5 s of silence: the worker
    must heartbeat while it works, so nothing is resent."""
    out = tmp_path / "o.pcap"
    usage = deliver(
        str(sample_pcap),
        str(out),
        services="slow",
        params=["ms=3000"],
        workers=1,
        segment_packets=20_000,
        heartbeat_ms=100,
        liveness=15,
    )
    assert out.read_bytes() == sample_pcap.read_bytes()
    assert usage["dead_workers"] == [] and usage["lost_workers"] == {}
    assert usage["retries"] == 0


def test_a_worker_that_heartbeats_but_never_answers_is_timed_out(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    delivery, endpoint = _external_delivery(
        sample_pcap, out, params=["ms=5"], min_workers=2, task_timeout_s=3.0
    )
    stuck = RawPeer(endpoint)
    stop_beating = threading.Event()

    def beat():
        stuck.ready("stuck", credit=1)
        while not stop_beating.is_set():
            stuck.send(P.HEARTBEAT)
            stuck.recv(0.05)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    honest = start_worker(endpoint, "--name", "honest")
    try:
        t, box = run_in_thread(delivery)
        t.join(120)
        assert "error" not in box, box.get("error")
        assert out.read_bytes() == sample_pcap.read_bytes()
        dead = box["usage"]["dead_workers"]
        assert [d["worker"] for d in dead] == ["stuck"]
        assert "task timeout" in dead[0]["reason"]
    finally:
        stop_beating.set()
        beater.join(10)
        stuck.close()
        stop(honest)


def test_sigterm_stops_a_delivery_cleanly(sample_pcap, tmp_path):
    out = tmp_path / "o.pcap"
    proc = subprocess.Popen(
        pktx_cmd(
            "deliver",
            sample_pcap,
            "-o",
            out,
            "--workers",
            1,
            "--service",
            "slow",
            "--param",
            "ms=200",
            "--segment-packets",
            500,
            "-q",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    children: list[int] = []
    try:
        wait_for(lambda: list(tmp_path.glob(".o.pcap.*.part")), 60, "the output to be begun")
        children = _children(proc.pid)
        assert children, "no local worker process"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert b"terminated" in err and b"Traceback" not in err, err.decode()
    assert list(tmp_path.iterdir()) == []
    for pid in children:
        wait_for(
            lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10, f"local worker {pid} to be gone"
        )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_segments_that_shared_a_worker_with_a_poison_one_are_not_blamed(sample_pcap, tmp_path):
    """Workers holding four tasks each: the one that dies on segment 2 also held innocent
    segments. Only segment 2 may be skipped; every other packet comes out, in order."""
    from engine.capture.reader import read_capture

    out = tmp_path / "o.pcap"
    opts = DeliveryOptions(
        services="poison",
        params=[f"ts={_poison_ts(sample_pcap, 1234)}"],
        workers=4,
        segment_packets=500,
        max_attempts=2,
        credit=4,
        on_poison="skip",
        **FAST_HB,
    )
    t, box = run_in_thread(Delivery(str(sample_pcap), str(out), opts))
    t.join(120)
    assert "error" not in box, box.get("error")
    a = read_capture(sample_pcap)
    assert read_capture(out).same_packets(a.take(np.r_[0:1000, 1500 : len(a)]))
    assert [p["segment"] for p in box["usage"]["poison_segments"]] == [2]


def test_a_goodbye_right_before_the_dispatcher_closes_still_reaches_the_worker():
    """The end of a stream: DISCONNECT, then the socket closes at once. The worker sees the
    connection drop too, but must read the goodbye first and leave (--exit-on-disconnect)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    for _ in range(3):
        d = zmq.Context.instance().socket(zmq.ROUTER)
        d.linger = 1000
        d.bind(endpoint)
        worker = start_worker(endpoint, "--name", "w", "--exit-on-disconnect")
        try:
            assert d.poll(60_000), "no READY"
            ident = d.recv_multipart()[0]
            d.send_multipart(
                [
                    ident,
                    P.PROTOCOL,
                    P.WELCOME,
                    P.dumps({"heartbeat_ms": 500, "liveness": 6, "stream": "x"}),
                ]
            )
            d.send_multipart(
                [ident, P.PROTOCOL, P.DISCONNECT, P.dumps({"reason": "stream complete"})]
            )
            d.close()
            assert worker.wait(30) == 0
        finally:
            d.close(0)
            stop(worker)
