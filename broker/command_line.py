"""What the broker's commands share: the --db option, errors as one line, JSON output, the
store, and the store's first admin (whose authority operator commands act with)."""

from __future__ import annotations

import argparse
import json
import sys

from broker.errors import BrokerError


def db_option(parser) -> None:
    parser.add_argument(
        "--db",
        help="database URL (default: $PKTX_BROKER_DB, else a SQLite file in ~/.local/share/pktx)",
    )


def guarded(command):
    """Run ``command``; a `BrokerError` becomes one line (``pktx: error: ...``, as every
    command's) and exit status 1."""

    def run(args) -> int:
        try:
            return command(args)
        except BrokerError as exc:
            sys.stderr.write(f"pktx: error: {exc}\n")
            return 1

    return run


def json_everywhere(sub, *, but=()) -> None:
    """``--json`` on every command under ``sub`` (but those in ``but``, and those that have
    their own): what they print is one JSON document already, and every ``pktx`` command that
    reports something takes the flag, so a script can always give it."""
    for parser in set(sub.choices.values()):
        if parser in but:
            continue
        children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for child in children:
            json_everywhere(child, but=but)
        if not children and not any("--json" in a.option_strings for a in parser._actions):
            parser.add_argument(
                "--json",
                action="store_true",
                help="print one JSON document on stdout (this command always does)",
            )


def print_json(value) -> int:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    return 0


def open_store(args):
    from broker.store import Store

    return Store(args.db)


def first_admin(session):
    from sqlalchemy import select

    from broker.actors import Actor
    from broker.models import Admin

    first = session.scalar(select(Admin).order_by(Admin.id).limit(1))
    if first is None:
        raise BrokerError("no admin yet: run 'pktx broker admin init' first")
    return Actor("admin", first.id)
