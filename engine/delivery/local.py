"""Local worker processes of ``pktx deliver --workers N``.

Forked from the dispatcher's process where the platform can (``fork``): a child starts with
Python, numpy, ZeroMQ and the engine already imported, so N local workers cost no start-up of
their own (a started ``pktx worker`` imports all of that again, about 0.3 s of CPU per process
on the 2-core machine the numbers in the README come from). The child runs the same
:class:`~engine.delivery.worker.Worker` on a fresh ZeroMQ context over the same wire as a
remote ``pktx worker``; ``spawn`` starts that command instead (the only way on platforms
without ``fork``, and what ``--worker-start spawn`` asks for).

Both kinds are handled through the same four calls as ``subprocess.Popen`` (``poll``,
``wait``, ``terminate``, ``kill``, plus ``pid`` and ``returncode``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time

START_METHODS = ("fork", "spawn")


def default_start_method() -> str:
    return "fork" if hasattr(os, "fork") and sys.platform.startswith("linux") else "spawn"


class ForkedWorker:
    """A forked local worker, driven like ``subprocess.Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while (code := self.poll()) is None:
            if timeout is not None and deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"local worker {self.pid}", timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _close_inherited_fds() -> None:
    """Close every descriptor the child inherited but stdin/out/err: a socket or file of the
    parent (a test's peer, another stream's connection) must not stay open because a worker
    holds a copy of it."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, 4096)
        return
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, already gone
                os.close(fd)


def _child(endpoint: str, name: str, worker_kw: dict) -> int:
    # The parent's objects live on in this process but are never ours to finalize: frozen,
    # the collector leaves them (a parent's file object closed here could close a descriptor
    # number this process has reused).
    gc.freeze()
    _close_inherited_fds()
    from engine.delivery.worker import Worker

    w = Worker(endpoint, name=name, exit_on_disconnect=True, max_idle_s=30.0, **worker_kw)
    w.install_signal_handlers()
    return w.run()


def fork_worker(endpoint: str, name: str, **worker_kw) -> ForkedWorker:
    """Fork a local worker connecting to ``endpoint`` (keyword arguments go to ``Worker``)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.flush()  # else what the parent buffered would be written twice
    # The parent's handlers (a SIGTERM that raises in the dispatcher) must never run in the
    # child: the signals wait, blocked, until the child has set its own.
    blocked = {signal.SIGINT, signal.SIGTERM}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return ForkedWorker(pid)
    code = 1
    try:
        # Until the worker sets its own (drain, then leave), a signal ends the child at once.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask - blocked)
        code = _child(endpoint, name, worker_kw)
    except BaseException:  # anything: reported, and never back into the caller's code
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:  # a closed stderr: nothing more to say
            pass
    finally:
        os._exit(code if isinstance(code, int) else 1)
    raise AssertionError("unreachable")  # pragma: no cover


def spawn_worker(
    endpoint: str,
    name: str,
    *,
    credit: int,
    heartbeat_ms: int,
    liveness: int,
    curve_dir: str | None = None,
    extra_args: list[str] | None = None,
) -> subprocess.Popen:
    """Start ``pktx worker`` connecting to ``endpoint``."""
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "worker",
        "--connect",
        endpoint,
        "--exit-on-disconnect",
        "--credit",
        str(credit),
        "--heartbeat-ms",
        str(heartbeat_ms),
        "--liveness",
        str(liveness),
        "--max-idle",
        "30",
        "--quiet",
        *(extra_args or []),
        "--name",
        name,
    ]
    if curve_dir:
        cmd += ["--curve", curve_dir]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
