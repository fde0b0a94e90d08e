"""inspect: multi-pattern signature matching over transport payloads (count, drop or mark).

Every packet's TCP, UDP, SCTP, DCCP, ICMP or ICMPv6 payload (after the outermost IP header's
transport header, as ``engine.packet.flowkeys`` finds it) is scanned with an Aho-Corasick automaton
(``engine.packet.ahocorasick``) for all patterns at once. The payload ends where the IP or UDP
length says, so Ethernet padding is not scanned. Packets without a transport payload (non-IP, later
fragments, other protocols, truncated headers) are not scanned. By default each packet is
matched alone: a signature split across two TCP segments is not found. With ``stream=yes`` a TCP
payload that continues its flow's byte stream (its sequence number is where the flow's previous
payload ended) is scanned from where that payload left the automaton, so a signature split
across in-order segments is found, and the segment that completes it is the one that matches
(counted, dropped or marked). A segment out of order, retransmitted or after a gap starts
afresh: a signature across that boundary is missed, never made up. This is matching over the
in-order stream, not full reassembly: overlapping retransmissions with other bytes are not
resolved. Each worker keeps the flows it sees; run the delivery with flow affinity
(``--flow-affinity``) so that every packet of a flow goes to the same worker, in order.

Parameters: ``patterns`` (comma-separated; ``hex:474554`` for binary or for a pattern holding a
comma), ``patterns_file`` (one pattern per line, same syntax; blank lines and lines starting
with ``#`` skipped; read where the service is built, so on every worker host), ``action``
(``count`` leaves packets alone; ``drop`` removes the matching ones; ``mark`` sets the DSCP of
matching IP packets to ``dscp``, 0-63, keeping ECN, updating the IPv4 header checksum
incrementally; IPv6 has none and its traffic class is not in the pseudo-header), ``nocase``
(ASCII letters match either case), ``stream`` (match across in-order TCP segments, above).

Counters: ``packets_scanned``, ``bytes_scanned``, ``packets_matched``, ``pattern.<i>`` (how
many packets held pattern i, numbered from 0 in the order given, ``patterns`` first), and
``packets_dropped`` or ``packets_marked``; with ``stream``, ``stream_table_resets`` (times the
flow table, a million flows, filled up and started over).
"""

from __future__ import annotations

import os
import stat

import numpy as np

from engine.capture.batch import PacketBatch
from engine.packet.ahocorasick import PatternMatcher, TcpStreams
from engine.packet.flowkeys import flow_keys
from engine.packet.header_kernels import _set_dscp
from engine.packet.inspect_kernels import _payload_bounds
from engine.services.base import Param, Service, ServiceError, boolean

__all__ = ["Inspect", "parse_pattern"]


def parse_pattern(text: str) -> bytes:
    """One pattern: ``hex:`` then hex digits (spaces allowed), or text taken as UTF-8."""
    if text[:4].lower() == "hex:":
        try:
            value = bytes.fromhex(text[4:])
        except ValueError:
            raise ValueError(f"pattern {text!r}: not hex after 'hex:'") from None
    else:
        value = text.encode("utf-8")
    if not value:
        raise ValueError("empty pattern")
    return value


PATTERNS_FILE_MAX = 64 << 20  # far above 100,000 patterns; /dev/zero must not fill memory


def _read_small_text(path: str, limit: int) -> str:
    """A regular file's text, refused past ``limit`` bytes (devices and pipes never end)."""
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit >> 20} MiB")
    return data.decode("utf-8")


class Inspect(Service):
    name = "inspect"
    summary = "multi-pattern signature matching over payloads: count, drop or mark"
    params = (
        Param("patterns", str, "", "comma-separated patterns; hex:HEX for binary"),
        Param("patterns_file", str, "", "a file of patterns, one per line"),
        Param(
            "action", str, "count", "what to do with matching packets", ("count", "drop", "mark")
        ),
        Param("dscp", int, 1, "the DSCP that action=mark sets (0-63)"),
        Param("nocase", boolean, False, "match ASCII letters in either case"),
        Param(
            "stream",
            boolean,
            False,
            "match across in-order TCP segments of a flow (run with flow affinity)",
        ),
    )

    def setup(self) -> None:
        dscp = self.config["dscp"]
        if isinstance(dscp, bool) or not isinstance(dscp, int) or not 0 <= dscp <= 63:
            raise ServiceError(
                f"service 'inspect': parameter dscp must be an integer 0-63, not {dscp!r}"
            )
        patterns = self._patterns()
        try:
            self.matcher = PatternMatcher(patterns, nocase=self.config["nocase"])
        except ValueError as exc:
            raise ServiceError(f"service 'inspect': {exc}") from None
        self.streams = TcpStreams() if self.config["stream"] else None

    def _patterns(self) -> list[bytes]:
        found: list[bytes] = []
        text = self.config["patterns"]
        if text:
            for n, item in enumerate(text.split(",")):
                try:
                    found.append(parse_pattern(item))
                except ValueError as exc:
                    raise ServiceError(
                        f"service 'inspect': parameter patterns, item {n}: {exc}"
                    ) from None
        path = self.config["patterns_file"]
        if path:
            try:
                lines = _read_small_text(path, PATTERNS_FILE_MAX).splitlines()
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ServiceError(
                    f"service 'inspect': parameter patterns_file: cannot read {path}: {exc}"
                ) from None
            for n, line in enumerate(lines, 1):
                if not line.strip() or line.startswith("#"):
                    continue
                try:
                    found.append(parse_pattern(line))
                except ValueError as exc:
                    raise ServiceError(f"service 'inspect': {path}, line {n}: {exc}") from None
        if not found:
            raise ServiceError("service 'inspect': no patterns (give patterns= or patterns_file=)")
        return found

    def process(self, batch: PacketBatch) -> PacketBatch:
        n = len(batch)
        if n == 0:
            return batch
        keys = flow_keys(batch)
        starts = np.empty(n, np.int64)
        ends = np.empty(n, np.int64)
        _payload_bounds(
            batch.data,
            batch.offsets,
            batch.caplen,
            keys.family,
            keys.proto,
            keys.l3_off,
            keys.l4_off,
            keys.payload_off,
            starts,
            ends,
        )
        if self.streams is None:
            result = self.matcher.scan(batch.data, starts, ends)
        else:
            resets = self.streams.resets
            result = self.matcher.scan_tcp_streams(
                batch.data, batch.offsets, batch.caplen, keys, starts, ends, self.streams
            )
            self.counters["stream_table_resets"] += self.streams.resets - resets
        matched = result.matched
        hits = int(matched.sum())
        self.counters["packets_scanned"] += int(np.count_nonzero(starts >= 0))
        self.counters["bytes_scanned"] += result.scanned
        self.counters["packets_matched"] += hits
        for pid in np.flatnonzero(result.counts).tolist():
            self.counters[f"pattern.{pid}"] += int(result.counts[pid])
        action = self.config["action"]
        if action == "count" or hits == 0:
            return batch
        if action == "drop":
            self.counters["packets_dropped"] += hits
            return batch.take(np.flatnonzero(~matched))
        out = batch.compact()
        # A new buffer: the input may be a read-only view of a received frame, or shared.
        data = out.data.copy() if out is batch else out.data
        marked = _set_dscp(
            data, out.offsets, keys.family, keys.l3_off, matched, self.config["dscp"]
        )
        self.counters["packets_marked"] += int(marked)
        return PacketBatch(
            data,
            out.offsets,
            out.caplen,
            out.origlen,
            out.ts_ns,
            out.iface,
            out.interfaces,
            out.first_seq,
            out.seq if out.has_explicit_seq else None,
        )
