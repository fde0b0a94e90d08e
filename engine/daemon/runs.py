"""One job's delivery: a ``pktx deliver`` child process made from the job's spec.

A child process, not a thread: a delivery that crashes takes nothing else with it, its local
workers fork from a process without the daemon's threads, and it is exactly what ``pktx
deliver`` does by hand (the throughput ``pktx bench daemon`` compares with). The child dies
with the daemon (Linux's parent-death signal), so a daemon killed with SIGKILL leaves no
delivery running behind the state it will find on restart.

The child writes its usage so far every second (``--usage-json --usage-every``); the daemon
turns it into the job's cumulative report. A source that can be read again (a capture file) is
delivered from its start by each run, into an output that appears only when complete: a run's
counters then count the whole job, and a report never goes below the last one. A live source
(udp://, zmq://, iface:) cannot be replayed: a run's counters add to what the runs before it
reported.

File sources and sinks named by a job resolve inside the daemon's ``--files`` folder only: a
job is the broker's (and, behind it, a user's) word, not a licence to read or write any path.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from engine.errors import EngineError

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("udp://", "zmq://", "iface:")


class BadSpec(EngineError):
    """The job cannot be run as its spec says (the reason goes to the broker as a failure)."""


@dataclass
class NodeOptions:
    """What the node gives every delivery."""

    workers: int | None = None
    bind: str | None = None
    curve_dir: str | None = None
    files: str | None = None  # the folder file sources and sinks resolve in
    usage_every_s: float = 1.0
    # The node's own service parameters (SERVICE.KEY=VALUE), given to each job whose chain has
    # that service: keys stay on the node (as key_env/key_file), never in the broker's specs.
    params: tuple[str, ...] = ()


def _inside(folder: str | None, name: str, what: str) -> str:
    if folder is None:
        raise BadSpec(f"the job's {what} {name!r} is a file, and this daemon takes no file jobs "
                      "(start it with --files DIR)")
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise BadSpec(f"the job's {what} {name!r} is outside the daemon's files folder")
    return path


def endpoint(value: object, folder: str | None, what: str) -> str:
    """A job's source or sink as ``pktx deliver`` takes it."""
    if not isinstance(value, str) or not value or len(value) > 1000 or "\x00" in value:
        raise BadSpec(f"the job names no usable {what}")
    if value.startswith(LIVE_SCHEMES):
        return value
    if "://" in value:
        raise BadSpec(f"the job's {what} {value!r}: a capture file, udp://, zmq:// or iface:")
    return _inside(folder, value, what)


def command(spec: dict, node: NodeOptions, usage_path: str, lease: tuple[str, float] | None = None,
            parent: int | None = None) -> list[str]:
    """The ``pktx deliver`` command line for a job's spec (``lease``: the file the daemon
    touches while it holds the job's lease, and how stale it may get; ``parent``: the pid the
    delivery dies with)."""
    source = endpoint(spec.get("source"), node.files, "source")
    sink = endpoint(spec.get("sink"), node.files, "sink")
    if not source.startswith(LIVE_SCHEMES) and not os.path.isfile(source):
        raise BadSpec(f"the job's source {spec.get('source')!r} is not in the files folder")
    services = spec.get("services") or ["identity"]
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise BadSpec("the job's services are not a list of names")
    argv = [sys.executable, "-m", "engine.cli", "deliver", source, "-o", sink,
            "--service", ",".join(services), "--usage-json", usage_path,
            "--usage-every", f"{node.usage_every_s:g}", "-q"]
    for param in spec.get("params") or []:
        if not isinstance(param, str) or "=" not in param:
            raise BadSpec(f"the job's parameter {param!r} is not SERVICE.KEY=VALUE")
        argv += ["--param", param]
    for param in node.params:
        if param.partition("=")[0].rpartition(".")[0] in services:
            argv += ["--param", param]
    share = spec.get("share") or {}
    of = int(share.get("of", 1) or 1)
    if of > 1:
        argv += ["--share", f"{int(share.get('index', 0))}/{of}"]
    for option, key in (("--max-rate", "max_rate_bps"), ("--min-rate", "min_rate_bps")):
        if spec.get(key):
            argv += [option, str(int(spec[key]))]
    if node.workers is not None:
        argv += ["--workers", str(node.workers)]
    if node.bind:
        argv += ["--bind", node.bind]
    if node.curve_dir:
        argv += ["--curve", node.curve_dir]
    if lease is not None:
        argv += ["--lease-file", lease[0], "--lease-timeout", f"{lease[1]:g}"]
    if parent is not None:
        argv += ["--die-with-parent", str(parent)]
    return argv


def counters_of(usage: dict) -> dict:
    """A usage record's counters as a usage report carries them."""
    return {"packets_in": int(usage.get("packets_in", 0)),
            "packets_out": int(usage.get("packets_out", 0)),
            "bytes_in": int(usage.get("bytes_in", 0)),
            "bytes_out": int(usage.get("bytes_out", 0)),
            "seconds": int(usage.get("duration_ns", 0)) // 1_000_000_000,
            "windows_met": int(usage.get("min_rate_windows_met", 0)),
            "windows_missed": int(usage.get("min_rate_windows_missed", 0))}


class Run:
    """A job's delivery under way (``base``: counters of earlier runs a live source adds to)."""

    def __init__(self, job_id: int, spec: dict, node: NodeOptions, folder: str,
                 base: dict, lease_s: float | None = None) -> None:
        self.job_id, self.spec = job_id, spec
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.usage_path = os.path.join(folder, "usage.json")
        self.stderr_path = os.path.join(folder, "stderr.log")
        with contextlib.suppress(FileNotFoundError):  # no record of an older run
            os.unlink(self.usage_path)
        # Touched on every renewal of the job's lease: the delivery stops itself when the
        # daemon stops renewing it (paused, cut off), so it never runs beside a successor.
        self.lease_path = os.path.join(folder, "lease")
        self.renewed()
        self.argv = command(spec, node, self.usage_path,
                            (self.lease_path, lease_s) if lease_s else None, os.getpid())
        self.live = self.argv[4].startswith(LIVE_SCHEMES)
        self.base = base if self.live else {}
        # A file appears only when complete: its usage is reported at the end. A stream's
        # receiver has what was sent: reported as it goes.
        self.streams = self.argv[6].startswith(LIVE_SCHEMES)
        if not self.streams:  # a file's folder inside the files folder is made for it
            os.makedirs(os.path.dirname(self.argv[6]), exist_ok=True)
            self._remove_partials(self.argv[6])
        self.started_ns = time.time_ns()
        self.stopping = False
        self.block_over = False  # stopped because its block of time ended: a completion
        with open(self.stderr_path, "wb") as err:
            # Its own process group (its workers with it: stopped together). No preexec_fn:
            # the child sets its parent-death signal itself (--die-with-parent), so this is a
            # vfork, not a fork of the daemon.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         process_group=0)
        log.info("job %d: delivering %s -> %s (pid %d)", job_id, self.argv[4], self.argv[6],
                 self.proc.pid)

    @staticmethod
    def _remove_partials(sink: str) -> None:
        """A run killed with its daemon (SIGKILL) left its output's temporary file (the
        writer's ``.NAME.*.part``): it never became the output, and goes now."""
        folder, name = os.path.split(sink)
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.part")):
            with contextlib.suppress(OSError):
                os.unlink(stale)

    @property
    def restartable(self) -> bool:
        """Whether the delivery may be stopped and started again without loss: a file into a
        file (delivered afresh, the output appears once), or anything into ``udp://``."""
        return (not self.live and not self.streams) or self.argv[6].startswith("udp://")

    def renewed(self) -> None:
        with open(self.lease_path, "a"):
            pass
        os.utime(self.lease_path)

    def usage(self) -> dict | None:
        try:
            with open(self.usage_path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def counters(self) -> dict:
        """The job's cumulative counters as of this run's latest record."""
        usage = self.usage()
        mine = counters_of(usage) if usage else {}
        if not self.live:
            return mine
        return {c: int(self.base.get(c, 0)) + mine.get(c, 0) for c in set(self.base) | set(mine)}

    def poll(self) -> int | None:
        return self.proc.poll()

    def error(self) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                text = f.read()[-2000:]
        except OSError:
            text = ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return (lines[-1] if lines else f"exit status {self.proc.returncode}")[:500]

    def stop(self, grace_s: float = 10.0) -> None:
        """End the delivery: SIGTERM to ``pktx deliver`` (a live source completes what it
        has, its workers finishing their segments; a file delivery removes its partial
        output), then SIGKILL to it and its workers after ``grace_s``."""
        self.stopping = True
        if self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def measured(self) -> dict:
        """The run's measured record, for the broker's judgement of the delivery."""
        usage = self.usage() or {}
        total = self.counters()
        return {"bytes": total.get("bytes_out", 0), "packets": total.get("packets_out", 0),
                "windows": total.get("windows_met", 0) + total.get("windows_missed", 0),
                "windows_met": total.get("windows_met", 0),
                "started_at": usage.get("start"), "ended_at": usage.get("end"),
                "errors": len(usage.get("dead_workers", [])) + len(usage.get("poison_segments",
                                                                             []))}
