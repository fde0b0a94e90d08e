"""What every ``pktx bench`` table ends with: the targets, met or missed, and the machine."""

from __future__ import annotations

import os
import platform


def print_verdicts(console, checks: list[tuple[str, bool]], extra: str = "") -> None:
    """One line per target, then one line naming the machine the numbers came from."""
    for name, ok in checks:
        console.print(f"  [{'green' if ok else 'red'}]{'met' if ok else 'MISSED'}[/] {name}")
    console.print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}"
        + (f", {extra}" if extra else "")
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the machine line."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
