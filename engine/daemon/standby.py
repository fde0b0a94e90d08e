"""A delivery process started before its job: the daemon's warm spare.

Most of a short job's wall time as ``pktx deliver`` is start-up: the interpreter, numpy,
ZeroMQ, the capture readers and the service registry (about 0.25 s on a quiet 2-core machine,
more than half of a 0.4 s job). The daemon pays it while the node is idle: it keeps one
process that has imported all of that and waits on a pipe for its job. When a job is claimed,
the daemon writes the job's ``pktx deliver`` arguments, its environment additions (the sealed
parameters, the job's log context) and its log file down the pipe and closes it; the process
takes its log file as its stderr and runs the command exactly as a started ``pktx deliver``
would. The next spare is started when the node is idle again, never beside a running
delivery, whose CPU it would take.

The pipe is private to the daemon and the process: sealed values sent down it appear on no
command line and not in ``/proc/PID/environ`` either (which shows the environment a process
started with). A spare whose daemon ends reads end-of-file and exits; it also has the
parent-death signal set, as a started delivery does with ``--die-with-parent``.

Run as ``python -m engine.daemon.standby PARENT_PID``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

READY = "ready for a job"  # what a spare writes to its log once its imports are done

# What a spare imports while it waits: what ``pktx deliver`` loads before its first packet.
WARM_MODULES = (
    "engine.cli",
    "engine.delivery.deliver",
    "engine.delivery.local",
    "engine.delivery.worker",
    "engine.services",
)


class Standby:
    """One spare delivery process, started now (its imports run in the background)."""

    def __init__(self, env: dict[str, str], log_path: str) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as err:
            # Its own process group, as a started delivery's (stopped with its workers).
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.daemon.standby", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                process_group=0,
            )

    def ready(self) -> bool:
        """Whether the spare has done its imports and waits for its job."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return READY in f.read()
        except OSError:
            return False

    def take(self, argv: list[str], env: dict[str, str], stderr_path: str):
        """Hand the spare its job (``argv``: the ``pktx deliver`` command line as it would be
        started, ``env``: what its environment gains); its ``Popen``, or None when the spare
        has ended (the caller starts the delivery the ordinary way)."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            self._reason()
            return None
        message = {"argv": argv[3:], "env": env, "stderr": stderr_path}
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.close()
        except OSError:  # it ended between the poll and the write
            self.close()
            self._reason()
            return None
        with contextlib.suppress(OSError):  # its start-up is over; its job's log is its own
            os.unlink(self.log_path)
        return self.proc

    def _reason(self) -> None:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
        except OSError:
            lines = []
        log.warning(
            "the spare delivery process ended before its job (%s); starting the delivery",
            lines[-1][:300] if lines else f"exit status {self.proc.returncode}",
        )

    def close(self) -> None:
        """End an unused spare (closing its pipe ends it; SIGKILL if it does not)."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()


def main(argv: list[str]) -> int:
    import importlib

    from engine.cli.delivery_commands import _die_with_parent
    from engine.errors import EngineError

    try:
        _die_with_parent(int(argv[0]))
    except (EngineError, IndexError, ValueError) as exc:
        sys.stderr.write(f"pktx standby: {exc}\n")
        return 1
    for name in WARM_MODULES:
        importlib.import_module(name)
    from engine import services

    for name in services.BUILTINS:  # the built-in services' modules (cryptography, lz4, ...)
        with contextlib.suppress(services.ServiceError):
            services.service_class(name)
    sys.stderr.write(f"pktx standby: {READY} (pid {os.getpid()})\n")
    sys.stderr.flush()
    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # the daemon closed the pipe: no job for this spare
    job = json.loads(line)
    fd = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.update(job["env"])
    import tempfile

    tempfile.tempdir = None  # $TMPDIR as the job gives it, not as a look before found it
    sys.argv = ["pktx", *job["argv"]]
    from engine.cli import main as pktx

    try:
        code = pktx(job["argv"])
    except SystemExit as exc:  # a usage error (2)
        code = exc.code if isinstance(exc.code, int) else 1
    # The delivery is over: its output renamed into place, its usage record written, its
    # workers reaped. The interpreter's teardown (every module's objects freed one by one,
    # about 0.1 s on 2 busy cores) would only delay the daemon's news of it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
