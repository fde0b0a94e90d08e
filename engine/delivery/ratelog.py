"""Log lines a peer can trigger, at a bounded rate: a flood of garbage is counted, not printed."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most ``burst`` lines per kind of event in each ``interval_s``; the lines held back are
    counted and reported in one line when the next interval opens."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval_s: float = 10.0,
        clock=time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[str, list] = {}  # kind -> [window start, lines, held back]

    def log(self, level: int, kind: str, msg: str, *args) -> None:
        now = self._clock()
        w = self._windows.get(kind)
        if w is None or now - w[0] >= self.interval_s:
            if w is not None and w[2]:
                self.logger.log(
                    level, "%d more message(s) like '%s' in the last %.0f s", w[2], kind, now - w[0]
                )
            if len(self._windows) > 256:  # kinds are ours, but stay bounded regardless
                self._windows.clear()
            w = self._windows[kind] = [now, 0, 0]
        if w[1] < self.burst:
            w[1] += 1
            self.logger.log(level, msg, *args)
        else:
            w[2] += 1

    def warning(self, kind: str, msg: str, *args) -> None:
        self.log(logging.WARNING, kind, msg, *args)
