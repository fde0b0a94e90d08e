"""Segment boundaries of a batch or a stream: by packet count, by bytes, by time window.

A segment is a run of consecutive packets, cut greedily, the first place a limit would be
broken:

- ``max_packets``: a segment holds at most this many packets;
- ``max_bytes``: its captured bytes (sum of ``caplen``) stay within this budget, unless a single
  packet alone is larger, which then makes a segment of its own;
- ``window_ns``: every packet's ``ts_ns`` is less than ``window_ns`` after the segment's first
  packet's. Timestamps that go backwards stay in the open segment; a gap opens no empty segments.

Limits combine (a segment ends when any one is reached); 0 or ``None`` means no limit. Cutting a
stream batch by batch with a ``Segmenter`` gives the same segments as cutting the batches
joined into one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.capture.batch import PacketBatch

__all__ = ["Segmenter", "by_bytes", "by_packets", "by_time", "segment_bounds"]


@dataclass
class _Open:
    """The segment left open at the end of what has been cut so far."""

    count: int = 0
    nbytes: int = 0
    start_ns: int = 0


def _limit(name: str, value) -> int:
    if value is None:
        return 0
    v = int(value)
    if v < 0 or v != value:
        raise ValueError(f"{name} must be a non-negative integer or None, not {value!r}")
    return v


def _columns(batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, PacketBatch):
        raise TypeError(f"expected a PacketBatch, not {type(batch).__name__}")
    return batch.caplen.astype(np.int64), np.ascontiguousarray(batch.ts_ns, np.int64)


# Cutting by packets and bytes alone takes a few numpy calls per segment, so a batch cut into at
# most this many segments is cut in numpy: a delivery of a file then never loads numba (a third
# of a second at start-up). More segments, or a time window, go to the numba kernel.
NUMPY_SEGMENTS_MAX = 4096


def _starts(
    sizes: np.ndarray,
    ts: np.ndarray,
    max_packets: int,
    max_bytes: int,
    window_ns: int,
    state: _Open,
) -> np.ndarray:
    if (
        not window_ns
        and NUMPY_SEGMENTS_MAX >= 0
        and (not max_packets or len(sizes) // max_packets <= NUMPY_SEGMENTS_MAX)
    ):
        return _starts_numpy(sizes, max_packets, max_bytes, state)
    from engine.packet import kernels

    out = np.empty(len(sizes), np.int64)
    m, state.count, state.nbytes, state.start_ns = kernels._segment_starts(
        sizes, ts, max_packets, max_bytes, window_ns, state.count, state.nbytes, state.start_ns, out
    )
    return out[:m]


def _starts_numpy(sizes: np.ndarray, max_packets: int, max_bytes: int, state: _Open) -> np.ndarray:
    """`kernels._segment_starts` without a time window, a few numpy calls per segment."""
    n = len(sizes)
    total = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=total[1:])
    starts: list[int] = []
    i, count, nbytes = 0, state.count, state.nbytes
    while i < n:
        if count == 0:  # packet i opens a segment, whatever its size
            starts.append(i)
            count, nbytes = 1, int(sizes[i])
            i += 1
            continue
        room = n - i
        if max_packets:
            room = min(room, max_packets - count)
        if max_bytes and room:
            # The packets from i on that still fit: total[j] - total[i] <= max_bytes - nbytes.
            fit = int(np.searchsorted(total, total[i] + max_bytes - nbytes, side="right")) - 1
            room = min(room, max(fit - i, 0))
        count += room
        nbytes += int(total[i + room] - total[i])
        i += room
        if i < n:
            count = 0  # a limit is reached: the next packet opens the next segment
    state.count, state.nbytes = count, nbytes
    return np.array(starts, np.int64)


def segment_bounds(
    batch: PacketBatch,
    *,
    max_packets: int | None = None,
    max_bytes: int | None = None,
    window_ns: int | None = None,
) -> np.ndarray:
    """The boundaries of ``batch``'s segments: int64 ``bounds`` with ``bounds[0] == 0`` and
    ``bounds[-1] == len(batch)``; segment ``j`` is ``batch[bounds[j]:bounds[j + 1]]``.

    An empty batch has ``bounds == [0]``. With no limit at all the batch is one segment.
    """
    limits = (
        _limit("max_packets", max_packets),
        _limit("max_bytes", max_bytes),
        _limit("window_ns", window_ns),
    )
    sizes, ts = _columns(batch)
    starts = _starts(sizes, ts, *limits, _Open())
    return np.append(starts, np.int64(len(batch)))


def by_packets(batch: PacketBatch, max_packets: int) -> np.ndarray:
    """Boundaries of segments of ``max_packets`` packets (the last may hold fewer)."""
    if _limit("max_packets", max_packets) < 1:
        raise ValueError("max_packets must be at least 1")
    return segment_bounds(batch, max_packets=max_packets)


def by_bytes(batch: PacketBatch, max_bytes: int) -> np.ndarray:
    """Boundaries of segments of at most ``max_bytes`` captured bytes (see the module doc)."""
    if _limit("max_bytes", max_bytes) < 1:
        raise ValueError("max_bytes must be at least 1")
    return segment_bounds(batch, max_bytes=max_bytes)


def by_time(batch: PacketBatch, window_ns: int) -> np.ndarray:
    """Boundaries of segments spanning less than ``window_ns`` from their first packet."""
    if _limit("window_ns", window_ns) < 1:
        raise ValueError("window_ns must be at least 1")
    return segment_bounds(batch, window_ns=window_ns)


class Segmenter:
    """Cuts a stream, arriving batch by batch, into segments by the same rules.

    ``feed(batch)`` returns the segments completed so far, as batches, and keeps the open one;
    ``finish()`` returns that last one (or ``None``). Segments that lie within one fed batch
    share its buffer; one that spans batches is copied into a buffer of its own.
    ``starts(batch)`` is the lower-level form: the positions in ``batch`` where a segment
    begins, with the state carried between calls and nothing held.
    """

    def __init__(
        self,
        *,
        max_packets: int | None = None,
        max_bytes: int | None = None,
        window_ns: int | None = None,
    ) -> None:
        self._limits = (
            _limit("max_packets", max_packets),
            _limit("max_bytes", max_bytes),
            _limit("window_ns", window_ns),
        )
        if not any(self._limits):
            raise ValueError("a Segmenter needs at least one of max_packets, max_bytes, window_ns")
        self._open = _Open()
        self._held: list[PacketBatch] = []

    def starts(self, batch: PacketBatch) -> np.ndarray:
        """Positions in ``batch`` where a new segment starts (int64, ascending).

        Packets before the first of them continue the segment left open by earlier batches.
        """
        sizes, ts = _columns(batch)
        return _starts(sizes, ts, *self._limits, self._open)

    def feed(self, batch: PacketBatch) -> list[PacketBatch]:
        """Segments completed by ``batch``, in order."""
        cuts = self.starts(batch)
        done: list[PacketBatch] = []
        prev = 0
        for c in cuts.tolist():
            if c > prev:
                self._held.append(batch[prev:c])
            if self._held:
                done.append(self._release())
            prev = c
        if prev < len(batch):
            self._held.append(batch[prev:])
        return done

    def finish(self) -> PacketBatch | None:
        """The segment still open, if it holds any packet; the segmenter starts afresh."""
        last = self._release() if self._held else None
        self._open = _Open()
        return last

    def _release(self) -> PacketBatch:
        held, self._held = self._held, []
        return held[0] if len(held) == 1 else PacketBatch.concat(held)
