"""Where a delivery's first stream comes from: a capture file, UDP, a live interface, upstream.

Every source is an iterable of PacketBatches; live ones yield small batches often (and empty
ones when idle) so time-window segmentation can flush on time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import zmq

from engine.capture.batch import DEFAULT_SNAPLEN, Interface, PacketBatch
from engine.capture.reader import CaptureReader
from engine.delivery import protocol as P
from engine.delivery.ratelog import RateLimitedLog
from engine.delivery.streams import (
    ABORT,
    ACK,
    BATCH,
    END,
    HELLO,
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


class Source:
    """A first data stream. ``describe()`` names it in the usage record."""

    url: str = ""
    live = False

    def __iter__(self) -> Iterator[PacketBatch]:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask a live source to end (it yields what it holds, then stops)."""

    def describe(self) -> str:
        return self.url

    def stats(self) -> dict:
        """Counts the source keeps of its own (a live capture: the kernel's drops), for the
        usage record; empty when it keeps none."""
        return {}

    def default_output(self) -> tuple[str, str | None]:
        """(format, timestamp resolution) an output file takes by default (None: each
        interface's own)."""
        return "pcap", "ns"

    def progress(self) -> tuple[int, int] | None:
        """(bytes read so far, of how many) for a source of known size, a file; None for a
        stream of unknown size. Read from another thread, for a progress display."""
        return None

    def file_end(self, batch: PacketBatch) -> int | None:
        """For a memory-mapped source: where ``batch`` ends in the map (else None)."""
        return None

    def release_through(self, end: int) -> None:
        """For a memory-mapped source: the pages before ``end`` are no longer needed."""

    def start_at(self, position: int) -> None:
        """Start at the source's input packet ``position`` (a resumed stream). A live
        source goes on from where it is: what it passed meanwhile is gone."""
        if position:
            log.info("%s: a live source cannot go back or skip; resuming from now", self.url)


class FileSource(Source):
    def __init__(self, path: str, *, batch_packets: int = 8192, errors: str = "strict"):
        self.url = path
        self.reader = CaptureReader(path, errors=errors, batch_packets=batch_packets)
        self.start = 0

    def start_at(self, position: int) -> None:
        self.start = position

    def __iter__(self):
        yield from self.reader.iter_from(self.start)
        if self.reader.walked < self.start:
            raise EngineError(
                f"{self.url}: the stream stands at input packet {self.start:,}, "
                f"but this capture has {self.reader.walked:,}: not the source "
                "the stream was made from"
            )

    def progress(self) -> tuple[int, int]:
        return self.reader.position, self.reader.size

    def file_end(self, batch):
        return self.reader.file_end(batch)

    def release_through(self, end: int) -> None:
        self.reader.release_through(end)

    def default_output(self):
        # No resolution: each interface keeps the one it was read at (see CaptureWriter).
        return self.reader.format, None


class _LiveSource(Source):
    """A source that receives packets as they come: ``_receive`` gathers what arrives before a
    deadline; this class makes batches of it, ends the stream, and closes the socket."""

    live = True

    def __init__(
        self,
        *,
        count: int | None = None,
        idle_timeout: float | None = None,
        poll_ms: int = 5,
        batch_packets: int = 1024,
    ) -> None:
        self.count = count
        self.idle_timeout = idle_timeout
        self.poll_ms = poll_ms
        self.batch_packets = batch_packets
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    interface: Interface = Interface(1)

    def _receive(self, limit: int, deadline: float) -> tuple[list[bytes], list[int]]:
        """Packets (and their arrival times, int ns) received before ``deadline``."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def __iter__(self):
        ifaces = (self.interface,)
        total = 0
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                limit = self.batch_packets
                if self.count is not None:
                    limit = min(limit, self.count - total)
                chunks, stamps = self._receive(limit, time.monotonic() + self.poll_ms / 1000)
                now = time.monotonic()
                if chunks:
                    last = now
                    total += len(chunks)
                    b = PacketBatch.from_packets(chunks, stamps, self.interface.linktype)
                    yield PacketBatch(
                        b.data, b.offsets, b.caplen, b.origlen, b.ts_ns, interfaces=ifaces
                    )
                else:
                    yield PacketBatch.empty(ifaces)
                if self.count is not None and total >= self.count:
                    return
                if self.idle_timeout is not None and now - last > self.idle_timeout:
                    log.info(
                        "%s: nothing received for %.1f s; ending the stream",
                        self.url,
                        self.idle_timeout,
                    )
                    return
        finally:
            self._close()


class UdpSource(_LiveSource):
    """Each datagram received on ``udp://HOST:PORT`` is one packet of ``linktype``."""

    def __init__(self, url: str, *, linktype: int = 1, **kw) -> None:
        super().__init__(**kw)
        self.url = url
        self.interface = Interface(linktype, 65535)
        host, port = split_endpoint(url, "udp")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            raise EngineError(f"{url}: cannot bind: {exc.strerror}") from None
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(self.poll_ms / 1000)
        self._view = memoryview(bytearray(65536))

    def _receive(self, limit, deadline):
        chunks: list[bytes] = []
        stamps: list[int] = []
        while len(chunks) < limit and time.monotonic() < deadline:
            try:
                n = self.sock.recv_into(self._view)
            except TimeoutError:
                break
            chunks.append(bytes(self._view[:n]))
            stamps.append(time.time_ns())
        return chunks, stamps

    def _close(self):
        self.sock.close()


class InterfaceSource(_LiveSource):
    """Live capture from ``iface:NAME`` through a memory-mapped AF_PACKET ring
    (``engine.capture.packet_ring``): one batch per block the kernel hands over, nanosecond times.

    Options ride in the URL's query: ``iface:eth0?snaplen=128&ring_mb=64&block_kb=1024``
    ``&retire_ms=10&promisc=0`` (defaults: the full frame, 32 MiB of 1 MiB blocks, 10 ms,
    promiscuous). Asked to stop, it still yields the blocks the kernel hands over within two
    retire timeouts, so what arrived before the stop is kept.
    """

    OPTIONS = {"snaplen": int, "ring_mb": float, "block_kb": int, "retire_ms": int, "promisc": int}

    def __init__(self, url: str, **kw) -> None:
        from engine.capture.packet_ring import DEFAULT_RETIRE_MS, PacketRing

        super().__init__(**kw)
        self.url = url
        name, opts = _iface_options(url, self.OPTIONS)
        block = opts.get("block_kb", 1024) * 1024
        ring = opts.get("ring_mb", 32.0) * (1 << 20)
        self.retire_ms = opts.get("retire_ms", DEFAULT_RETIRE_MS)
        self.ring = PacketRing(
            name,
            snaplen=opts.get("snaplen", DEFAULT_SNAPLEN),
            block_size=block,
            block_count=max(2, int(ring // block)),
            retire_ms=self.retire_ms,
            promisc=bool(opts.get("promisc", 1)),
            where=url,
        )
        self.interface = self.ring.interface
        self._final: dict | None = None

    def __iter__(self):
        ifaces = (self.interface,)
        total = 0
        last = time.monotonic()
        drain_until = None
        try:
            while self.count is None or total < self.count:
                if drain_until is None and self._stop.is_set():
                    # What the kernel still holds comes out within a retire timeout.
                    drain_until = time.monotonic() + 2 * self.retire_ms / 1000 + 0.02
                now = time.monotonic()
                if drain_until is not None and now >= drain_until:
                    return
                batch = self.ring.read_block() if self.ring.wait(self.poll_ms) else None
                if batch is not None and len(batch):
                    last = now
                    if self.count is not None:
                        batch = batch[: self.count - total]
                    total += len(batch)
                    yield batch
                elif drain_until is None:
                    yield PacketBatch.empty(ifaces)
                    if self.idle_timeout is not None and now - last > self.idle_timeout:
                        log.info(
                            "%s: nothing received for %.1f s; ending the stream",
                            self.url,
                            self.idle_timeout,
                        )
                        return
        finally:
            self._final = self.stats()
            self.ring.close()

    def stats(self) -> dict:
        return self._final if self._final is not None else self.ring.stats()


def _iface_options(url: str, kinds: dict) -> tuple[str, dict]:
    """``iface:NAME?k=v&...`` -> (NAME, {k: kinds[k](v)}), naming what is wrong."""
    from urllib.parse import parse_qsl

    name, _, query = url.split(":", 1)[1].partition("?")
    opts = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in kinds:
            raise EngineError(f"{url}: unknown option {key!r} (known: {', '.join(kinds)})")
        try:
            opts[key] = kinds[key](value)
        except ValueError:
            raise EngineError(f"{url}: option {key} wants a number, not {value!r}") from None
        if opts[key] < 0:
            raise EngineError(f"{url}: option {key} must not be negative")
    return name, opts


class UpstreamSource(_LiveSource):
    """An upstream pktx node's second stream: bind a ROUTER on ``zmq://HOST:PORT``, take the
    numbered batches of the first node that sends one, and acknowledge each (streams.py).

    A resumable stream (one that opens with HELLO and an id) is this node's from its first
    HELLO on: a sender that says HELLO with the same id later (the first one killed and
    started again) is answered where the stream stands and is its sender from then on; a
    HELLO with another id, or a batch from anyone but the current sender, is refused (the
    sender is told why, this node goes on). ``stream_id`` and ``mark`` say where it stands.
    """

    def __init__(self, url: str, *, context: zmq.Context | None = None, **kw) -> None:
        super().__init__(**kw)
        self.url = url
        host, port = split_endpoint(url, "zmq")
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 1000  # the last acknowledgement must get out
        self.sock.rcvhwm = 64
        self.sock.maxmsgsize = P.MAX_FRAME_BYTES
        try:
            if port == 0:
                self.port = self.sock.bind_to_random_port(f"tcp://{host}")
            else:
                self.sock.bind(f"tcp://{host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise EngineError(f"{url}: cannot bind: {exc}") from None
        self.summary: dict | None = None
        self.rlog = RateLimitedLog(log)
        self.stream_id: str | None = None  # a resumable stream's id, once opened
        self.mark = Mark()  # where it stands: the mark of the last batch taken
        self.resumes = 0  # HELLOs of a stream already under way, answered

    def _reply(self, peer: bytes, tag: bytes, kind: bytes, body: bytes) -> None:
        try:
            self.sock.send_multipart([peer, tag, kind, body], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.rlog.warning("ack", "%s: an answer to the upstream could not be sent", self.url)

    def _refuse(self, peer: bytes, why: str) -> None:
        self.rlog.warning("refused", "%s: refused an upstream node: %s", self.url, why)
        self._reply(peer, RESUMABLE_TAG, REFUSE, why.encode())

    def _hello(self, peer: bytes, body: list, sender: bytes | None, expected: int) -> bool:
        """Answer a HELLO; True when ``peer`` is the stream's sender from now on."""
        if not body or not 0 < len(body[0]) <= 200:
            self._refuse(peer, "HELLO without a stream id")
            return False
        wanted = body[0].bytes.decode(errors="replace")
        if self.stream_id is None and (sender is not None or expected):
            self._refuse(
                peer,
                f"this node is receiving a stream without an id ({expected} "
                f"messages taken), not stream {wanted!r}",
            )
            return False
        if self.stream_id is not None and wanted != self.stream_id:
            self._refuse(
                peer,
                f"this node is receiving stream {self.stream_id!r} ({expected} "
                f"messages taken); stream {wanted!r} is not known here",
            )
            return False
        if self.stream_id is not None:
            self.resumes += 1
            log.info(
                "%s: stream %r resumed by a new sender at message %d, source position %d",
                self.url,
                wanted,
                expected,
                self.mark.position,
            )
        self.stream_id = wanted
        answer = {"stream": wanted, "next": expected, "mark": self.mark.as_dict()}
        self._reply(peer, RESUMABLE_TAG, RESUME, json.dumps(answer).encode())
        return True

    def __iter__(self):
        idle_since = time.monotonic()
        sender: bytes | None = None
        expected = 0
        try:
            while not self._stop.is_set():
                if not self.sock.poll(self.poll_ms):
                    if (
                        self.idle_timeout is not None
                        and time.monotonic() - idle_since > self.idle_timeout
                    ):
                        raise EngineError(
                            f"{self.url}: upstream silent for "
                            f"{self.idle_timeout:.0f} s before its end marker"
                        )
                    yield PacketBatch.empty()
                    continue
                frames = self.sock.recv_multipart(copy=False)
                peer = frames[0].bytes
                tag = frames[1].bytes if len(frames) > 2 else b""
                if tag == RESUMABLE_TAG and frames[2].bytes == HELLO:
                    if self._hello(peer, frames[3:], sender, expected):
                        sender = peer
                        idle_since = time.monotonic()
                    continue
                if sender is not None and peer != sender:
                    if tag == RESUMABLE_TAG:
                        self._refuse(
                            peer,
                            f"stream {self.stream_id!r} has another sender "
                            "now (say HELLO to resume it)",
                        )
                    else:
                        self.rlog.warning(
                            "stranger", "%s: ignored a message from a second sender", self.url
                        )
                    continue
                if tag not in (STREAM_TAG, RESUMABLE_TAG):
                    raise EngineError(
                        f"{self.url}: received a message that is not a pktx stream message"
                    )
                if (tag == RESUMABLE_TAG) != (self.stream_id is not None):
                    if tag == RESUMABLE_TAG:  # no HELLO: not a stream opened here
                        self._refuse(
                            peer,
                            "a stream message before HELLO (did this node "
                            "start again? it keeps no stream across restarts)",
                        )
                        continue
                    raise EngineError(
                        f"{self.url}: a message without a stream id in stream {self.stream_id!r}"
                    )
                idle_since = time.monotonic()
                kind = frames[2].bytes
                if kind == ABORT:
                    raise EngineError(
                        f"{self.url}: the upstream node failed: "
                        f"{frames[3].bytes.decode(errors='replace')[:500]}"
                        if len(frames) > 3
                        else f"{self.url}: the upstream node failed"
                    )
                body = 5 if tag == RESUMABLE_TAG else 4  # a resumable stream's mark first
                if (
                    kind not in (BATCH, END)
                    or len(frames) < body
                    or len(frames[3]) != NUMBER.size
                    or (tag == RESUMABLE_TAG and len(frames[4]) != Mark.LAYOUT.size)
                ):
                    raise EngineError(f"{self.url}: received a malformed pktx stream message")
                number = NUMBER.unpack(frames[3].bytes)[0]
                if number != expected:
                    raise EngineError(
                        f"{self.url}: message {number} arrived where {expected} "
                        "was due (the upstream restarted, or messages were lost)"
                    )
                mark = Mark.unpack(frames[4].bytes) if tag == RESUMABLE_TAG else None
                if kind == BATCH:
                    try:
                        batch = PacketBatch.from_frames([f.buffer for f in frames[body:]])
                    except ValueError as exc:
                        raise EngineError(f"{self.url}: malformed batch: {exc}") from None
                else:
                    try:
                        self.summary = json.loads(frames[body].bytes) if len(frames) > body else {}
                    except ValueError:
                        self.summary = {}
                expected += 1
                sender = peer
                if mark is not None:
                    self.mark = mark
                self._reply(peer, tag, ACK, frames[3].bytes)
                if kind == END:
                    return
                yield batch
        finally:
            self.sock.close()


def open_source(
    url: str,
    *,
    udp_linktype: int = 1,
    count: int | None = None,
    idle_timeout: float | None = None,
    errors: str = "strict",
) -> Source:
    """The source for ``url``: a file path, ``udp://``, ``iface:`` or ``zmq://``."""
    if url.startswith("udp://"):
        return UdpSource(url, linktype=udp_linktype, count=count, idle_timeout=idle_timeout)
    if url.startswith("iface:"):
        return InterfaceSource(url, count=count, idle_timeout=idle_timeout)
    if url.startswith("zmq://"):
        return UpstreamSource(url, count=count, idle_timeout=idle_timeout)
    if "://" in url:
        raise EngineError(
            f"unknown source {url!r}: use a capture file, udp://HOST:PORT, "
            "iface:NAME or zmq://HOST:PORT"
        )
    if not os.path.exists(url):
        raise EngineError(f"{url}: no such file")
    if not os.path.isfile(url):
        # A device or a pipe: /dev/zero is not "an empty file", and it never ends.
        raise EngineError(
            f"{url}: not a regular file (a capture source is a pcap or pcapng "
            "file, udp://, iface: or zmq://)"
        )
    return FileSource(url, errors=errors)
