"""The ``pktx`` command line: one entry point, a subcommand per job.

Each area's subcommands live in a module of their own (``capture_commands``,
``delivery_commands``, ``demo``, ``bench``); the broker's are added by ``broker.cli``, which
imports nothing heavy until a broker command runs. Building the parser loads no numpy, numba
or SQLAlchemy: a command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

# The engine does no linear algebra: numpy's OpenBLAS need not start a thread per core when it
# loads (and stop them at exit), which is 40% of importing numpy on a 2-core machine. Set before
# anything imports numpy; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# A daemon SIGTERMed (or SIGINTed) while it starts drains as one signalled later does, exiting
# 0: from here, before the command line's modules load and its parser is built, until its own
# handlers are in place (``cmd_daemon`` takes these), the signal is kept instead of ending it.
EARLY_SIGNALS: list[int] = []
from engine.cli.config import command_of  # noqa: E402 - light, and needed first

if os.path.basename(sys.argv[0]) in ("pktx", "__main__.py", "-m") and (
    command_of(sys.argv[1:]) == "daemon"
):
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, lambda signum, frame: EARLY_SIGNALS.append(signum))

from engine import logs  # noqa: E402 - after the early signals above
from engine.cli import (  # noqa: E402 - after the early signals above
    bench,
    capture_commands,
    completion,
    config,
    daemon_commands,
    delivery_commands,
    demo,
    service_commands,
)
from engine.cli.delivery_commands import Terminated  # noqa: E402 - after the early signals above
from engine.errors import EngineError  # noqa: E402 - after the early signals above

log = logging.getLogger("pktx")


def version_text() -> str:
    import numba
    import numpy

    from engine import __version__
    from engine.capture import backend

    return (
        f"pktx {__version__} ({backend.describe()}; numpy {numpy.__version__}, "
        f"numba {numba.__version__}, Python {sys.version.split()[0]})"
    )


class _VersionAction(argparse.Action):
    """--version, computed only when asked for (it imports numba)."""

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(version_text() + "\n")
        parser.exit()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``pktx`` parser. Given the command line, the broker's commands are added only when
    it may need them (a ``broker`` command, help, or no command): the others do not pay for
    building its two dozen subparsers."""
    p = argparse.ArgumentParser(
        prog="pktx",
        description="packet-exchange: a market for packet-processing services "
        "and the engine that delivers them.",
    )
    p.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="show the version and whether compiled extensions are in use",
    )
    add_output_options(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    capture_commands.add_commands(sub)
    demo.add_commands(sub)
    delivery_commands.add_commands(sub)
    service_commands.add_commands(sub)
    daemon_commands.add_commands(sub)
    bench.add_commands(sub)
    config.add_commands(sub)
    completion.add_commands(sub)
    for name in config.CONFIGURABLE:
        config.add_config_option(sub.choices[name])
    if argv is None or not _engine_command(argv, set(sub.choices)):
        try:
            from broker.cli import add_broker_commands
        except ImportError:
            pass
        else:
            add_broker_commands(sub)
    _everywhere(p)
    return p


def add_output_options(p: argparse.ArgumentParser, *, below: bool = False) -> None:
    """-q, -v and --log-format: the same three on every command, before or after its name
    (``below``: on a subcommand, where a value not given must not undo one given before)."""
    keep: dict[str, Any] = {"default": argparse.SUPPRESS} if below else {}
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only: no progress display, no summary line",
        **keep,
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more log output (-vv: debug)",
        **({"default": 0} | keep),
    )
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text lines, or JSON lines for a log collector (default: $PKTX_LOG_FORMAT, else text)",
        **({"default": os.environ.get("PKTX_LOG_FORMAT") or "text"} | keep),
    )


def _everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                if not any("--log-format" in a.option_strings for a in child._actions):
                    add_output_options(child, below=True)
                _everywhere(child)


SERVICES = ("worker", "daemon")  # long-running: they log what they do (info) by default


def _serves(args) -> bool:
    return args.command in SERVICES or (
        args.command == "broker" and getattr(args, "broker_command", None) == "serve"
    )


def _engine_command(argv: list[str], engine_commands: set[str]) -> bool:
    """Whether ``argv`` runs one of the engine's own commands (the first word that is not an
    option; pktx's own options take no value)."""
    if any(a in ("-h", "--help") for a in argv):
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command in engine_commands


def _stdout_closed() -> bool:
    """Whether standard output is a pipe nobody reads any more (its write end polls as an
    error)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    command = config.command_of(argv)
    if command in config.CONFIGURABLE and not any(a in ("-h", "--help") for a in argv):
        try:  # flags over environment over the file over defaults
            config.resolve(parser, command, argv)
        except config.ConfigError as exc:
            sys.stderr.write(f"pktx: error: {exc}\n")
            return 2
    args = parser.parse_args(argv)
    if args.log_format not in logs.FORMATS:  # from $PKTX_LOG_FORMAT
        parser.error(
            f"PKTX_LOG_FORMAT is one of {', '.join(logs.FORMATS)}, not {args.log_format!r}"
        )
    logs.setup(
        args.command or "",
        fmt=args.log_format,
        verbose=args.verbose,
        quiet=args.quiet,
        service=_serves(args),
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        sys.stderr.write(f"pktx: error: {exc}\n")
        return 1
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a socket or a child's pipe: a failure like any other
            sys.stderr.write(f"pktx: error: {exc}\n")
            return 1
        # ``pktx ... | head``: the reader took what it wanted. Quiet, with the status a
        # process killed by SIGPIPE has (Python ignores SIGPIPE so sockets can raise instead).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"pktx: error: {exc}\n")
        return 1
    except Terminated:
        sys.stderr.write("pktx: terminated (SIGTERM); partial output removed\n")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        sys.stderr.write("pktx: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
