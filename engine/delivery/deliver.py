"""One delivery: source -> segmenter -> dispatcher -> workers -> reassembly -> sink, metered.

Three threads: the source thread reads and segments, the main thread runs the dispatcher's
socket, the sink thread shapes and writes. Queues between them are bounded by the dispatcher's
window, so memory does not grow with the stream.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from engine.capture.batch import PacketBatch
from engine.capture.pcapformat import format_for_path
from engine.delivery import local
from engine.delivery import protocol as P
from engine.delivery.dispatcher import DeliveryError, Dispatcher, wake
from engine.delivery.meter import Meter, TokenBucket
from engine.delivery.positions import SegmentInput, SourceLedger
from engine.delivery.sinks import Sink, open_sink
from engine.delivery.sources import open_source
from engine.delivery.streams import Mark
from engine.errors import EngineError
from engine.packet.segment import Segmenter
from engine.services import parse_chain, public_chain

log = logging.getLogger(__name__)


@dataclass
class DeliveryOptions:
    services: str = "identity"
    params: list[str] = field(default_factory=list)
    workers: int | None = None  # local worker processes; None: one per core
    bind: str | None = None
    segment_packets: int | None = None
    segment_bytes: int | None = None
    segment_ms: float | None = None
    flow_affinity: bool = False
    # (i, k): deliver only share i of k (engine.packet.flowhash.share_of_packets); None: all of it.
    share: tuple[int, int] | None = None
    max_rate_bps: int | None = None
    min_rate_bps: int | None = None
    usage_json: str | None = None
    # While running, write the usage so far to usage_json every this many seconds (marked
    # ``"partial": true``): a delivery daemon reads it to report usage as the job runs.
    usage_every_s: float | None = None
    # A run whose packets failing authentication (decrypt) pass this many fails; None: no limit.
    max_auth_failures: int | None = 0
    curve_dir: str | None = None
    credit: int = P.DEFAULT_CREDIT
    format: str | None = None
    ts_resolution: str | None = None
    udp_linktype: int = 1
    count: int | None = None
    idle_timeout: float | None = None
    wait_workers_s: float = 60.0
    min_workers: int | None = None  # workers to wait for (default: the local ones, else 1)
    heartbeat_ms: int = P.HEARTBEAT_MS
    liveness: int = P.LIVENESS
    task_timeout_s: float = P.TASK_TIMEOUT_S
    max_attempts: int = P.MAX_ATTEMPTS  # workers a segment may kill or fail on
    on_poison: str = "fail"  # or "skip": drop such a segment and count it
    downstream_timeout_s: float = 30.0  # zmq:// sink: fail after this long with no ack
    # zmq:// sink: a resumable stream of this id (streams.py): a run started again with it
    # goes on where the receiver stands.
    stream_id: str | None = None
    # udp:// sink: a usage record of an earlier run of this stream; start at its
    # ``stream_position`` (no receiver can say where it stands: docs/daemon.md).
    resume_from: str | None = None
    window: int | None = None
    progress: bool = False
    worker_args: list[str] = field(default_factory=list)  # extra flags for spawned workers
    # How local workers start: "fork" (from this process, nothing imported twice) or "spawn"
    # (a ``pktx worker`` process each); None: fork where the platform has it.
    worker_start: str | None = None


DEFAULT_SEGMENT_PACKETS = 2048
# Local worker processes beyond this many per core only compete for the cores.
WORKERS_PER_CORE = 4


class AuthFailuresError(DeliveryError):
    """More packets failed authentication than the run allows (``count`` of them)."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class Delivery:
    """A delivery from ``source`` to ``sink``; ``run()`` returns the usage record."""

    def __init__(self, source: str, sink: str, options: DeliveryOptions | None = None) -> None:
        self.opts = o = options or DeliveryOptions()
        self.chain = parse_chain(o.services, o.params)
        self.stream_id = P.new_stream_id()
        self._check_usage_path()
        self.source = open_source(
            source, udp_linktype=o.udp_linktype, count=o.count, idle_timeout=o.idle_timeout
        )
        fmt, res = self.source.default_output()
        self.sink_url = sink
        self.sink_format = o.format or format_for_path(sink, fmt)
        self.sink_resolution = o.ts_resolution or res
        self.meter = Meter(min_rate_bps=o.min_rate_bps, max_rate_bps=o.max_rate_bps)
        self.local_workers: list[subprocess.Popen | local.ForkedWorker] = []
        self._stop = threading.Event()
        self._sink_error: BaseException | None = None
        # Per segment cut, in order: where it ends in a mapped file, and its input's positions.
        self._segment_ends: collections.deque[tuple[int | None, SegmentInput | None]] = (
            collections.deque()
        )
        self.dispatcher: Dispatcher | None = None
        # Where the stream stood when this run started, and where its sink has confirmed it:
        # kept for stream sinks, which a later run can resume (a file is written afresh).
        self.tracks = o.stream_id is not None or sink.startswith("udp://")
        self.resumed = self._resume_point()
        self.position = self.resumed
        self._sink: Sink | None = None

    # -- pieces --------------------------------------------------------------------------------
    def _resume_point(self) -> Mark:
        """Where ``--resume-from`` says the stream stands (a zmq:// receiver says it itself,
        when the sink opens)."""
        path = self.opts.resume_from
        if not path:
            return Mark()
        if not self.sink_url.startswith("udp://"):
            raise EngineError(
                f"--resume-from {path}: only for a udp:// sink (a zmq:// sink "
                "resumes with --stream-id: its receiver says where it stands)"
            )
        try:
            with open(path, encoding="utf-8") as f:
                return Mark.from_dict(json.load(f)["stream_position"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(
                f"--resume-from {path}: not a usage record with a stream_position ({exc})"
            ) from None

    def _check_usage_path(self) -> None:
        """A usage record that cannot be written fails now, not after the output is in place."""
        path = self.opts.usage_json
        if not path:
            return
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise EngineError(f"--usage-json {path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise EngineError(f"--usage-json {path}: folder {folder} is not writable")
        if os.path.isdir(path):
            raise EngineError(f"--usage-json {path}: is a folder")

    def _local_workers(self) -> int:
        cores = os.cpu_count() or 1
        if self.opts.workers is None:
            return cores
        cap = max(8, WORKERS_PER_CORE * cores)
        if self.opts.workers > cap:
            log.warning(
                "--workers %d is more than %d per core: starting %d",
                self.opts.workers,
                WORKERS_PER_CORE,
                cap,
            )
            return cap
        return self.opts.workers

    def _segmenter(self) -> Segmenter:
        o = self.opts
        packets = o.segment_packets
        if packets is None and o.segment_bytes is None:
            packets = DEFAULT_SEGMENT_PACKETS
        window = int(o.segment_ms * 1_000_000) if o.segment_ms else None
        if window and packets is None and o.segment_bytes is None:
            packets = 65536  # a time window still needs a size cap for a fast source
        # Every message must stay within the frame limit peers are held to.
        max_bytes = min(o.segment_bytes or P.MAX_SEGMENT_BYTES, P.MAX_SEGMENT_BYTES)
        return Segmenter(max_packets=packets, max_bytes=max_bytes, window_ns=window)

    def _source_thread(self, out: queue.Queue, wake_addr: str, ctx: zmq.Context) -> None:
        waker = wake(ctx, wake_addr)
        seg = self._segmenter()
        window_s = self.opts.segment_ms / 1000 if self.opts.segment_ms else None
        seq = 0
        opened_at: float | None = None

        ledger = SourceLedger(self.resumed) if self.tracks else None
        live_read = self.resumed.position  # a live source's packets so far, over the stream

        def put(item) -> None:
            if isinstance(item, PacketBatch):
                self._segment_ends.append(
                    (self.source.file_end(item), ledger.segment(item) if ledger else None)
                )
            while not self._stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            with contextlib.suppress(zmq.Again):  # a wake-up is already waiting
                waker.send(b"", zmq.NOBLOCK)

        try:
            for batch in self.source:
                if self._stop.is_set():
                    break
                # Each packet's place in the source: a file numbers its batches so.
                first = live_read if self.source.live else batch.first_seq
                live_read += len(batch)
                kept = None
                if self.opts.share is not None and len(batch):
                    batch, kept = self._my_share(batch)
                n = len(batch)
                if n:
                    if ledger is not None:
                        ledger.read(
                            first + (np.arange(n, dtype=np.int64) if kept is None else kept)
                        )
                    if batch.first_seq != seq:
                        batch = PacketBatch(
                            batch.data,
                            batch.offsets,
                            batch.caplen,
                            batch.origlen,
                            batch.ts_ns,
                            batch.iface,
                            batch.interfaces,
                            seq,
                        )
                    seq += n
                    self.meter.record_in(n, int(batch.caplen.sum(dtype=np.int64)))
                    for s in seg.feed(batch):
                        put(s)
                    if seg._held and opened_at is None:
                        opened_at = time.monotonic()
                    elif not seg._held:
                        opened_at = None
                # A live source's open segment goes when its time is up, full or not.
                if (
                    window_s is not None
                    and opened_at is not None
                    and time.monotonic() - opened_at >= window_s
                ):
                    last = seg.finish()
                    if last is not None:
                        put(last)
                    opened_at = None
            last = seg.finish()
            if last is not None:
                put(last)
            put(Dispatcher.END)
        except BaseException as exc:  # handed to the dispatcher thread, which raises it
            put(exc)
        finally:
            waker.close(0)

    def _sink_thread(self, inbox: queue.Queue, sink) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None  # made before the sink thread starts
        bucket = (
            TokenBucket(self.opts.max_rate_bps, waited=self.meter.record_throttled)
            if self.opts.max_rate_bps
            else None
        )
        try:
            while True:
                batch = inbox.get()
                if batch is None:
                    return
                # Segments are written in the order they were read.
                end, cut = self._segment_ends.popleft()
                if bucket is None:
                    self._write(sink, batch, cut, None)
                else:
                    self._shaped_write(batch, sink, bucket, cut)
                dispatcher.written += 1
                # The source's pages up to this segment's end are done with (the dispatcher
                # sends them without copying).
                if end is not None:
                    self.source.release_through(end)
        except BaseException as exc:
            self._sink_error = exc
            self._stop.set()

    def _write(
        self, sink, part: PacketBatch, cut: SegmentInput | None, seq_end: int | None
    ) -> None:
        """Write ``part`` of a segment, which ends the segment's input before sequence number
        ``seq_end`` (None: the whole segment's input is done with once it is written)."""
        at = None
        if cut is not None:
            position, packets_in, bytes_in = (
                cut.end() if seq_end is None or not len(cut.positions) else cut.through(seq_end)
            )
            at = Mark(position, packets_in, bytes_in)
        sink.write(part, at)
        if not sink.acknowledges:  # else counted when the receiver confirms
            self.meter.record_out(len(part), part.nbytes)
            if at is not None:
                p = self.position
                self.position = Mark(
                    at.position,
                    at.packets_in,
                    at.bytes_in,
                    p.packets_out + len(part),
                    p.bytes_out + part.nbytes,
                )

    def _shaped_write(
        self, batch: PacketBatch, sink, bucket: TokenBucket, cut: SegmentInput | None
    ) -> None:
        # Write in slices no bigger than the bucket's burst so the rate holds within a second.
        bits = batch.caplen.astype(np.int64) * 8
        cum = np.cumsum(bits)
        start = 0
        n = len(batch)
        while start < n:
            base = cum[start - 1] if start else 0
            end = int(np.searchsorted(cum, base + bucket.burst, side="right"))
            end = max(end, start + 1)
            part = batch[start:end]
            bucket.take(int(cum[end - 1] - base))
            # A part before the last ends the input at its last packet's (a resumed run
            # starts after it); the last ends the segment's, dropped packets and all.
            self._write(sink, part, cut, int(batch.seq[end - 1]) + 1 if end < n else None)
            start = end

    def _my_share(self, batch: PacketBatch) -> tuple[PacketBatch, np.ndarray]:
        """The packets of ``batch`` in this delivery's share (same buffer, stream order), and
        where they are in ``batch``."""
        from engine.packet.flowhash import share_of_packets

        assert self.opts.share is not None  # called for a delivery of one share only
        index, of = self.opts.share
        kept = np.flatnonzero(share_of_packets(batch, of) == index)
        mine = batch.take(kept)
        # Numbered afresh: the share is a stream of its own (the caller renumbers from here).
        return PacketBatch(
            mine.data,
            mine.offsets,
            mine.caplen,
            mine.origlen,
            mine.ts_ns,
            mine.iface,
            mine.interfaces,
            batch.first_seq,
        ), kept

    def _spawn_workers(self, endpoint: str, n: int) -> None:
        o = self.opts
        how = o.worker_start or local.default_start_method()
        if how not in local.START_METHODS:
            raise EngineError(f"worker start {how!r}: one of {', '.join(local.START_METHODS)}")
        if how == "fork":
            # Once here, not once per worker: forked, they start with it done.
            from engine.services.warm import warm_chain

            warm_chain(self.chain)
        for i in range(n):
            if how == "fork":
                self.local_workers.append(
                    local.fork_worker(
                        endpoint,
                        f"local-{i}",
                        credit=o.credit,
                        heartbeat_ms=o.heartbeat_ms,
                        liveness=o.liveness,
                        curve_dir=o.curve_dir,
                    )
                )
            else:
                self.local_workers.append(
                    local.spawn_worker(
                        endpoint,
                        f"local-{i}",
                        credit=o.credit,
                        heartbeat_ms=o.heartbeat_ms,
                        liveness=o.liveness,
                        curve_dir=o.curve_dir,
                        extra_args=o.worker_args,
                    )
                )

    def _local_workers_gone(self) -> str | None:
        """Why no local worker can serve any more (all have exited), or None."""
        if not self.local_workers or self.opts.bind:
            return None  # remote workers may still come
        codes = [p.poll() for p in self.local_workers]
        if any(c is None for c in codes):
            return None
        return (
            f"all {len(codes)} local workers have exited (exit codes "
            f"{', '.join(str(c) for c in codes)})"
        )

    def _check_local_workers(self) -> None:
        dead = [(i, p.returncode) for i, p in enumerate(self.local_workers) if p.poll() is not None]
        if dead:
            i, code = dead[0]
            raise DeliveryError(
                f"local worker {i} exited with code {code} before joining (its error is above)"
            )

    def _warm_up(self) -> None:
        """Compile (or load from cache) the numba kernels before the clock starts."""
        self._segmenter().feed(PacketBatch.from_packets([b"\0" * 60] * 4))
        if self.opts.flow_affinity:
            from engine.packet.flowhash import worker_of_packets

            worker_of_packets(PacketBatch.from_packets([b"\0" * 60] * 4), 4)

    def _stop_local_workers(self) -> None:
        for p in self.local_workers:
            p.terminate()
        self._reap_workers(5)

    def _reap_workers(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for p in self.local_workers:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict:
        o = self.opts
        n_local = self._local_workers()
        ctx: zmq.Context = zmq.Context.instance()
        ipc_dir = None
        if o.bind:
            bind = o.bind
        elif n_local:
            # Local workers only: a Unix socket in a folder of our own (mode 0700, so nobody
            # else on the host can connect), and the workers started before anything else, so
            # that their start-up (Python, numpy, the services) runs beside ours. They connect
            # before the dispatcher binds; ZeroMQ keeps trying until it does.
            if o.curve_dir:
                from engine.delivery.curve import check_client_keys

                check_client_keys(o.curve_dir)
            ipc_dir = tempfile.mkdtemp(prefix="pktx-")
            bind = f"ipc://{ipc_dir}/dispatcher"
            self._spawn_workers(bind, n_local)
        else:
            bind = "tcp://127.0.0.1:0"
        try:
            return self._run(bind, n_local, ctx, spawned=ipc_dir is not None)
        except BaseException:
            self._stop_local_workers()  # a setup failure must not leave them running
            raise
        finally:
            if ipc_dir is not None:
                shutil.rmtree(ipc_dir, ignore_errors=True)

    def _run(self, bind: str, n_local: int, ctx: zmq.Context, *, spawned: bool) -> dict:
        o = self.opts
        self._warm_up()
        # Everything that can fail on setup (the endpoint, the keys) before the sink exists, so
        # a failure leaves no file behind.
        d = self.dispatcher = Dispatcher(
            bind,
            self.chain,
            stream_id=self.stream_id,
            meter=self.meter,
            window=o.window,
            heartbeat_ms=o.heartbeat_ms,
            liveness=o.liveness,
            max_attempts=o.max_attempts,
            on_poison=o.on_poison,
            task_timeout_s=o.task_timeout_s,
            no_worker_timeout_s=o.wait_workers_s,
            flow_affinity=o.flow_affinity,
            curve_dir=o.curve_dir,
            context=ctx,
        )
        segments: queue.Queue = queue.Queue(maxsize=4)
        outbox: queue.Queue = queue.Queue()
        sink_thread = None
        try:
            sink = open_sink(
                self.sink_url,
                format=self.sink_format,
                ts_resolution=self.sink_resolution,
                on_ack=self.meter.record_out,
                ack_timeout_s=o.downstream_timeout_s,
                stream_id=o.stream_id,
            )
            if sink.resumable:  # the receiver said where the stream stands
                self.resumed = self.position = sink.resumed
            self.source.start_at(self.resumed.position)
            self._sink = sink
        except BaseException:
            # The workers go before the socket they may have reached (else they would report
            # the lost connection before the error that ends the run).
            self._stop_local_workers()
            d.close()
            raise
        try:
            if n_local and not spawned:
                self._spawn_workers(d.endpoint, n_local)
            elif not n_local:
                log.info("serving workers on %s", d.endpoint)
            d.wait_for_workers(
                o.min_workers or max(1, n_local), o.wait_workers_s, self._check_local_workers
            )
            self.meter.restart()
            threading.Thread(
                target=self._source_thread,
                args=(segments, d.wake_addr, ctx),
                name="pktx-source",
                daemon=True,
            ).start()
            sink_thread = threading.Thread(
                target=self._sink_thread, args=(outbox, sink), name="pktx-sink", daemon=True
            )
            sink_thread.start()

            def emit(batch: PacketBatch) -> None:
                if self._sink_error is not None:
                    raise DeliveryError(
                        f"writing {self.sink_url} failed: {self._sink_error}"
                    ) from self._sink_error
                self._check_auth_failures()
                outbox.put(batch)

            reporter = self._start_partial_usage()
            try:
                d.run(segments, emit, workers_gone=self._local_workers_gone)
                # A shaped sink may still be writing most of the stream: the records go on
                # till it is done (a daemon reports from them, a udp:// stream resumes there).
                outbox.put(None)
                sink_thread.join()
            finally:
                if reporter is not None:
                    reporter.set()
            if self._sink_error is not None:
                raise DeliveryError(f"writing {self.sink_url} failed: {self._sink_error}")
            sink.flush()  # the usage record counts only what the receiver confirmed
            self.meter.finish()
            self._check_auth_failures()
            usage = self.usage()
            sink.close(usage)
            d.broadcast_disconnect("stream complete")
        except BaseException as exc:
            self._stop.set()
            self.source.stop()
            if sink_thread is not None and sink_thread.is_alive():
                outbox.put(None)
                sink_thread.join(5)
            if isinstance(exc, KeyboardInterrupt) and sink.resumable:
                sink.detach()  # stopped, not failed: a later run resumes the stream
            else:
                sink.abort(str(exc))
            d.broadcast_disconnect("stream failed")
            self._stop_local_workers()
            d.close()
            if isinstance(exc, EngineError | KeyboardInterrupt):
                raise
            raise DeliveryError(f"delivery failed: {type(exc).__name__}: {exc}") from exc
        self._reap_workers()
        d.close()
        self._write_usage(usage)
        return usage

    def _start_partial_usage(self) -> threading.Event | None:
        """Write the usage so far every ``usage_every_s`` until the returned event is set."""
        every = self.opts.usage_every_s
        if not (every and self.opts.usage_json):
            return None
        done = threading.Event()

        def loop() -> None:
            while not done.wait(every):
                try:
                    self._write_usage({**self.usage(), "partial": True})
                except OSError as exc:  # a full disk must not stop the delivery itself
                    log.warning("--usage-json %s: %s", self.opts.usage_json, exc)

        threading.Thread(target=loop, name="pktx-usage", daemon=True).start()
        return done

    def _write_usage(self, usage: dict) -> None:
        if self.opts.usage_json:
            tmp = self.opts.usage_json + ".part"
            with open(tmp, "w") as f:
                json.dump(usage, f, indent=2)
            os.replace(tmp, self.opts.usage_json)

    def auth_failures(self) -> dict[str, int]:
        """Packets that failed authentication so far, per service."""
        return {
            name: int(c["auth_failures"])
            for name, c in list(self.meter.services.items())
            if c.get("auth_failures")
        }

    def _check_auth_failures(self) -> None:
        """Stop the run once more packets failed authentication than it allows: the output
        is then not completed, and the usage record (if asked for) says why."""
        limit = self.opts.max_auth_failures
        per_service = self.auth_failures()
        count = sum(per_service.values())
        if limit is None or count <= limit:
            return
        detail = ", ".join(f"{name} {n:,}" for name, n in per_service.items())
        message = (
            f"{count:,} packets failed authentication ({detail}), more than "
            f"--max-auth-failures {limit}: a wrong key, or packets changed on the way; "
            f"stopped, and {self.sink_url} was not completed"
        )
        self._write_usage({**self.usage(), "failed": message})
        raise AuthFailuresError(message, count)

    def usage(self) -> dict:
        return self.meter.usage(
            stream_id=f"{self.stream_id:032x}",
            sources=[self.source.describe()],
            sinks=[self.sink_url],
            service_chain=public_chain(self.chain),
            auth_failures=sum(self.auth_failures().values()),
            max_auth_failures=self.opts.max_auth_failures,
            **({"source_stats": stats} if (stats := self.source.stats()) else {}),
            **(
                {
                    "stream_position": self.stream_position().as_dict(),
                    "resumed_at": self.resumed.as_dict(),
                }
                if self.tracks
                else {}
            ),
        )

    def stream_position(self) -> Mark:
        """Where the stream stands, as far as its sink has confirmed (a zmq:// receiver: what
        it acknowledged; udp://: what was sent), cumulative over the runs before this one."""
        sink = self._sink
        if sink is not None and sink.acknowledges and sink.resumable:
            return sink.mark
        return self.position


def deliver(source: str, sink: str, **options) -> dict:
    """Deliver ``source`` to ``sink`` through the service chain; returns the usage record."""
    return Delivery(source, sink, DeliveryOptions(**options)).run()
