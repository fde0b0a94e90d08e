"""Aho-Corasick multi-pattern matching: the automaton built in Python, scanned by numba.

The trie of the patterns is turned into a deterministic automaton (goto and failure functions
resolved into one transition table, A. V. Aho and M. J. Corasick, CACM 18(6), 1975), so the scan
does one table lookup per byte whatever the number of patterns. Bytes that occur in no pattern
share one column of the table (byte classes), which keeps it small; case-insensitive matching
folds ASCII letters into the same classes, so the scan itself is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.packet.inspect_kernels import _ac_scan, _ac_scan_tcp_streams, _rehash

__all__ = ["MAX_TABLE_BYTES", "PatternMatcher", "ScanResult", "TcpStreams"]

MAX_TABLE_BYTES = 256 << 20


@dataclass(frozen=True, eq=False)
class ScanResult:
    """``matched`` (bool, per region), ``counts`` (int64, per pattern: regions holding it),
    ``scanned`` (bytes)."""

    matched: np.ndarray
    counts: np.ndarray
    scanned: int


class PatternMatcher:
    """Finds which of ``patterns`` (non-empty ``bytes``) occur in each of many byte regions.

    With ``nocase`` ASCII letters match either case (other bytes exactly). Raises ``ValueError``
    for no pattern, an empty one, or an automaton whose table would pass ``MAX_TABLE_BYTES``.
    """

    def __init__(self, patterns: Sequence[bytes], nocase: bool = False) -> None:
        patterns = [bytes(p) for p in patterns]
        if not patterns:
            raise ValueError("no patterns to match")
        for i, p in enumerate(patterns):
            if not p:
                raise ValueError(f"pattern {i} is empty")
        self.patterns = tuple(patterns)
        self.nocase = nocase
        folded = [p.lower() for p in patterns] if nocase else patterns
        self.byte_class = _byte_classes(folded, nocase)
        self._build(folded)

    @property
    def states(self) -> int:
        return self.table.shape[0]

    def _build(self, patterns: list[bytes]) -> None:
        cls = self.byte_class.tolist()
        goto: list[dict[int, int]] = [{}]
        own: list[list[int]] = [[]]
        for pid, p in enumerate(patterns):
            s = 0
            for b in p:
                c = cls[b]
                nxt = goto[s].get(c)
                if nxt is None:
                    nxt = len(goto)
                    goto[s][c] = nxt
                    goto.append({})
                    own.append([])
                s = nxt
            own[s].append(pid)
        n = len(goto)
        width = int(self.byte_class.max()) + 1
        if n * width * 4 > MAX_TABLE_BYTES or n * width >= 1 << 32:
            raise ValueError(
                f"the patterns need a {n}-state automaton over {width} byte "
                f"classes, more than {MAX_TABLE_BYTES >> 20} MiB"
            )
        table = np.zeros((n, width), np.int32)
        fail = np.zeros(n, np.int32)
        dict_link = np.zeros(n, np.int32)
        report = np.zeros(n, np.int32)
        # Breadth first: a state's failure state is shallower, so its row is already final.
        order = [0]
        for s in order:
            f = int(fail[s])
            if s:
                table[s] = table[f]
                dict_link[s] = f if own[f] else dict_link[f]
                report[s] = s if own[s] else dict_link[s]
            for c, t in goto[s].items():
                fail[t] = table[f, c] if s else 0
                order.append(t)
            for c, t in goto[s].items():
                table[s, c] = t
        # Renumber so the states that end patterns come last: the scan then tells them by one
        # comparison of a value it has at hand, off its critical path.
        ends_here = report > 0
        new_id = np.empty(n, np.int64)
        order_new = np.concatenate([np.flatnonzero(~ends_here), np.flatnonzero(ends_here)])
        new_id[order_new] = np.arange(n)
        self.width = width
        self.table = new_id[table[order_new]].astype(np.uint32)
        self.report = new_id[report[order_new]].astype(np.int32)
        self.dict_link = new_id[dict_link[order_new]].astype(np.int32)
        self.reporting_from = int(n - np.count_nonzero(ends_here))
        own = [own[k] for k in order_new.tolist()]
        self.own_ptr = np.zeros(n + 1, np.int64)
        np.cumsum([len(o) for o in own], out=self.own_ptr[1:])
        self.own_ids = np.array([p for o in own for p in o], np.int64)
        # The scan's table: row-major, each entry premultiplied by the row width, so the next
        # state is one load and one add away.
        self._flat = (self.table.astype(np.uint64) * width).astype(np.uint32).ravel()
        self._byte_class = self.byte_class.astype(np.uint32)

    def scan(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> ScanResult:
        """Match ``data[starts[i]:ends[i]]`` for every i; a ``starts[i]`` of -1 skips one."""
        data = np.ascontiguousarray(data, np.uint8).reshape(-1)
        starts = np.ascontiguousarray(starts, np.int64)
        ends = np.ascontiguousarray(ends, np.int64)
        if starts.shape != ends.shape:
            raise ValueError(f"{len(starts)} starts but {len(ends)} ends")
        used = starts >= 0
        if np.any(used & ((ends < starts) | (ends > len(data)))):
            raise ValueError("a region lies outside the buffer or ends before it starts")
        matched = np.zeros(len(starts), np.bool_)
        counts = np.zeros(len(self.patterns), np.int64)
        last_seen = np.full(len(self.patterns), -1, np.int64)
        scanned = _ac_scan(
            data,
            starts,
            ends,
            self._flat,
            self._byte_class,
            self.width,
            self.reporting_from * self.width,
            self.report,
            self.dict_link,
            self.own_ptr,
            self.own_ids,
            matched,
            counts,
            last_seen,
        )
        return ScanResult(matched, counts, int(scanned))

    def scan_tcp_streams(
        self,
        data: np.ndarray,
        offsets: np.ndarray,
        caplen: np.ndarray,
        keys,
        starts: np.ndarray,
        ends: np.ndarray,
        streams: TcpStreams,
    ) -> ScanResult:
        """`scan` over packets (``keys``: their `engine.packet.flowkeys.FlowKeys`), where a TCP
        payload that continues its flow's byte stream (in sequence order, as remembered in
        ``streams``) picks the automaton up where the flow's previous payload left it: a
        pattern split across segments is found, in the segment that completes it.

        The packets must come in the order they were sent within each flow; ``streams`` keeps
        the flows across calls. A segment out of order, repeated or after a gap starts afresh
        (a pattern across that boundary is missed, never made up).
        """
        data = np.ascontiguousarray(data, np.uint8).reshape(-1)
        starts = np.ascontiguousarray(starts, np.int64)
        ends = np.ascontiguousarray(ends, np.int64)
        n = len(starts)
        if not (len(ends) == len(offsets) == len(caplen) == len(keys.family) == n):
            raise ValueError("regions, packets and flow keys differ in number")
        used = starts >= 0
        if np.any(used & ((ends < starts) | (ends > len(data)))):
            raise ValueError("a region lies outside the buffer or ends before it starts")
        streams.make_room(n)
        matched = np.zeros(n, np.bool_)
        counts = np.zeros(len(self.patterns), np.int64)
        last_seen = np.full(len(self.patterns), -1, np.int64)
        scanned, added = _ac_scan_tcp_streams(
            data,
            np.ascontiguousarray(offsets, np.int64),
            np.ascontiguousarray(caplen),
            starts,
            ends,
            keys.family,
            keys.proto,
            keys.src,
            keys.dst,
            keys.sport,
            keys.dport,
            keys.l4_off,
            self._flat,
            self._byte_class,
            self.width,
            self.reporting_from * self.width,
            self.report,
            self.dict_link,
            self.own_ptr,
            self.own_ids,
            matched,
            counts,
            last_seen,
            streams.keys,
            streams.next_seq,
            streams.states,
        )
        streams.added(int(added))
        return ScanResult(matched, counts, int(scanned))

    def find(self, payloads: Sequence[bytes]) -> list[set[int]]:
        """Which patterns occur in each of ``payloads`` (a convenience, not for hot paths)."""
        pieces = [bytes(p) for p in payloads]
        lengths = np.array([len(p) for p in pieces], np.int64)
        ends = np.cumsum(lengths)
        data = np.frombuffer(b"".join(pieces), np.uint8)
        counts_per = []
        for i in range(len(pieces)):  # one region at a time, to know which patterns each holds
            r = self.scan(data, ends[i : i + 1] - lengths[i], ends[i : i + 1])
            counts_per.append({int(k) for k in np.flatnonzero(r.counts)})
        return counts_per


class TcpStreams:
    """Where each TCP flow's byte stream stands for `PatternMatcher.scan_tcp_streams`: per
    direction of a flow, the sequence number its next payload continues at and the automaton's
    state there (16 bytes a flow, in a hash table kept at most half full).

    Holds up to ``max_flows`` flows; past that it starts over empty (the flows it forgets miss
    patterns across their next boundary, nothing worse). Flows are never expired one by one.
    """

    def __init__(self, max_flows: int = 1 << 20, initial: int = 1 << 12) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self._initial = initial
        self.resets = 0
        self._allocate(initial)

    def _allocate(self, size: int) -> None:
        self.keys = np.zeros(size, np.uint64)
        self.next_seq = np.zeros(size, np.uint32)
        self.states = np.zeros(size, np.uint32)
        self.flows = 0

    def make_room(self, more: int) -> None:
        """Make sure ``more`` new flows would fit with the table at most half full."""
        need = self.flows + more
        size = len(self.keys)
        if 2 * need <= size:
            return
        while 2 * need > size:
            size *= 2
        old = (self.keys, self.next_seq, self.states)
        flows = self.flows
        self._allocate(size)
        _rehash(*old, self.keys, self.next_seq, self.states)
        self.flows = flows

    def added(self, flows: int) -> None:
        """Count ``flows`` new ones; past ``max_flows``, start over empty."""
        self.flows += flows
        if self.flows > self.max_flows:
            self.resets += 1
            self._allocate(self._initial)


def _byte_classes(patterns: list[bytes], nocase: bool) -> np.ndarray:
    """byte -> column: 0 for bytes in no pattern, 1.. for the others (letters folded)."""
    used = sorted(set(b"".join(patterns)))
    byte_class = np.zeros(256, np.int32)
    byte_class[used] = np.arange(1, len(used) + 1, dtype=np.int32)
    if nocase:
        upper = np.arange(ord("A"), ord("Z") + 1)
        byte_class[upper] = byte_class[upper + 32]
    return byte_class
