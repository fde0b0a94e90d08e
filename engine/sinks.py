"""Where a delivery's second stream goes: a capture file, UDP datagrams, a downstream node."""

from __future__ import annotations

import contextlib
import json
import logging
import socket

import zmq

from engine.batch import PacketBatch
from engine.errors import EngineError
from engine.streams import ABORT, BATCH, END, STREAM_TAG, split_endpoint
from engine.writer import CaptureWriter

log = logging.getLogger(__name__)


class Sink:
    url: str = ""

    def write(self, batch: PacketBatch) -> None:
        raise NotImplementedError

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
        with self._named():
            self.writer = CaptureWriter(path, format=format, ts_resolution=ts_resolution)

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
    """Another pktx node's source (``zmq://HOST:PORT``): batches over PUSH, then an end mark."""

    def __init__(self, url: str, *, context: zmq.Context | None = None,
                 linger_ms: int = 30_000) -> None:
        self.url = url
        host, port = split_endpoint(url, "zmq")
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.linger = linger_ms
        self.sock.sndhwm = 64
        self.sock.connect(f"tcp://{host}:{port}")

    def write(self, batch: PacketBatch) -> None:
        self.sock.send_multipart([STREAM_TAG, BATCH, *batch.to_frames()], copy=False)

    def close(self, summary=None) -> None:
        self.sock.send_multipart([STREAM_TAG, END, json.dumps(summary or {}).encode()])
        self.sock.close()

    def abort(self, reason: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart([STREAM_TAG, ABORT, reason.encode()], zmq.NOBLOCK)
        self.sock.close(linger=1000)


def open_sink(url: str, *, format: str = "pcap", ts_resolution: str = "us") -> Sink:
    if url.startswith("udp://"):
        return UdpSink(url)
    if url.startswith("zmq://"):
        return DownstreamSink(url)
    if "://" in url:
        raise EngineError(f"unknown sink {url!r}: use a file path, udp://HOST:PORT or "
                          "zmq://HOST:PORT")
    return FileSink(url, format=format, ts_resolution=ts_resolution)
