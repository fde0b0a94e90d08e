"""A live progress display for a delivery on a terminal (rich), fed by the meter."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.live import Live
from rich.text import Text

from engine.delivery.meter import Meter


class DeliveryProgress:
    """Redraws packets and bytes delivered and the current rate, four times a second."""

    def __init__(self, meter: Meter, console: Console | None = None) -> None:
        self.meter = meter
        self.console = console or Console(stderr=True)
        self._stop = threading.Event()
        self._live: Live | None = None

    def _render(self) -> Text:
        m = self.meter
        series = m.rate_series()
        rate = series[-2] if len(series) > 1 else series[-1]
        return Text(
            f"delivering: {m.packets_out:,} / {m.packets_in:,} packets, "
            f"{m.bytes_out / 1e6:,.1f} MB, {rate / 1e6:,.1f} Mbit/s, "
            f"{m.retries} retries, {len(m.dead_workers)} dead workers"
        )

    def _loop(self) -> None:
        live = self._live
        assert live is not None  # started by __enter__, after it is set
        while not self._stop.wait(0.25):
            live.update(self._render())

    def __enter__(self) -> DeliveryProgress:
        self._live = Live(self._render(), console=self.console, transient=True)
        self._live.__enter__()
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._live is not None  # set by __enter__
        self._live.__exit__(*exc)
