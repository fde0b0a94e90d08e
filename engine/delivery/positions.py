"""Where a delivery stands in its source: the marks a resumable stream carries (streams.Mark).

The delivery numbers its input packets afresh (after ``--share``, from 0 in each run); a
resumed run must start reading its source where the last one's taken output ends. The
source thread tells the ledger each input packet's position in the source as it reads, and
which of them each segment holds; the sink thread asks a segment for the mark after any of
its input packets. Positions count input packets, not output packets: a service may drop or
change packets, so an output count says nothing about where the source was.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engine.capture.batch import PacketBatch
from engine.delivery.streams import Mark


@dataclass
class SegmentInput:
    """A segment's input packets: their source positions and the bytes in through each."""

    first_seq: int
    positions: np.ndarray  # source position of each input packet (int64)
    packets_before: int  # packets in (cumulative over the stream) before the segment
    bytes_through: np.ndarray  # bytes in (cumulative over the stream) through each packet

    def end(self) -> tuple[int, int, int]:
        """(position, packets_in, bytes_in) once the whole segment is done with."""
        return self.through(self.first_seq + len(self.positions))

    def through(self, seq_end: int) -> tuple[int, int, int]:
        """(position, packets_in, bytes_in) once the input before sequence number
        ``seq_end`` (this run's numbering) is done with."""
        i = seq_end - self.first_seq
        if i <= 0 or not len(self.positions):
            raise ValueError(f"sequence number {seq_end} does not end a part of this segment")
        return (
            int(self.positions[i - 1]) + 1,
            self.packets_before + i,
            int(self.bytes_through[i - 1]),
        )


class SourceLedger:
    """Source positions of the packets read but not yet cut into a segment, in order."""

    def __init__(self, base: Mark) -> None:
        self._waiting: deque[np.ndarray] = deque()
        self.packets_in = base.packets_in
        self.bytes_in = base.bytes_in

    def read(self, positions: np.ndarray) -> None:
        """The next input packets (after the share) are at these source positions."""
        if len(positions):
            self._waiting.append(np.asarray(positions, np.int64))

    def segment(self, seg: PacketBatch) -> SegmentInput:
        """The segment ``seg`` (cut in order from what was read) and its input."""
        n = len(seg)
        taken, have = [], 0
        while have < n:
            head = self._waiting[0]
            need = n - have
            if len(head) <= need:
                taken.append(self._waiting.popleft())
                have += len(head)
            else:
                taken.append(head[:need])
                self._waiting[0] = head[need:]
                have = n
        positions = (
            taken[0]
            if len(taken) == 1
            else np.concatenate(taken)
            if taken
            else np.zeros(0, np.int64)
        )
        before = self.packets_in
        through = self.bytes_in + np.cumsum(seg.caplen, dtype=np.int64)
        self.packets_in += n
        if n:
            self.bytes_in = int(through[-1])
        return SegmentInput(seg.first_seq, positions, before, through)
