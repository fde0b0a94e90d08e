"""``pktx services``: every service this installation can run, with its parameters."""

from __future__ import annotations

import json
import sys


def add_commands(sub) -> None:
    s = sub.add_parser("services", help="list the processing services and their parameters")
    s.add_argument("names", nargs="*", metavar="SERVICE", help="only these (default: all)")
    s.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (a list of services) for scripts",
    )
    s.set_defaults(func=run_services)


def run_services(args) -> int:
    from engine.services import ServiceError, available, describe

    names = args.names or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        raise ServiceError(
            f"unknown service(s) {', '.join(unknown)}; available: {', '.join(available())}"
        )
    found = [describe(n) for n in names]
    if args.json:
        json.dump(found, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _print(found)
    return 0


def _print(found: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for service in found:
        title = f"[bold]{service['name']}[/bold]: {service['summary'] or service['error']}"
        console.print(
            title + f"  [dim]({service['origin']}, {service['target']})[/dim]", highlight=False
        )
        if not service["params"]:
            console.print("  no parameters", highlight=False)
            continue
        table = Table(box=None, padding=(0, 2), show_edge=False)
        for column in ("parameter", "type", "default", "help"):
            table.add_column(column, overflow="fold")
        for p in service["params"]:
            default = (
                "required" if p["required"] else "" if p["default"] is None else str(p["default"])
            )
            help_text = p["help"]
            if p["choices"]:
                help_text += f" (one of: {', '.join(map(str, p['choices']))})"
            if p["secret"]:
                help_text += f" [secret; also {', '.join(p['also_as'])}]"
            table.add_row(p["name"], p["type"], default, help_text)
        console.print(table)
