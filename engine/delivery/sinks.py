"""Where a delivery's second stream goes: a capture file, UDP datagrams, a downstream node."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time

import zmq

from engine.capture.batch import PacketBatch
from engine.capture.writer import CaptureWriter
from engine.delivery.streams import ABORT, ACK, BATCH, END, NUMBER, STREAM_TAG, split_endpoint
from engine.errors import EngineError

log = logging.getLogger(__name__)


class Sink:
    url: str = ""
    acknowledges = False  # True: on_ack, not write, says what was delivered

    def write(self, batch: PacketBatch) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Everything written has been delivered (or raise)."""

    def close(self, summary: dict | None = None) -> None:
        """The stream is complete."""

    def abort(self, reason: str) -> None:
        """The stream failed: leave nothing that looks complete."""

    def describe(self) -> str:
        return self.url


class FileSink(Sink):
    """A capture file, written under a temporary name and renamed when complete."""

    def __init__(self, path: str, *, format: str = "pcap", ts_resolution: str = "us") -> None:
        self.url = path
        self.writer = None
        try:
            with self._named():
                self.writer = CaptureWriter(path, format=format, ts_resolution=ts_resolution)
        except BaseException:  # a signal just after the file was made: it must not stay
            if self.writer is not None:
                self.writer.abort()
            raise

    @contextlib.contextmanager
    def _named(self):
        """An OS error names the output, not the hidden temporary file it is written as."""
        try:
            yield
        except OSError as exc:
            raise EngineError(f"{self.url}: cannot write: {exc.strerror or exc}") from None

    def write(self, batch: PacketBatch) -> None:
        with self._named():
            self.writer.write(batch)

    def close(self, summary=None) -> None:
        with self._named():
            self.writer.close()

    def abort(self, reason: str) -> None:
        self.writer.abort()


class UdpSink(Sink):
    """Each packet's captured bytes as one datagram to ``udp://HOST:PORT``."""

    def __init__(self, url: str) -> None:
        self.url = url
        host, port = split_endpoint(url, "udp")
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as exc:
            raise EngineError(f"{url}: cannot resolve {host}: {exc}") from None
        self.addr = info[4]
        self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        self.sent = 0

    def write(self, batch: PacketBatch) -> None:
        send = self.sock.sendto
        data = memoryview(batch.data)
        for off, n in zip(batch.offsets.tolist(), batch.caplen.tolist()):
            while True:
                try:
                    send(data[off:off + n], self.addr)
                    break
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise EngineError(f"{self.url}: send failed after {self.sent} datagrams: "
                                      f"{exc.strerror or exc}") from None
            self.sent += 1

    def close(self, summary=None) -> None:
        self.sock.close()

    def abort(self, reason: str) -> None:
        self.sock.close()


class DownstreamSink(Sink):
    """Another pktx node's source (``zmq://HOST:PORT``): numbered batches, each acknowledged.

    ``on_ack(packets, bytes)`` is called for what the downstream confirmed; ``flush()`` waits
    for every confirmation and fails after ``ack_timeout_s`` without one.
    """

    acknowledges = True

    def __init__(self, url: str, *, context: zmq.Context | None = None, on_ack=None,
                 ack_timeout_s: float = 30.0, window: int = 64) -> None:
        self.url = url
        host, port = split_endpoint(url, "zmq")
        self.ctx = context or zmq.Context.instance()
        self.on_ack = on_ack
        self.ack_timeout_s = ack_timeout_s
        self.window = window
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = window + 2
        self.sock.maxmsgsize = 1 << 16  # acknowledgements only
        self.sock.sndtimeo = int(ack_timeout_s * 1000)
        try:
            self.sock.connect(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise EngineError(f"{url}: cannot connect: {exc}") from None
        self.unacked: dict[int, tuple[int, int]] = {}  # number -> (packets, bytes)
        self.next_number = 0
        self.sent_packets = self.acked_packets = 0

    def _send(self, kind: bytes, *body) -> int:
        number = self.next_number
        self.next_number += 1
        try:
            self.sock.send_multipart([STREAM_TAG, kind, NUMBER.pack(number), *body], copy=False)
        except zmq.Again:
            raise self._silent() from None
        return number

    def _silent(self) -> EngineError:
        return EngineError(
            f"{self.url}: the downstream node acknowledged {self.acked_packets} of "
            f"{self.sent_packets} packets and nothing for {self.ack_timeout_s:g} s (is a "
            "pktx deliver zmq://... receiving there?)")

    def _take_acks(self, timeout_ms: int) -> None:
        if not self.sock.poll(timeout_ms):
            return
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or frames[0] != STREAM_TAG or frames[1] != ACK \
                    or len(frames[2]) != NUMBER.size:
                log.warning("%s: ignored a message that is not an acknowledgement", self.url)
                continue
            done = self.unacked.pop(NUMBER.unpack(frames[2])[0], None)
            if done is not None:
                self.acked_packets += done[0]
                if self.on_ack is not None:
                    self.on_ack(*done)

    def _wait(self, most: int) -> None:
        """Until at most ``most`` messages are unacknowledged."""
        deadline = time.monotonic() + self.ack_timeout_s
        progress = len(self.unacked)
        while len(self.unacked) > most:
            if len(self.unacked) < progress:  # the timeout counts from the last ack
                progress = len(self.unacked)
                deadline = time.monotonic() + self.ack_timeout_s
            if time.monotonic() > deadline:
                raise self._silent()
            self._take_acks(50)

    def write(self, batch: PacketBatch) -> None:
        self._take_acks(0)
        self._wait(self.window - 1)
        n = self._send(BATCH, *batch.to_frames())
        self.unacked[n] = (len(batch), batch.nbytes)
        self.sent_packets += len(batch)

    def flush(self) -> None:
        self._wait(0)

    def close(self, summary=None) -> None:
        self.flush()
        n = self._send(END, json.dumps(summary or {}).encode())
        self.unacked[n] = (0, 0)
        self._wait(0)
        self.sock.close(0)

    def abort(self, reason: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart([STREAM_TAG, ABORT, reason.encode()], zmq.NOBLOCK)
        self.sock.close(linger=1000)


def open_sink(url: str, *, format: str = "pcap", ts_resolution: str = "us", on_ack=None,
              ack_timeout_s: float = 30.0) -> Sink:
    """The sink for ``url``. A sink that ``acknowledges`` reports what its receiver confirmed
    through ``on_ack(packets, bytes)``; the others have delivered what ``write`` returned."""
    if url.startswith("udp://"):
        return UdpSink(url)
    if url.startswith("zmq://"):
        return DownstreamSink(url, on_ack=on_ack, ack_timeout_s=ack_timeout_s)
    if "://" in url:
        raise EngineError(f"unknown sink {url!r}: use a file path, udp://HOST:PORT or "
                          "zmq://HOST:PORT")
    return FileSink(url, format=format, ts_resolution=ts_resolution)
