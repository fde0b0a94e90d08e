"""Resumable streams (PKTX-STREAM/2): a sender killed with SIGKILL and started again goes on
where its receiver stands; the receiver refuses a stream it does not know."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

import dpkt
import numpy as np
import pytest
from delivery_support import free_port, pktx_cmd, stop

from engine.capture.batch import PacketBatch
from engine.capture.reader import CaptureReader
from engine.delivery.deliver import Delivery, DeliveryOptions
from engine.delivery.sinks import DownstreamSink
from engine.delivery.sources import UpstreamSource
from engine.delivery.streams import Mark
from engine.errors import EngineError


def dpkt_packets(path) -> list[bytes]:
    """The capture's packets as an independent reader sees them."""
    with open(path, "rb") as f:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]


class Receiver:
    """An UpstreamSource iterated on a thread: the packets it took, in order."""

    def __init__(self, **kw) -> None:
        self.source = UpstreamSource("zmq://127.0.0.1:0", **kw)
        self.url = f"zmq://127.0.0.1:{self.source.port}"
        self.packets: list[bytes] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in self.source:
                self.packets += [bytes(batch.packet(i)) for i in range(len(batch))]
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def stop(self) -> None:
        self.source.stop()
        self.thread.join(10)


@pytest.fixture
def rx():
    receiver = Receiver(idle_timeout=30)
    yield receiver
    receiver.stop()


def batch_of(*payloads: bytes) -> PacketBatch:
    return PacketBatch.from_packets(list(payloads))


def test_the_file_source_starts_at_any_packet_without_reading_those_before(tmp_path):
    from engine.capture.generate import generate_capture

    for fmt in ("pcap", "pcapng"):
        path = tmp_path / f"c.{fmt}"
        generate_capture(path, packets=3000, flows=30, seed=5, format=fmt)
        every = [bytes(b.packet(i)) for b in CaptureReader(path) for i in range(len(b))]
        for start in (0, 1, 699, 700, 2999, 3000):
            reader = CaptureReader(path, batch_packets=700)
            batches = list(reader.iter_from(start))
            assert [bytes(b.packet(i)) for b in batches for i in range(len(b))] == every[start:], (
                fmt,
                start,
            )
            assert [b.first_seq for b in batches][:1] == ([start] if start < 3000 else [])
            assert reader.walked == 3000


def test_a_stream_resumed_by_a_new_sender_continues_its_numbering_and_mark(rx):
    first = DownstreamSink(rx.url, stream_id="s-1", ack_timeout_s=10)
    assert first.resumed == Mark() and first.next_number == 0
    first.write(batch_of(b"a", b"b"), Mark(2, 2, 2))
    first.write(batch_of(b"c"), Mark(4, 3, 3))  # an input packet dropped by a service
    first.flush()
    assert first.mark == Mark(4, 3, 3, 3, 3)
    first.sock.close(0)  # as if killed: no end, no abort
    again = DownstreamSink(rx.url, stream_id="s-1", ack_timeout_s=10)
    assert again.next_number == 2 and again.resumed == Mark(4, 3, 3, 3, 3)
    again.write(batch_of(b"e"), Mark(5, 4, 4))
    again.close({})
    rx.done.wait(10)
    assert rx.error is None, rx.error
    assert rx.packets == [b"a", b"b", b"c", b"e"]
    assert rx.source.resumes == 1 and rx.source.mark == Mark(5, 4, 4, 4, 4)


def test_a_stream_id_the_receiver_does_not_know_is_refused_clearly(rx):
    mine = DownstreamSink(rx.url, stream_id="job-7", ack_timeout_s=10)
    mine.write(batch_of(b"x"), Mark(1, 1, 1))
    mine.flush()
    with pytest.raises(
        EngineError,
        match=r"refused stream 'job-8': this node is receiving "
        r"stream 'job-7' \(1 messages taken\); stream "
        r"'job-8' is not known here",
    ):
        DownstreamSink(rx.url, stream_id="job-8", ack_timeout_s=10)
    # The receiver goes on with its own stream.
    mine.write(batch_of(b"y"), Mark(2, 2, 2))
    mine.close({})
    rx.done.wait(10)
    assert rx.error is None and rx.packets == [b"x", b"y"]


def test_a_sender_replaced_by_a_resumed_one_is_refused(rx):
    """Two senders of one stream never interleave: the latest HELLO wins, the other fails."""
    old = DownstreamSink(rx.url, stream_id="s", ack_timeout_s=10)
    old.write(batch_of(b"1"), Mark(1, 1, 1))
    old.flush()
    new = DownstreamSink(rx.url, stream_id="s", ack_timeout_s=10)
    old.write(batch_of(b"stale"), Mark(2, 2, 2))
    with pytest.raises(EngineError, match="has another sender now"):
        old.flush()
    new.write(batch_of(b"2"), Mark(2, 2, 2))
    new.close({})
    rx.done.wait(10)
    assert rx.packets == [b"1", b"2"]


def test_a_sender_without_an_id_still_works_and_an_id_cannot_join_it(rx):
    plain = DownstreamSink(rx.url, ack_timeout_s=10)
    plain.write(batch_of(b"p"))
    plain.flush()
    with pytest.raises(EngineError, match="receiving a stream without an id"):
        DownstreamSink(rx.url, stream_id="late", ack_timeout_s=10)
    plain.close({})
    rx.done.wait(10)
    assert rx.error is None and rx.packets == [b"p"]


def test_an_old_receiver_that_does_not_answer_hello_fails_the_sender_clearly():
    import zmq

    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with pytest.raises(EngineError, match=r"no answer to opening stream .x. for 0\.5 s"):
            DownstreamSink(f"zmq://127.0.0.1:{port}", stream_id="x", ack_timeout_s=0.5)
    finally:
        silent.close(0)


def test_a_udp_stream_resumes_from_a_usage_record(sample_pcap, tmp_path):
    """No receiver answers over UDP: the stream starts where the record says it stood, and
    its counters go on from the record's."""
    every = dpkt_packets(sample_pcap)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    record = tmp_path / "before.json"
    before = Mark(5000, 5000, sum(map(len, every[:5000])), 4990, 123)
    record.write_text(json.dumps({"stream_position": before.as_dict()}))
    got: list[bytes] = []

    def receive() -> None:
        with contextlib.suppress(TimeoutError):
            while len(got) < len(every) - 5000:
                got.append(rx.recv(65536))

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    usage = Delivery(
        str(sample_pcap),
        f"udp://127.0.0.1:{rx.getsockname()[1]}",
        DeliveryOptions(workers=1, resume_from=str(record), max_rate_bps=20_000_000),
    ).run()
    reader.join(30)
    rx.close()
    assert got == every[5000:]
    assert usage["packets_out"] == len(every) - 5000
    assert usage["resumed_at"] == before.as_dict()
    assert usage["stream_position"] == {
        "position": len(every),
        "packets_in": len(every),
        "bytes_in": sum(map(len, every)),
        "packets_out": 4990 + len(every) - 5000,
        "bytes_out": 123 + sum(map(len, every[5000:])),
    }


@pytest.mark.parametrize("share", [None, "1/2"])
def test_a_file_stream_killed_again_and_again_reaches_its_receiver_exactly_once(
    sample_pcap, tmp_path, share
):
    """``pktx deliver FILE -o zmq://... --stream-id`` SIGKILLed (with its workers) mid-stream
    several times and started again: the receiving ``pktx deliver`` writes every packet of
    the source (of its share) once, in order, and the last run's record counts the whole
    stream once. With a share, the stream's positions are places in the source, not in the
    share."""
    source = dpkt_packets(sample_pcap)
    mine = list(range(len(source)))
    if share:
        from engine.capture.reader import read_capture
        from engine.packet.flowhash import share_of_packets

        index, of = map(int, share.split("/"))
        mine = np.flatnonzero(share_of_packets(read_capture(sample_pcap), of) == index).tolist()
    every = [source[i] for i in mine]
    total_bytes = sum(map(len, every))
    port = free_port()
    out = tmp_path / "received.pcap"
    receiver_log = tmp_path / "receiver.log"
    with open(receiver_log, "wb") as log:
        receiver = subprocess.Popen(
            pktx_cmd(
                "deliver",
                f"zmq://127.0.0.1:{port}",
                "-o",
                out,
                "--workers",
                1,
                "--idle-timeout",
                60,
                "--format",
                "pcap",
                "--ts-resolution",
                "ns",
            ),
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
    usage_path = tmp_path / "usage.json"
    # About 12 s of shaping for the whole file: every run but the last is cut short.
    rate = total_bytes * 8 // 12
    sender = pktx_cmd(
        "deliver",
        sample_pcap,
        "-o",
        f"zmq://127.0.0.1:{port}",
        "--stream-id",
        "job-1",
        "--workers",
        1,
        "--max-rate",
        rate,
        "--segment-packets",
        500,
        "--usage-json",
        usage_path,
        "--usage-every",
        0.2,
        "-q",
        *(["--share", share] if share else []),
    )
    rng = random.Random(11)
    positions = []
    try:
        kills = 0
        while True:
            proc = subprocess.Popen(
                sender, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
            )
            if kills < 4:
                time.sleep(rng.uniform(1.5, 3.0))
                assert proc.poll() is None, "the stream ended before it was cut 4 times"
                os.killpg(proc.pid, signal.SIGKILL)  # the sender and its workers
                kills += 1
                proc.wait(30)
                if usage_path.exists():
                    positions.append(json.loads(usage_path.read_text())["stream_position"])
                continue
            assert proc.wait(120) == 0, (
                proc.stderr.read().decode(),
                positions,
                receiver_log.read_text(),
            )
            break
        assert receiver.wait(60) == 0, receiver_log.read_text()
    finally:
        stop(receiver)
    assert dpkt_packets(out) == every
    usage = json.loads(usage_path.read_text())
    assert "partial" not in usage
    # The runs were cut mid-stream and resumed there.
    assert 0 < usage["resumed_at"]["position"] < len(source), positions
    assert usage["stream_position"] == {
        "position": mine[-1] + 1,
        "packets_in": len(every),
        "bytes_in": total_bytes,
        "packets_out": len(every),
        "bytes_out": total_bytes,
    }
    assert usage["packets_out"] == len(every) - usage["resumed_at"]["packets_out"]


def test_a_stopped_sender_leaves_its_stream_open_for_the_next_run(sample_pcap, tmp_path, rx):
    """SIGTERM (a daemon stopping a job to hand it over) is not a failure: the receiver is
    not told to give up, and the next run resumes the stream."""
    every = dpkt_packets(sample_pcap)
    rate = sum(map(len, every)) * 8 // 4
    usage_path = tmp_path / "usage.json"
    proc = subprocess.Popen(
        pktx_cmd(
            "deliver",
            sample_pcap,
            "-o",
            rx.url,
            "--stream-id",
            "s",
            "--workers",
            1,
            "--max-rate",
            rate,
            "--usage-json",
            usage_path,
            "--usage-every",
            0.1,
            "-q",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(rx.packets) < 1000:
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) != 0
    time.sleep(0.5)
    assert rx.error is None and not rx.done.is_set()
    usage = Delivery(str(sample_pcap), rx.url, DeliveryOptions(workers=1, stream_id="s")).run()
    assert usage["resumed_at"]["packets_out"] >= 1000
    rx.done.wait(30)
    assert rx.error is None and rx.packets == every
