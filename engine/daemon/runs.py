"""One job's delivery: a ``pktx deliver`` child process made from the job's spec.

A child process, not a thread: a delivery that crashes takes nothing else with it, its local
workers fork from a process without the daemon's threads, and it is exactly what ``pktx
deliver`` does by hand (the throughput ``pktx bench daemon`` compares with). The child dies
with the daemon (Linux's parent-death signal), so a daemon killed with SIGKILL leaves no
delivery running behind the state it will find on restart.

The child writes its usage so far every second (``--usage-json --usage-every``); the daemon
turns it into the job's cumulative report. A capture file into a capture file is delivered
from its start by each run, into an output that appears only when complete: a run's counters
then count the whole job, and a report never goes below the last one. A stream resumes: into
``zmq://`` as the stream ``job-ID`` (the receiver says where it stands, and a file source
starts there), into ``udp://`` from where the last run's usage record says it stood (a file
source; what was sent after that record is sent again). Its packet and byte counters are the
stream's own cumulative ones (``stream_position`` in the usage record: what the receiver
acknowledged, or what was sent), its time counters add to what the runs before it reported.
A live source (udp://, zmq://, iface:) cannot be replayed: a run's counters add to what the
runs before it reported.

File sources and sinks named by a job resolve inside the daemon's ``--files`` folder only: a
job is the broker's (and, behind it, a user's) word, not a licence to read or write any path.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from engine.daemon.sealing import SealingError, SealingKey, binding
from engine.daemon.standby import Standby
from engine.errors import EngineError
from engine.logs import CONTEXT_ENV, register_secret

log = logging.getLogger(__name__)

# The longest temporary folder a delivery's ipc sockets fit in: a unix socket's address is at
# most 107 bytes, and ``pktx deliver`` makes ``/pktx-XXXXXXXX/dispatcher`` in it.
IPC_ROOM = 107 - len("/pktx-XXXXXXXX/dispatcher")

LIVE_SCHEMES = ("udp://", "zmq://", "iface:")
# The environment variables a delivery finds its sealed parameters in (``--param
# SERVICE.PARAM_env=PKTX_SEALED_0``): never on its command line, where ``ps`` shows them.
SEALED_ENV = "PKTX_SEALED_"
# The counters a resuming stream carries itself (streams.Mark), cumulative over its runs.
STREAM_COUNTERS = ("packets_in", "packets_out", "bytes_in", "bytes_out")


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
    # The provider's sealing key and id: jobs' sealed parameters open with them (sealing.py).
    sealing: SealingKey | None = None
    provider_id: int | None = None


def _inside(folder: str | None, name: str, what: str) -> str:
    if folder is None:
        raise BadSpec(
            f"the job's {what} {name!r} is a file, and this daemon takes no file jobs "
            "(start it with --files DIR)"
        )
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


def opened(spec: dict, node: NodeOptions) -> dict[str, str]:
    """The job's sealed parameters, opened with the node's sealing key: ``{"encrypt.key":
    VALUE}``, exactly the names its request declared ({} when it declared none). `BadSpec`
    with the reason, never with what the box holds, when they cannot be had."""
    names = spec.get("sealed_params") or []
    if not names:
        return {}
    sealed = spec.get("sealed")
    if not isinstance(sealed, dict) or not sealed.get("box"):
        raise BadSpec("the job's request declared sealed parameters, but its claim brought none")
    if node.sealing is None or node.provider_id is None:
        raise BadSpec(
            "the job has sealed parameters and this daemon holds no sealing key of its provider"
        )
    if sealed.get("sealed_to") != node.sealing.public:
        raise BadSpec(
            "the job's parameters are sealed to another key than the one this daemon "
            f"holds ({node.sealing.fingerprint})"
        )
    try:
        box = base64.b64decode(sealed["box"], validate=True)
        params = node.sealing.open(box, binding(int(spec["award_id"]), node.provider_id))
    except (ValueError, TypeError, KeyError):
        raise BadSpec("the job's sealed parameters are not a sealed box") from None
    except SealingError as exc:
        raise BadSpec(str(exc)) from None
    if sorted(params) != sorted(names):
        raise BadSpec(
            f"the sealed box holds other parameters than the request declared ({', '.join(names)})"
        )
    return params


def command(
    spec: dict,
    node: NodeOptions,
    usage_path: str,
    lease: tuple[str, float] | None = None,
    sealed: tuple[str, ...] = (),
    resume: tuple[str, ...] = (),
    parent: int | None = None,
) -> list[str]:
    """The ``pktx deliver`` command line for a job's spec (``lease``: the file the daemon
    touches while it holds the job's lease, and how stale it may get; ``sealed``: the names of
    its sealed parameters, found by the delivery in ``SEALED_ENV`` 0, 1, ...; ``resume``: the
    options that resume its stream; ``parent``: the pid the delivery dies with)."""
    source = endpoint(spec.get("source"), node.files, "source")
    sink = endpoint(spec.get("sink"), node.files, "sink")
    if not source.startswith(LIVE_SCHEMES) and not os.path.isfile(source):
        raise BadSpec(f"the job's source {spec.get('source')!r} is not in the files folder")
    services = spec.get("services") or ["identity"]
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise BadSpec("the job's services are not a list of names")
    argv = [
        sys.executable,
        "-m",
        "engine.cli",
        "deliver",
        source,
        "-o",
        sink,
        "--service",
        ",".join(services),
        "--usage-json",
        usage_path,
        "--usage-every",
        f"{node.usage_every_s:g}",
        "-q",
    ]
    for param in spec.get("params") or []:
        if not isinstance(param, str) or "=" not in param:
            raise BadSpec(f"the job's parameter {param!r} is not SERVICE.KEY=VALUE")
        argv += ["--param", param]
    for param in node.params:  # the node's own, unless the job brought that one sealed
        name = param.partition("=")[0]
        if name.rpartition(".")[0] in services and _base(name) not in sealed:
            argv += ["--param", param]
    for i, name in enumerate(sealed):
        argv += ["--param", f"{name}_env={SEALED_ENV}{i}"]
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
    return argv + list(resume)


def resume_options(job_id: int, spec: dict, previous: str) -> tuple[str, ...]:
    """How a run of the job resumes its stream: a ``zmq://`` sink as the stream ``job-ID``;
    a file into ``udp://`` from the ``previous`` run's usage record, when there is one."""
    sink, source = str(spec.get("sink") or ""), str(spec.get("source") or "")
    if sink.startswith("zmq://"):
        return ("--stream-id", f"job-{job_id}")
    if sink.startswith("udp://") and not source.startswith(LIVE_SCHEMES):
        try:
            with open(previous, encoding="utf-8") as f:
                if isinstance(json.load(f).get("stream_position"), dict):
                    return ("--resume-from", previous)
        except (OSError, ValueError, AttributeError):
            pass
    return ()


def _base(name: str) -> str:
    """``encrypt.key_env`` -> ``encrypt.key`` (a secret given another way is the same one)."""
    for suffix in ("_env", "_file"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def counters_of(usage: dict) -> dict:
    """A usage record's counters as a usage report carries them."""
    return {
        "packets_in": int(usage.get("packets_in", 0)),
        "packets_out": int(usage.get("packets_out", 0)),
        "bytes_in": int(usage.get("bytes_in", 0)),
        "bytes_out": int(usage.get("bytes_out", 0)),
        "seconds": int(usage.get("duration_ns", 0)) // 1_000_000_000,
        "windows_met": int(usage.get("min_rate_windows_met", 0)),
        "windows_missed": int(usage.get("min_rate_windows_missed", 0)),
    }


class Run:
    """A job's delivery under way (``base``: counters of earlier runs a live source adds to)."""

    positioned = False  # a stream that keeps its position (set in __init__)

    def __init__(
        self,
        job_id: int,
        spec: dict,
        node: NodeOptions,
        folder: str,
        base: dict,
        lease_s: float | None = None,
        standby: Standby | None = None,
    ) -> None:
        self.job_id, self.spec = job_id, spec
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self.usage_path = os.path.join(folder, "usage.json")
        self.stderr_path = os.path.join(folder, "stderr.log")
        # The last record of an older run of the job (killed with the daemon, stopped): where
        # its udp:// stream stood. A run killed before its first record leaves the one before.
        previous = os.path.join(folder, "previous-usage.json")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.usage_path, previous)
        # Touched on every renewal of the job's lease: the delivery stops itself when the
        # daemon stops renewing it (paused, cut off), so it never runs beside a successor.
        self.lease_path = os.path.join(folder, "lease")
        self.renewed()
        secrets = opened(spec, node)
        for value in secrets.values():  # never in this daemon's log lines either
            register_secret(value)
        self.argv = command(
            spec,
            node,
            self.usage_path,
            (self.lease_path, lease_s) if lease_s else None,
            sealed=tuple(secrets),
            resume=resume_options(job_id, spec, previous),
            parent=os.getpid(),
        )
        # Sealed parameters reach the delivery through its environment (readable by this user
        # only, /proc/PID/environ), not its command line.
        extra = {
            **{f"{SEALED_ENV}{i}": value for i, value in enumerate(secrets.values())},
            # its log lines name the job (engine.logs)
            CONTEXT_ENV["job_id"]: str(job_id),
            CONTEXT_ENV["award_id"]: str(spec.get("award_id", "")),
        }
        del secrets
        # The delivery's temporary folder (its local workers' ipc sockets) inside the job's
        # folder, emptied before each run: a run killed with the daemon leaves nothing in the
        # node's $TMPDIR. Not where the path would be too long for a socket's address.
        tmp = os.path.abspath(os.path.join(folder, "tmp"))
        shutil.rmtree(tmp, ignore_errors=True)
        if len(tmp) <= IPC_ROOM:
            os.makedirs(tmp, mode=0o700)
            extra["TMPDIR"] = tmp
        self.live = self.argv[4].startswith(LIVE_SCHEMES)
        # A file appears only when complete: its usage is reported at the end. A stream's
        # receiver has what was sent: reported as it goes.
        self.streams = self.argv[6].startswith(LIVE_SCHEMES)
        # A stream that keeps its position: its packet counters are its own, cumulative.
        self.positioned = self.argv[6].startswith("zmq://") or (
            self.argv[6].startswith("udp://") and not self.live
        )
        self.base = base if self.live or self.positioned else {}
        if not self.streams:  # a file's folder inside the files folder is made for it
            os.makedirs(os.path.dirname(self.argv[6]), exist_ok=True)
            self._remove_partials(self.argv[6])
        self.started_ns = time.time_ns()
        self.stopping = False
        self.block_over = False  # stopped because its block of time ended: a completion
        # The node's spare delivery process, its start-up already paid (standby.py); the
        # ordinary start when there is none or it has ended.
        proc = standby.take(self.argv, extra, self.stderr_path) if standby else None
        self.warm = proc is not None
        if proc is None:
            with open(self.stderr_path, "wb") as err:
                # Its own process group (its workers with it: stopped together). No
                # preexec_fn: the child sets its parent-death signal itself
                # (--die-with-parent), so this is a vfork, not a fork of the daemon.
                proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env={**os.environ, **extra},
                    process_group=0,
                )
        del extra
        self.proc = proc
        log.info(
            "job %d: delivering %s -> %s (pid %d%s)",
            job_id,
            self.argv[4],
            self.argv[6],
            self.proc.pid,
            ", the spare started ahead" if self.warm else "",
        )

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
        file (delivered afresh, the output appears once), a file into a stream (it resumes:
        exactly into ``zmq://``, from its last usage record into ``udp://``), or anything
        into ``udp://``. Not a live source into ``zmq://``: stopped, a live source ends its
        stream, and the receiver with it."""
        return not self.live or self.argv[6].startswith("udp://")

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
        if not self.live and not self.positioned:
            return mine
        total = {c: int(self.base.get(c, 0)) + mine.get(c, 0) for c in set(self.base) | set(mine)}
        position = (usage or {}).get("stream_position")
        if self.positioned and isinstance(position, dict):
            total.update({c: int(position.get(c, 0)) for c in STREAM_COUNTERS})
        return total

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
        return {
            "bytes": total.get("bytes_out", 0),
            "packets": total.get("packets_out", 0),
            "windows": total.get("windows_met", 0) + total.get("windows_missed", 0),
            "windows_met": total.get("windows_met", 0),
            "started_at": usage.get("start"),
            "ended_at": usage.get("end"),
            "errors": len(usage.get("dead_workers", [])) + len(usage.get("poison_segments", [])),
        }
