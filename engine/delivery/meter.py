"""Metering what a delivery carried: the usage record the broker bills and rates from."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

_NS = 1_000_000_000

# A counter a worker reports is named like a service's own counters, and its value is an integer
# no larger than the task could have produced (docs/protocol.md, "Counters").
_COUNTER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
MAX_COUNTERS = 4096  # per service per result


def checked_counters(
    counters: dict, services: set[str], packets: int, nbytes: int
) -> tuple[dict[str, dict[str, int]], int, str]:
    """The counters of one task that could be true, how many were dropped, and why (the last).

    True: a service of ``services``, a counter name, a non-negative ``int`` at most twice the
    task's ``packets`` or, for a name containing ``bytes``, at most ``nbytes``.
    """
    good: dict[str, dict[str, int]] = {}
    dropped = 0
    why = ""
    for service, values in counters.items():
        if service not in services or not isinstance(values, dict):
            dropped += len(values) if isinstance(values, dict) else 1
            why = f"service {str(service)[:40]!r} is not in the chain"
            continue
        if len(values) > MAX_COUNTERS:
            dropped += len(values)
            why = f"{len(values)} counters for {service}"
            continue
        for name, value in values.items():
            bound = nbytes if "bytes" in name else 2 * packets
            if not _COUNTER_NAME.fullmatch(name):
                why = f"counter name {name[:40]!r}"
            elif type(value) is not int:
                why = f"{service}.{name} = {str(value)[:40]!r} is not an integer"
            elif not 0 <= value <= bound:
                why = f"{service}.{name} = {value} outside 0..{bound} for this task"
            else:
                good.setdefault(service, {})[name] = value
                continue
            dropped += 1
    return good, dropped, why


def iso_ns(ns: int) -> str:
    """UTC ISO 8601 with nanoseconds."""
    sec, frac = divmod(ns, _NS)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


class Meter:
    """Counts packets and bytes in and out, per one-second window of delivery time.

    Thread-safe: the source thread records input, the sink thread output, the dispatcher the
    rest. Times are integer nanoseconds (wall clock for the record's start/end, a monotonic
    clock for windows and rates).
    """

    def __init__(
        self,
        *,
        min_rate_bps: int | None = None,
        max_rate_bps: int | None = None,
        clock=time.monotonic_ns,
        wall=time.time_ns,
    ) -> None:
        self.min_rate_bps = min_rate_bps
        self.max_rate_bps = max_rate_bps
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self.start_mono = clock()
        self.start_wall = wall()
        self.end_mono: int | None = None
        self.end_wall: int | None = None
        self.packets_in = self.bytes_in = 0
        self.packets_out = self.bytes_out = 0
        self.segments = 0
        self._windows: dict[int, int] = defaultdict(int)  # second -> bytes out
        self.workers: dict[str, Counter] = defaultdict(Counter)
        self.services: dict[str, Counter] = defaultdict(Counter)
        self.retries = 0
        self.duplicates = 0
        self.garbage = 0
        # Workers lost while holding tasks (by name); every loss is only counted in lost_workers.
        self.dead_workers: list[dict] = []
        self.lost_workers: Counter = Counter()  # reason -> workers lost
        self.rejected: Counter = Counter()  # reason -> messages counted and dropped
        self.counters_dropped = 0  # service counters that failed validation
        self.poison_segments: list[dict] = []  # segments dropped with --on-poison skip
        self.packets_skipped = 0
        # Time the workers spent in each service (their own clocks, checked against how long
        # each task was out), and time the output waited on the rate limit.
        self.service_ns: Counter = Counter()
        self.throttled_ns = 0

    def restart(self) -> None:
        """Start the clocks now (after the workers have joined)."""
        self.start_mono = self._clock()
        self.start_wall = self._wall()

    def record_in(self, packets: int, nbytes: int) -> None:
        with self._lock:
            self.packets_in += packets
            self.bytes_in += nbytes

    def record_out(self, packets: int, nbytes: int) -> None:
        now = self._clock()
        with self._lock:
            self.packets_out += packets
            self.bytes_out += nbytes
            self._windows[(now - self.start_mono) // _NS] += nbytes

    def record_worker(self, name: str, segments: int, packets: int) -> None:
        with self._lock:
            self.workers[name]["segments"] += segments
            self.workers[name]["packets"] += packets

    def record_services(self, counters: dict[str, dict[str, int]]) -> None:
        """Add validated counters (plain ints; the dispatcher checks what workers send)."""
        with self._lock:
            for service, values in counters.items():
                self.services[service].update(values)

    def record_service_time(self, times: dict[str, int]) -> None:
        with self._lock:
            self.service_ns.update(times)

    def record_throttled(self, ns: int) -> None:
        with self._lock:
            self.throttled_ns += ns

    def reject(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.rejected[reason] += n

    def finish(self) -> None:
        self.end_mono = self._clock()
        self.end_wall = self._wall()

    # -- the record ----------------------------------------------------------------------------
    def rate_series(self) -> list[int]:
        """Bits per second delivered in each one-second window since the start."""
        end = (self.end_mono or self._clock()) - self.start_mono
        n = max(1, -(-end // _NS))
        return [self._windows.get(i, 0) * 8 for i in range(n)]

    def usage(self, **identity) -> dict:
        """The usage record: what was delivered, how fast, by whom, with what trouble (also
        while the delivery runs: read under the lock the recorders take)."""
        with self._lock:
            return self._usage(identity)

    def _usage(self, identity: dict) -> dict:
        end_mono = self.end_mono or self._clock()
        end_wall = self.end_wall or self._wall()
        duration = max(end_mono - self.start_mono, 1)
        series = self.rate_series()
        windows = []
        if self.min_rate_bps is not None:
            for i, bits in enumerate(series):
                span = min(_NS, duration - i * _NS)
                # The last window may be short: judge it by its own length.
                rate = bits * _NS // max(span, 1)
                windows.append(
                    {"second": i, "bits": bits, "rate_bps": rate, "met": rate >= self.min_rate_bps}
                )
        return {
            **identity,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "segments": self.segments,
            "start": iso_ns(self.start_wall),
            "end": iso_ns(end_wall),
            "start_ns": self.start_wall,
            "end_ns": end_wall,
            "duration_ns": duration,
            "mean_rate_bps": self.bytes_out * 8 * _NS // duration,
            # A short last window would overstate (or understate) a per-second peak: only full
            # seconds count, and a stream shorter than one second peaks at its mean.
            "peak_rate_bps": (
                max(series[: duration // _NS])
                if duration >= _NS
                else self.bytes_out * 8 * _NS // duration
            ),
            "rate_series_bps": series,
            "max_rate_bps": self.max_rate_bps,
            "min_rate_bps": self.min_rate_bps,
            "min_rate_windows_met": sum(1 for w in windows if w["met"]),
            "min_rate_windows_missed": sum(1 for w in windows if not w["met"]),
            "min_rate_windows": windows,
            "workers": {k: dict(v) for k, v in self.workers.items()},
            "retries": self.retries,
            "duplicates_dropped": self.duplicates,
            "garbage_results": self.garbage,
            "dead_workers": self.dead_workers,
            "lost_workers": dict(self.lost_workers),
            "rejected_messages": dict(self.rejected),
            "counters_dropped": self.counters_dropped,
            "poison_segments": self.poison_segments,
            "packets_skipped": self.packets_skipped,
            "services": {k: dict(v) for k, v in self.services.items()},
            "service_ns": dict(self.service_ns),
            "throttled_ns": self.throttled_ns,
        }


class TokenBucket:
    """Shapes output to ``rate_bps``: ``take(bits)`` sleeps until the bits may go, and tells
    ``waited(ns)`` how long it slept."""

    def __init__(
        self,
        rate_bps: int,
        burst_bits: int | None = None,
        clock=time.monotonic_ns,
        sleep=time.sleep,
        waited: Callable[[int], None] | None = None,
    ) -> None:
        if rate_bps <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_bps
        self.burst = burst_bits or max(rate_bps // 50, 12_000 * 8)
        self._clock = clock
        self._sleep = sleep
        self._waited = waited
        self._tokens = self.burst
        self._last = clock()

    def take(self, bits: int) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate // _NS)
        self._last = now
        self._tokens -= bits
        if self._tokens < 0:
            # Sleep off the debt; the next call's refill starts from after the sleep.
            self._sleep(-self._tokens / self.rate)
            self._last = self._clock()
            self._tokens = 0
            if self._waited is not None:
                self._waited(self._last - now)


def parse_rate(text: str) -> int:
    """Bits per second from text with an SI suffix: ``400M``, ``1.5G``, ``64k``, ``1000``."""
    t = text.strip().lower().removesuffix("bps").removesuffix("bit/s").removesuffix("b/s")
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    mult = 1
    if t and t[-1] in scale:
        mult = scale[t[-1]]
        t = t[:-1]
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(t) * mult
    except InvalidOperation:
        raise ValueError(f"not a rate: {text!r} (bits per second, e.g. 400M)") from None
    if value <= 0:
        raise ValueError(f"rate must be positive: {text!r}")
    return int(value)
