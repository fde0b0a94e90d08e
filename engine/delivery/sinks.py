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
from engine.delivery.streams import (
    ABORT,
    ACK,
    BATCH,
    END,
    HELLO,
    MAX_STREAM_ID,
    NUMBER,
    REFUSE,
    RESUMABLE_TAG,
    RESUME,
    STREAM_TAG,
    Mark,
    split_endpoint,
)
from engine.errors import EngineError

log = logging.getLogger(__name__)


class Sink:
    url: str = ""
    acknowledges = False  # True: on_ack, not write, says what was delivered
    resumable = False  # True: a stop leaves the stream open for a later run to resume
    resumed: Mark  # a resumable sink's: where its receiver said the stream stands
    mark: Mark  # a resumable sink's: where its receiver has confirmed the stream since

    def write(self, batch: PacketBatch, at: Mark | None = None) -> None:
        """Deliver ``batch``; ``at``: where the source stands once it is delivered (its
        position and what came in; the sink that carries marks adds what went out)."""
        raise NotImplementedError

    def detach(self) -> None:
        """A resumable stream stops here for now: a later run goes on from where its
        receiver stands."""
        self.abort("stopped")

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

    def __init__(
        self, path: str, *, format: str = "pcap", ts_resolution: str | None = "us"
    ) -> None:
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

    def _open_writer(self) -> CaptureWriter:
        assert self.writer is not None  # made in __init__, or __init__ raised
        return self.writer

    def write(self, batch: PacketBatch, at: Mark | None = None) -> None:
        with self._named():
            self._open_writer().write(batch)

    def close(self, summary=None) -> None:
        with self._named():
            self._open_writer().close()

    def abort(self, reason: str) -> None:
        self._open_writer().abort()


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

    def write(self, batch: PacketBatch, at: Mark | None = None) -> None:
        send = self.sock.sendto
        data = batch.data.data  # a memoryview of the batch's bytes
        for off, n in zip(batch.offsets.tolist(), batch.caplen.tolist()):
            while True:
                try:
                    send(data[off : off + n], self.addr)
                    break
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise EngineError(
                        f"{self.url}: send failed after {self.sent} datagrams: "
                        f"{exc.strerror or exc}"
                    ) from None
            self.sent += 1

    def close(self, summary=None) -> None:
        self.sock.close()

    def abort(self, reason: str) -> None:
        self.sock.close()


class DownstreamSink(Sink):
    """Another pktx node's source (``zmq://HOST:PORT``): numbered batches, each acknowledged.

    ``on_ack(packets, bytes)`` is called for what the downstream confirmed; ``flush()`` waits
    for every confirmation and fails after ``ack_timeout_s`` without one.

    With ``stream_id`` the stream is resumable (streams.py): opening it asks the downstream
    where it stands (``resumed``: the mark of the last batch it took, zeros for a new
    stream), numbering goes on from there, each batch carries its mark, and ``mark`` is the
    last one the downstream acknowledged.
    """

    acknowledges = True

    def __init__(
        self,
        url: str,
        *,
        context: zmq.Context | None = None,
        on_ack=None,
        ack_timeout_s: float = 30.0,
        window: int = 64,
        stream_id: str | None = None,
    ) -> None:
        self.url = url
        host, port = split_endpoint(url, "zmq")
        self.ctx = context or zmq.Context.instance()
        self.on_ack = on_ack
        self.ack_timeout_s = ack_timeout_s
        self.window = window
        self.stream_id = stream_id
        self.resumable = stream_id is not None
        self.tag = RESUMABLE_TAG if self.resumable else STREAM_TAG
        if stream_id is not None and not 0 < len(stream_id.encode()) <= MAX_STREAM_ID:
            raise EngineError(f"stream id {stream_id[:40]!r}: 1 to {MAX_STREAM_ID} bytes")
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
        # number -> (packets, bytes, the mark it carries)
        self.unacked: dict[int, tuple[int, int, Mark | None]] = {}
        self.next_number = 0
        self.sent_packets = self.acked_packets = 0
        self.resumed = self.mark = Mark()
        if self.resumable:
            try:
                self._open()
            except BaseException:
                self.sock.close(0)
                raise
        self._out = (self.resumed.packets_out, self.resumed.bytes_out)  # sent, cumulative

    def _open(self) -> None:
        """HELLO, and the downstream's answer: where the stream stands there."""
        assert self.stream_id is not None  # only a resumable stream opens
        name = repr(self.stream_id)
        try:
            self.sock.send_multipart([self.tag, HELLO, self.stream_id.encode()])
        except zmq.Again:
            raise self._unanswered() from None
        deadline = time.monotonic() + self.ack_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise self._unanswered()
            frames = self.sock.recv_multipart()
            if len(frames) < 3 or frames[0] != self.tag:
                log.warning("%s: ignored a message that is not an answer to HELLO", self.url)
                continue
            if frames[1] == REFUSE:
                raise EngineError(
                    f"{self.url}: the downstream node refused stream {name}: "
                    f"{frames[2].decode(errors='replace')[:500]}"
                )
            if frames[1] != RESUME:
                continue  # an acknowledgement meant for a sender before this one
            try:
                answer = json.loads(frames[2])
                if answer.get("stream") != self.stream_id:
                    raise ValueError(f"it answers for stream {answer.get('stream')!r}")
                self.next_number = int(answer["next"])
                self.resumed = self.mark = Mark.from_dict(answer.get("mark") or {})
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise EngineError(
                    f"{self.url}: a malformed answer to opening stream {name}: {exc}"
                ) from None
            if self.next_number:
                log.info(
                    "%s: resuming stream %s at message %d, source position %d",
                    self.url,
                    name,
                    self.next_number,
                    self.mark.position,
                )
            return

    def _unanswered(self) -> EngineError:
        return EngineError(
            f"{self.url}: no answer to opening stream {self.stream_id!r} for "
            f"{self.ack_timeout_s:g} s (is a pktx deliver zmq://... receiving there, of a "
            "version that resumes streams, PKTX-STREAM/2?)"
        )

    def _send(self, kind: bytes, *body) -> int:
        number = self.next_number
        self.next_number += 1
        try:
            self.sock.send_multipart([self.tag, kind, NUMBER.pack(number), *body], copy=False)
        except zmq.Again:
            raise self._silent() from None
        return number

    def _silent(self) -> EngineError:
        return EngineError(
            f"{self.url}: the downstream node acknowledged {self.acked_packets} of "
            f"{self.sent_packets} packets and nothing for {self.ack_timeout_s:g} s (is a "
            "pktx deliver zmq://... receiving there?)"
        )

    def _take_acks(self, timeout_ms: int) -> None:
        if not self.sock.poll(timeout_ms):
            return
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) >= 3 and frames[0] == self.tag and frames[1] == REFUSE:
                # Another sender took the stream over (this one was thought dead).
                raise EngineError(
                    f"{self.url}: the downstream node refused stream "
                    f"{self.stream_id!r}: "
                    f"{frames[2].decode(errors='replace')[:500]}"
                )
            if (
                len(frames) != 3
                or frames[0] != self.tag
                or frames[1] != ACK
                or len(frames[2]) != NUMBER.size
            ):
                log.warning("%s: ignored a message that is not an acknowledgement", self.url)
                continue
            done = self.unacked.pop(NUMBER.unpack(frames[2])[0], None)
            if done is not None:
                self.acked_packets += done[0]
                if done[2] is not None:
                    self.mark = done[2]
                if self.on_ack is not None:
                    self.on_ack(done[0], done[1])

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

    def _marked(self, at: Mark | None, packets: int, nbytes: int) -> Mark | None:
        """The mark a message of a resumable stream carries: ``at`` and what went out."""
        if not self.resumable:
            return None
        self._out = (self._out[0] + packets, self._out[1] + nbytes)
        at = at or self.mark  # the end marker (sent once all is acknowledged): no new input
        return Mark(at.position, at.packets_in, at.bytes_in, *self._out)

    def write(self, batch: PacketBatch, at: Mark | None = None) -> None:
        self._take_acks(0)
        self._wait(self.window - 1)
        mark = self._marked(at, len(batch), batch.nbytes)
        extra = [mark.pack()] if mark is not None else []
        n = self._send(BATCH, *extra, *batch.to_frames())
        self.unacked[n] = (len(batch), batch.nbytes, mark)
        self.sent_packets += len(batch)

    def flush(self) -> None:
        self._wait(0)

    def close(self, summary=None) -> None:
        self.flush()
        mark = self._marked(None, 0, 0)
        extra = [mark.pack()] if mark is not None else []
        n = self._send(END, *extra, json.dumps(summary or {}).encode())
        self.unacked[n] = (0, 0, mark)
        self._wait(0)
        self.sock.close(0)

    def abort(self, reason: str) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart([self.tag, ABORT, reason.encode()], zmq.NOBLOCK)
        self.sock.close(linger=1000)

    def detach(self) -> None:
        if not self.resumable:
            self.abort("stopped")
            return
        # Nothing is said: the receiver keeps what it took and waits for a sender to resume.
        with contextlib.suppress(zmq.ZMQError):
            self._take_acks(0)  # acknowledgements already here still count
        self.sock.close(0)


def open_sink(
    url: str,
    *,
    format: str = "pcap",
    ts_resolution: str | None = "us",
    on_ack=None,
    ack_timeout_s: float = 30.0,
    stream_id: str | None = None,
) -> Sink:
    """The sink for ``url``. A sink that ``acknowledges`` reports what its receiver confirmed
    through ``on_ack(packets, bytes)``; the others have delivered what ``write`` returned.
    ``stream_id``: a resumable stream to a ``zmq://`` receiver (streams.py)."""
    if stream_id is not None and not url.startswith("zmq://"):
        raise EngineError(
            f"--stream-id {stream_id!r}: only a zmq:// sink can resume a stream "
            f"(its receiver says where it stands), not {url}"
        )
    if url.startswith("udp://"):
        return UdpSink(url)
    if url.startswith("zmq://"):
        return DownstreamSink(url, on_ack=on_ack, ack_timeout_s=ack_timeout_s, stream_id=stream_id)
    if "://" in url:
        raise EngineError(
            f"unknown sink {url!r}: use a file path, udp://HOST:PORT or zmq://HOST:PORT"
        )
    return FileSink(url, format=format, ts_resolution=ts_resolution)
