"""Progress bars (rich) for commands whose work has a known size: shown on a terminal only,
never with ``-q`` or ``--json``, never into a pipe or a log file."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def wanted(args) -> bool:
    """A bar for this command: stderr is a terminal, and neither -q nor --json was given."""
    return (
        not getattr(args, "quiet", False)
        and not getattr(args, "json", False)
        and sys.stderr.isatty()
    )


@contextmanager
def progress_bar(
    total: int, what: str, *, unit: str, enabled: bool
) -> Iterator[Callable[[int], None]]:
    """``update(done)`` moves a bar of ``total`` (``unit``: "packets" or "bytes"); a no-op
    when not ``enabled``. The bar is removed when done: the summary line says the rest."""
    if not enabled or total <= 0:
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    amount = (
        (DownloadColumn(), TransferSpeedColumn())
        if unit == "bytes"
        else (MofNCompleteColumn(), TextColumn(unit))
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        *amount,
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(what, total=total)
        yield lambda done: progress.update(task, completed=done)


@contextmanager
def step_bar(what: str, *, enabled: bool) -> Iterator[Callable[[int, int | None, str], None]]:
    """``update(done, total, doing)`` moves a bar of ``total`` steps (None: not counted yet, a
    bar without an end) and names the step under way; a no-op when not ``enabled``."""
    if not enabled:
        yield lambda done, total, doing: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("", total=None)
        yield lambda done, total, doing: progress.update(
            task, completed=done, total=total, description=doing
        )
