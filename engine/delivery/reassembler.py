"""The reorder buffer: parts of segments come back in any order, segments leave in order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.capture.batch import PacketBatch


@dataclass
class _Segment:
    first_seq: int
    count: int
    parts: int
    results: dict = field(default_factory=dict)  # part -> (batch, positions in segment)


class Reassembler:
    """``open(segment, ...)`` when a segment is cut, ``put(segment, part, batch, positions)``
    when a part's result is taken, ``ready()`` the complete segments in segment order, each
    with its packets back in their original order (by sequence number)."""

    def __init__(self) -> None:
        self.segments: dict[int, _Segment] = {}
        self.next_emit = 0

    def open(self, segment: int, first_seq: int, count: int, parts: int) -> None:
        self.segments[segment] = _Segment(first_seq, count, parts)

    def put(self, segment: int, part: int, batch: PacketBatch, positions: np.ndarray) -> None:
        """``positions``: where the result's packets sit in the segment (ascending per part)."""
        self.segments[segment].results[part] = (batch, positions)

    def ready(self):
        """Yield the segments that are complete and next in order."""
        while self.next_emit in self.segments:
            seg = self.segments[self.next_emit]
            if len(seg.results) < seg.parts:
                return
            del self.segments[self.next_emit]
            self.next_emit += 1
            yield self._join(seg)

    @staticmethod
    def _join(seg: _Segment) -> PacketBatch:
        if seg.parts == 1:
            out, positions = seg.results[0]
            if len(out) == seg.count:
                return PacketBatch(
                    out.data,
                    out.offsets,
                    out.caplen,
                    out.origlen,
                    out.ts_ns,
                    out.iface,
                    out.interfaces,
                    seg.first_seq,
                )
            return out.with_seq(positions + seg.first_seq)
        outs = [seg.results[k][0] for k in range(seg.parts)]
        positions = np.concatenate([seg.results[k][1] for k in range(seg.parts)])
        merged = PacketBatch.concat([o.with_seq(None) for o in outs])
        order = np.argsort(positions, kind="stable")
        return merged.take(order).with_seq(positions[order] + seg.first_seq)
