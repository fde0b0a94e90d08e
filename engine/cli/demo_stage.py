"""The processes of ``pktx demo`` on loopback: the broker server and a provider's delivery
daemon, each a ``pktx`` child logging to a file in the demo's folder, all stopped on the way
out (SIGTERM, then SIGKILL) whatever happened."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from engine.errors import EngineError

STOP_GRACE_S = 10.0


class DemoFailed(EngineError):
    """A process of the demo did not start or ended early (the message names its log)."""


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: the demo stops as on Ctrl-C (its processes in order), and exits
    with the signal's status."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP (a closed terminal, ``timeout``, a supervisor) stop the demo
    the way Ctrl-C does: Python's default for them ends the process at once and leaves its
    broker and daemon running."""

    def stop(signum, _frame) -> None:
        raise Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)


def _ends_with(parent: int):
    """For ``preexec_fn``: the child gets SIGTERM from the kernel when the demo ends, even by
    SIGKILL (Linux's parent-death signal), and does not start at all if the demo has already
    ended. The demo forks from its main thread only, which has no other thread at the time."""

    prctl = None
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to set
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dlopen after fork

    def set_up() -> None:
        if prctl is not None:
            prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return set_up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pktx_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *args]


class Stage:
    """The demo's child processes; ``with Stage(folder) as stage:`` stops every one it
    started when the block ends, by an error or Ctrl-C too."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = f"sqlite:///{folder / 'broker.sqlite3'}"
        self.url = ""
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop_all()

    def _start(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "wb") as log:
            # Its own process group: a Ctrl-C at the terminal reaches the demo only, which then
            # stops its children in order (the daemon drains before the broker goes).
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=_ends_with(os.getpid()),
            )
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.folder / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip("\n").split("\n")[-lines:])

    def check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise DemoFailed(
                f"the {name} exited with status {proc.returncode}; the end of "
                f"{self.folder / (name + '.log')}:\n{self.log_tail(name)}"
            )

    def start_broker(self, timeout: float = 60.0) -> str:
        """``pktx broker serve`` on the demo's SQLite file and a free loopback port; its URL
        once it answers /healthz."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._start(
            "broker",
            pktx_argv(
                "broker", "serve", "--db", self.db, "--port", str(port), "--log-level", "warning"
            ),
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            self.check_alive("broker")
            if time.monotonic() > deadline:
                raise DemoFailed(f"the broker did not answer within {timeout:g} s")
            time.sleep(0.1)

    def admin_token(self) -> str:
        """The store's first admin and its key (``pktx broker admin init``)."""
        done = subprocess.run(
            pktx_argv("broker", "admin", "init", "--db", self.db),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise DemoFailed(f"pktx broker admin init: {done.stderr.strip()}")
        return json.loads(done.stdout)["token"]

    def start_daemon(
        self,
        name: str,
        key: str,
        files: Path,
        workers: int,
        params: list[str],
        secrets: dict[str, str],
    ) -> list[str]:
        """``pktx daemon`` for the provider whose key this is, with the node's service
        ``params``; ``secrets`` maps a service's key parameter (``encrypt.key``) to its value,
        handed over in the environment. Returns the command line (which holds no key)."""
        env = {**os.environ, "PKTX_BROKER_KEY": key}
        argv = pktx_argv(
            "daemon",
            "--broker",
            self.url,
            "--state",
            str(self.folder / "daemon"),
            "--files",
            str(files),
            "--workers",
            str(workers),
            "--name",
            name,
            "--report-every",
            "1",
            "--grace",
            "5",
        )
        for param in params:
            argv += ["--param", param]
        for n, (param, value) in enumerate(sorted(secrets.items())):
            variable = f"PKTX_DEMO_SECRET_{n}"
            env[variable] = value
            argv += ["--param", f"{param}_env={variable}"]
        self._start("daemon", argv, env)
        return argv

    def stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # it and whatever it started
            proc.wait()

    def stop_all(self) -> None:
        """The daemon first (it reports to the broker as it drains), then the broker."""
        for name in ("daemon", *[n for n in self.procs if n != "daemon"]):
            try:
                self.stop(name)
            except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
                for proc in self.procs.values():
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                raise
