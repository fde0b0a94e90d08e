"""The ``pktx`` command line: one entry point, a subcommand per job.

Each area's subcommands live in a module of their own (``capture_commands``,
``delivery_commands``, ``demo``, ``bench``); the broker's are added by ``broker.cli``, which
imports nothing heavy until a broker command runs. Building the parser loads no numpy, numba
or SQLAlchemy: a command pays only for what it uses.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from engine import __version__
from engine.cli import bench, capture_commands, delivery_commands, demo
from engine.cli.delivery_commands import Terminated
from engine.errors import EngineError

log = logging.getLogger("pktx")


def version_text() -> str:
    import numba
    import numpy

    from engine.capture import backend

    return (f"pktx {__version__} ({backend.describe()}; numpy {numpy.__version__}, "
            f"numba {numba.__version__}, Python {sys.version.split()[0]})")


class _VersionAction(argparse.Action):
    """--version, computed only when asked for (it imports numba)."""

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(version_text() + "\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pktx", description="packet-exchange: a market for packet-processing services "
                                 "and the engine that delivers them.")
    p.add_argument("--version", action=_VersionAction, nargs=0,
                   help="show the version and whether compiled extensions are in use")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    capture_commands.add_commands(sub)
    demo.add_commands(sub)
    delivery_commands.add_commands(sub)
    bench.add_commands(sub)
    try:
        from broker.cli import add_broker_commands
    except ImportError:
        pass
    else:
        add_broker_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="pktx: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        sys.stderr.write(f"pktx: error: {exc}\n")
        return 1
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
