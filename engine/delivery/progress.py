"""A delivery's progress on a terminal (rich), fed by the meter: a bar of the input's bytes for a
file, a live line for a stream of unknown size."""

from __future__ import annotations

import threading
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from engine.delivery.meter import Meter


class DeliveryProgress:
    """Redraws packets and bytes delivered and the current rate four times a second; with
    ``read`` (bytes of the input read so far, and the input's size), as a bar of the input."""

    def __init__(
        self,
        meter: Meter,
        console: Console | None = None,
        *,
        read: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        self.meter = meter
        self.console = console or Console(stderr=True)
        self.read = read or (lambda: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._bar: Progress | None = None

    def _line(self) -> str:
        m = self.meter
        series = m.rate_series()
        rate = series[-2] if len(series) > 1 else series[-1]
        return (
            f"{m.packets_out:,} / {m.packets_in:,} packets, "
            f"{m.bytes_out / 1e6:,.1f} MB, {rate / 1e6:,.1f} Mbit/s, "
            f"{m.retries} retries, {len(m.dead_workers)} dead workers"
        )

    def _short(self) -> str:
        """Beside the bar: what went out, and trouble only when there is some."""
        m = self.meter
        series = m.rate_series()
        rate = series[-2] if len(series) > 1 else series[-1]
        trouble = (f", {m.retries} retries" if m.retries else "") + (
            f", {len(m.dead_workers)} dead workers" if m.dead_workers else ""
        )
        return f"{m.packets_out:,} packets out, {rate / 1e6:,.1f} Mbit/s{trouble}"

    def _redraw(self) -> None:
        if self._bar is not None:
            done = self.read()
            self._bar.update(
                self._bar.task_ids[0], completed=done[0] if done else 0, line=self._short()
            )
        elif self._live is not None:
            self._live.update(Text(f"delivering: {self._line()}"))

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._redraw()

    def __enter__(self) -> DeliveryProgress:
        known = self.read()
        if known is not None:
            self._bar = Progress(
                TextColumn("delivering"),
                BarColumn(bar_width=24),
                TaskProgressColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[line]}"),
                console=self.console,
                transient=True,
            )
            self._bar.add_task("input", total=known[1], completed=known[0], line=self._short())
            self._bar.__enter__()
        else:
            self._live = Live(
                Text(f"delivering: {self._line()}"), console=self.console, transient=True
            )
            self._live.__enter__()
        self._thread = threading.Thread(target=self._loop, name="pktx-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self._live is not None:
            self._live.__exit__(*exc)
