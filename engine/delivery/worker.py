"""The worker node: a DEALER that connects to a dispatcher, grants credit, runs service chains.

It reconnects with backoff when the dispatcher goes silent (Paranoid Pirate heartbeats), and on
SIGTERM tells the dispatcher it is draining, finishes every task it holds, then leaves.

Two threads: the main thread owns the socket and keeps heartbeating, the processing thread runs
the chains, so a task that takes minutes (a large pattern set to compile) never makes the worker
look dead. Each connection is a session; a result of an earlier session is never sent on a later
one (the dispatcher there belongs to another stream).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import struct
import threading
import time
from collections import Counter, OrderedDict

import numpy as np
import zmq

from engine.capture.batch import PacketBatch
from engine.delivery import protocol as P
from engine.errors import EngineError
from engine.services import available, build_chain
from engine.services.base import Service

log = logging.getLogger(__name__)


class Worker:
    """One worker node. ``run()`` serves until stopped (or the dispatcher says goodbye and
    ``exit_on_disconnect`` is set); it returns a process exit code."""

    def __init__(
        self,
        connect: str,
        *,
        services: list[str] | None = None,
        credit: int = P.DEFAULT_CREDIT,
        name: str | None = None,
        curve_dir: str | None = None,
        curve_name: str = "worker",
        exit_on_disconnect: bool = False,
        heartbeat_ms: int = P.HEARTBEAT_MS,
        liveness: int = P.LIVENESS,
        max_idle_s: float | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if credit < 1:
            raise ValueError("credit must be at least 1")
        self.endpoint = connect
        self.services = sorted(services) if services else available()
        self.credit = credit
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.curve_dir = curve_dir
        self.curve_name = curve_name
        self.exit_on_disconnect = exit_on_disconnect
        self.heartbeat_ms = heartbeat_ms
        self.liveness = liveness
        self.max_idle_s = max_idle_s
        self.ctx = context or zmq.Context.instance()
        self._chains: OrderedDict[bytes, list[Service]] = OrderedDict()
        self._stopping = False
        self.tasks_done = 0
        self.tasks_failed = 0
        self.service_ns: Counter = Counter()  # ns spent in each service (its tasks answered)
        self._service_lock = threading.Lock()
        self.joined = False  # welcomed by the dispatcher of the session under way
        self._session_no = 0
        self._jobs: queue.Queue = queue.Queue()  # (session, frames) for the processing thread
        self._done: queue.Queue = queue.Queue()  # (session, reply frames) for the main thread
        self._done_addr = f"inproc://pktx-worker-done-{id(self)}"

    # -- control -------------------------------------------------------------------------------
    def service_time(self) -> dict[str, int]:
        """Nanoseconds spent in each service so far (read from another thread)."""
        with self._service_lock:
            return dict(self.service_ns)

    def request_stop(self, *_args) -> None:
        """Drain and leave (the SIGTERM handler)."""
        if not self._stopping:
            log.info("worker %s: stop requested; finishing the tasks it holds", self.name)
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- main loop -----------------------------------------------------------------------------
    def run(self) -> int:
        self._done_rx = self.ctx.socket(zmq.PULL)
        self._done_rx.linger = 0
        self._done_rx.bind(self._done_addr)
        processor = threading.Thread(
            target=self._process_loop, name="pktx-worker-process", daemon=True
        )
        processor.start()
        try:
            return self._run()
        finally:
            self._jobs.put(None)
            processor.join(5)
            self._done_rx.close(0)

    def _run(self) -> int:
        delay = P.RECONNECT_MIN_MS
        idle_since = time.monotonic()
        while True:
            self._session_no += 1  # what an earlier session left queued is dropped
            outcome = self._session()
            if outcome == "served":
                delay = P.RECONNECT_MIN_MS
                idle_since = time.monotonic()
            if outcome in ("exit", "drained"):
                return 0
            if self._stopping:
                return 0
            if self.max_idle_s is not None and time.monotonic() - idle_since > self.max_idle_s:
                log.error(
                    "worker %s: no dispatcher at %s for %.0f s; giving up",
                    self.name,
                    self.endpoint,
                    self.max_idle_s,
                )
                return 1
            log.info("worker %s: reconnecting to %s in %d ms", self.name, self.endpoint, delay)
            self._sleep(delay / 1000)
            delay = min(delay * 2, P.RECONNECT_MAX_MS)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(min(0.05, end - time.monotonic()))

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.maxmsgsize = P.MAX_FRAME_BYTES
        sock.rcvhwm = P.HWM
        # A local worker may start before its dispatcher has bound: retry the connection every
        # 20 ms rather than ZeroMQ's 100 (the session's own backoff handles a dispatcher away).
        sock.reconnect_ivl = 20
        if self.curve_dir:
            from engine.delivery.curve import secure_client

            secure_client(sock, self.curve_dir, name=self.curve_name)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise EngineError(
                f"cannot connect to {self.endpoint}: {exc} (an endpoint is "
                "tcp://HOST:PORT or ipc://PATH)"
            ) from None
        return sock

    def _session(self) -> str:
        """One connection's life: returns "served", "silent", "exit", "drained" or "refused"."""
        sock = self._socket()
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_DISCONNECTED
        )
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._done_rx, zmq.POLLIN)
        hello = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "services": self.services,
            "credit": self.credit,
        }
        self._send(sock, [P.PROTOCOL, P.READY, P.dumps(hello)])
        hb = self.heartbeat_ms / 1000
        last_heard = time.monotonic()
        next_hb = last_heard + hb
        served = False
        welcomed = False
        draining_sent = False
        outcome = "silent"
        try:
            while True:
                if self._stopping and not draining_sent:
                    self._send(sock, [P.PROTOCOL, P.DISCONNECT, P.dumps({"reason": "draining"})])
                    draining_sent = True
                    if not welcomed:
                        return "drained"  # no dispatcher has work for us: leave now
                events = dict(poller.poll(int(max(0.0, next_hb - time.monotonic()) * 1000)))
                now = time.monotonic()
                if self._done_rx in events:
                    self._send_done(sock)
                if sock in events or monitor in events:
                    # Messages first: a DISCONNECT that arrived just before the connection
                    # closed must still be read (it says whether to leave).
                    for _ in range(256):  # then the heartbeat check, then the rest
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        last_heard = now
                        verdict = self._handle(sock, frames)
                        if verdict == "welcome":
                            welcomed = self.joined = True
                            hb = self.heartbeat_ms / 1000
                        elif verdict == "task":
                            served = True
                        elif verdict == "disconnect":
                            if draining_sent or self.exit_on_disconnect:
                                return "exit"
                            return "served" if served else "silent"
                    now = time.monotonic()
                if monitor in events:
                    event = _monitor_event(monitor)
                    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                        log.error(
                            "worker %s: refused by the dispatcher at %s: CURVE "
                            "authentication failed (wrong key?)",
                            self.name,
                            self.endpoint,
                        )
                        outcome = "refused"
                        return outcome
                    if event == zmq.EVENT_DISCONNECTED and self._stopping:
                        return "exit"  # asked to stop, and the dispatcher is gone too
                    if event == zmq.EVENT_DISCONNECTED:
                        # ZeroMQ would reconnect this socket by itself, perhaps to another
                        # dispatcher on the same endpoint: a new session (new socket, READY)
                        # instead, and what this one held is dropped, never sent there.
                        log.warning("worker %s: connection to %s lost", self.name, self.endpoint)
                        return "served" if served else "silent"
                if now - last_heard > hb * self.liveness:
                    log.warning(
                        "worker %s: dispatcher at %s silent for %.1f s",
                        self.name,
                        self.endpoint,
                        now - last_heard,
                    )
                    return "served" if served else "silent"
                if now >= next_hb:
                    self._send(sock, [P.PROTOCOL, P.HEARTBEAT])
                    next_hb = now + hb
        finally:
            self.joined = False
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)

    # -- messages ------------------------------------------------------------------------------
    def _handle(self, sock: zmq.Socket, frames: list) -> str:
        if len(frames) < 2 or frames[0].bytes != P.PROTOCOL:
            log.warning("worker %s: ignored a message that is not %s", self.name, P.PROTOCOL)
            return "ignored"
        cmd = frames[1].bytes
        if cmd == P.TASK:
            self._task(sock, frames)
            return "task"
        if cmd == P.HEARTBEAT:
            return "heartbeat"
        if cmd == P.WELCOME:
            try:
                info = P.loads(frames[2].bytes) if len(frames) > 2 else {}
                heartbeat_ms = int(info.get("heartbeat_ms", self.heartbeat_ms))
                liveness = int(info.get("liveness", self.liveness))
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("worker %s: ignored a WELCOME that does not parse: %s", self.name, exc)
                return "ignored"
            # The dispatcher's timing, within sane bounds (a peer could send anything).
            self.heartbeat_ms = min(max(heartbeat_ms, 10), 60_000)
            self.liveness = min(max(liveness, 2), 1000)
            log.info("worker %s: joined dispatcher %s", self.name, self.endpoint)
            return "welcome"
        if cmd == P.DISCONNECT:
            return "disconnect"
        log.warning("worker %s: ignored unknown command %r", self.name, cmd)
        return "ignored"

    def _chain(self, spec: bytes) -> list[Service]:
        chain = self._chains.get(spec)
        if chain is None:
            chain = build_chain(P.loads(spec))
            self._chains[spec] = chain
            while len(self._chains) > 16:
                self._chains.popitem(last=False)
        return chain

    def _send_done(self, sock: zmq.Socket) -> None:
        """Send the answers the processing thread finished (this session's only)."""
        while True:
            try:
                self._done_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        while True:
            try:
                session, reply = self._done.get_nowait()
            except queue.Empty:
                return
            if session != self._session_no:
                log.info(
                    "worker %s: dropped the answer to a task of an earlier connection", self.name
                )
                continue
            self._send(sock, reply)

    def _send(self, sock: zmq.Socket, frames: list) -> None:
        """Never block on a dispatcher that stopped reading: what it cannot take is lost, and it
        resends the task when it misses the answer."""
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning(
                "worker %s: the dispatcher is not reading; a message was dropped", self.name
            )

    def _process_loop(self) -> None:
        """The processing thread: run each task's chain, hand the answer to the main thread."""
        done_tx = self.ctx.socket(zmq.PUSH)
        done_tx.linger = 0
        done_tx.connect(self._done_addr)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                session, frames = job
                if session != self._session_no:
                    continue  # its dispatcher is gone: the task went to another worker
                reply = self._answer(frames)
                if reply is not None:
                    self._done.put((session, reply))
                    done_tx.send(b"")
        finally:
            done_tx.close(0)

    def _task(self, sock: zmq.Socket, frames: list) -> None:
        if log.isEnabledFor(logging.DEBUG) and len(frames) > 2:
            try:
                h = P.TaskHeader.unpack(frames[2].buffer)
                log.debug("worker %s: task for segment %d part %d", self.name, h.segment, h.part)
            except ValueError:
                pass
        self._jobs.put((self._session_no, frames))

    def _answer(self, frames: list) -> list | None:
        try:
            header = P.TaskHeader.unpack(frames[2].buffer)
        except (ValueError, IndexError) as exc:
            log.warning("worker %s: dropped a malformed task: %s", self.name, exc)
            return None
        service = "(decode)"
        try:
            chain = self._chain(frames[3].bytes)
            service = "(frames)"
            batch = PacketBatch.from_frames([f.buffer for f in frames[4:]])
            if len(batch) != header.count:
                raise ValueError(f"task says {header.count} packets, batch holds {len(batch)}")
            out = PacketBatch(
                batch.data,
                batch.offsets,
                batch.caplen,
                batch.origlen,
                batch.ts_ns,
                batch.iface,
                batch.interfaces,
                0,
            )
            counters: dict[str, dict[str, int]] = {}
            spent: dict[str, int] = {}
            for svc in chain:
                service = svc.name
                t0 = time.monotonic_ns()
                out = svc.process(out)
                spent[svc.name] = spent.get(svc.name, 0) + time.monotonic_ns() - t0
                counters[svc.name] = svc.take_counters()
            for name, ns in spent.items():
                # The service's time on the task rides with its counters (docs/protocol.md).
                counters[name] = {**counters[name], P.SERVICE_TIME_COUNTER: ns}
            service = "(result)"
            kept = out.seq if out.has_explicit_seq else None
            if kept is None and len(out) != len(batch):
                raise ValueError(
                    f"chain returned {len(out)} of {len(batch)} packets without saying which"
                )
            result = out.with_seq(kept)
            result.first_seq = 0
            parts = result.to_frames()
        except Exception as exc:  # any failure is reported, never fatal to the worker
            self.tasks_failed += 1
            log.warning(
                "worker %s: segment %d part %d failed in %s: %s",
                self.name,
                header.segment,
                header.part,
                service,
                exc,
            )
            return [
                P.PROTOCOL,
                P.FAIL,
                header.pack(),
                P.dumps({"service": service, "error": f"{type(exc).__name__}: {exc}"}),
            ]
        self.tasks_done += 1
        with self._service_lock:
            self.service_ns.update(spent)
        return [P.PROTOCOL, P.RESULT, header.pack(), P.dumps(counters), *parts]


def _monitor_event(monitor: zmq.Socket) -> int:
    """The event number of the next message of a socket monitor (zmq_socket_monitor(3): a
    frame of a 16-bit event number and a 32-bit value in the host's byte order, then the
    endpoint). pyzmq's ``zmq.utils.monitor`` parses the same, but importing it imports asyncio,
    a fifth of a worker's start-up."""
    frames = monitor.recv_multipart()
    return struct.unpack_from("=H", frames[0])[0]


def kept_positions(seq: np.ndarray | None, count: int) -> np.ndarray:
    """The input positions a result kept (all of them when the result says nothing)."""
    return np.arange(count, dtype=np.int64) if seq is None else seq
