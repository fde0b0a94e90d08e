"""Rewrite the TCP/UDP payloads of a batch's packets, fixing lengths and checksums incrementally.

Services that change payloads (compress, encrypt and their inverses) share this. ``select``
finds each packet's payload; the service computes new payloads; ``replace`` builds a new batch
(a new buffer: the input may be a read-only view) where each rewritten packet has the new
payload between its old headers and its old trailer (Ethernet padding stays where it was), and

- the IPv4 total length, the IPv6 payload length and the UDP length grow or shrink with it, and
  so do an 802.3 length field and a PPPoE session length on the way (Ethernet, Linux SLL/SLL2);
- ``caplen`` and ``origlen`` follow; timestamps, interfaces and sequence numbers are kept;
- the IPv4 header checksum and the TCP/UDP checksum are updated incrementally (RFC 1624,
  eqn. 3: the old covered words are taken out and the new ones put in, the pseudo-header's
  length among them), never recomputed. A checksum that was wrong in the input (checksum
  offload in a capture) is exactly as wrong afterwards, so a round trip gives back every byte.
  A UDP checksum of 0 (none sent; also allowed over IPv6 for tunnels, RFC 6935) stays 0.

Ones'-complement arithmetic has two zeros, 0x0000 and 0xFFFF, and an update cannot tell which
one to write. We write the one a sender computes (0x0000 in IPv4 headers and TCP, 0xFFFF in UDP,
where 0 means "none"). The other form in an input (never a correct value there) is reported per
packet in ``Payloads.flags`` (``FLAG_L4_FFFF``, ``FLAG_IP_FFFF``); a service carries the flags
inside its new payload and hands them back when it undoes its work, so that form comes back too.

Packets left as they are, and counted under ``skipped_<reason>``: ``not_tcp_udp`` (no IP,
another protocol), ``fragment`` (any fragment: the payload spans several packets and the
checksum covers all of them), ``truncated`` (caplen < origlen), ``malformed`` (the IP or UDP
length does not fit the packet, an IPv6 jumbogram), ``empty`` (no payload bytes) and
``too_large`` (the new payload would not fit a length field).

``select`` and ``replace`` are each one compiled pass over the segment
(``engine.packet.payload_kernels``); ``pack_behind`` lays out new payloads (a lead, the old payload,
room for the service to fill) in one more, so that a service's own per-packet work is only
what its library call needs.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

import numpy as np

from engine.capture.batch import PacketBatch
from engine.packet.flowkeys import FlowKeys, flow_keys
from engine.packet.payload_kernels import OK as _OK
from engine.packet.payload_kernels import _finish, _gather_behind, _locate, _rebuild

FLAG_L4_FFFF = 0x01  # the TCP checksum field held 0xFFFF
FLAG_IP_FFFF = 0x02  # the IPv4 header checksum field held 0xFFFF
FLAGS_KNOWN = FLAG_L4_FFFF | FLAG_IP_FFFF

SKIP_REASONS = ("not_tcp_udp", "fragment", "truncated", "malformed", "empty", "too_large")

__all__ = [
    "FLAGS_KNOWN",
    "FLAG_IP_FFFF",
    "FLAG_L4_FFFF",
    "SKIP_REASONS",
    "Payloads",
    "Reserved",
    "Selection",
    "fits",
    "pack_behind",
    "packed_starts",
    "replace",
    "reserve",
    "rewrite_payloads",
    "select",
]


def packed_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each of regions of ``lengths`` starts when they are laid back to back."""
    starts = np.zeros(len(lengths), np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    return starts


@dataclass(frozen=True, eq=False)
class Payloads:
    """Payload ``i`` is ``data[starts[i] : starts[i] + lengths[i]]``; ``flags[i]`` its
    checksum-form flags (see the module docstring)."""

    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def views(self) -> list[memoryview]:
        """Every payload as a zero-copy ``memoryview`` (what codecs and ciphers take)."""
        mv = self.data.data
        return [mv[s : s + n] for s, n in zip(self.starts.tolist(), self.lengths.tolist())]

    def nbytes(self) -> int:
        return int(self.lengths.sum())

    @classmethod
    def pack(cls, pieces, flags=None) -> Payloads:
        """Payloads copied from a sequence of bytes-like objects, back to back."""
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        starts = packed_starts(lengths)
        data = np.frombuffer(b"".join(pieces), np.uint8)
        flags = np.zeros(len(pieces), np.uint8) if flags is None else np.asarray(flags, np.uint8)
        return cls(data, starts, lengths, flags)


def pack_behind(
    lead: np.ndarray,
    payloads: Payloads,
    lengths: np.ndarray,
    scratch: Callable[[int], np.ndarray] | None = None,
) -> Payloads:
    """Payloads in one new buffer, back to back: item ``i`` is ``lengths[i]`` bytes, the row
    ``lead[i]`` then payload ``i``, then room the caller fills (left uninitialised). One
    compiled pass for the whole segment; the flags are zero. ``scratch(size)``, when given,
    supplies the buffer (one kept from call to call spares the page faults of fresh memory)."""
    m = len(payloads)
    lead = np.ascontiguousarray(lead, np.uint8)
    if lead.ndim != 2 or lead.shape[0] != m:
        raise ValueError(f"lead must be one row of bytes per payload ({m}), not {lead.shape}")
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) != m or (lengths < lead.shape[1] + payloads.lengths).any():
        raise ValueError("each length must hold its lead and its payload")
    data = np.ascontiguousarray(payloads.data, np.uint8)
    if m and (
        int(payloads.starts.min()) < 0
        or int((payloads.starts + payloads.lengths).max()) > len(data)
    ):
        raise ValueError("a payload lies outside its buffer")
    starts = packed_starts(lengths)
    size = int(lengths.sum())
    out = np.empty(size, np.uint8) if scratch is None else scratch(size)
    _gather_behind(
        lead,
        data,
        np.asarray(payloads.starts, np.int64),
        np.asarray(payloads.lengths, np.int64),
        out,
        starts,
    )
    return Payloads(out, starts, lengths, np.zeros(m, np.uint8))


@dataclass(frozen=True, eq=False)
class Selection:
    """The rewritable packets of ``batch``: their positions ``index`` and their ``payloads``
    (views into ``batch.data``); ``keys`` are the whole batch's flow keys, ``skipped`` how many
    packets were left out and why."""

    batch: PacketBatch
    keys: FlowKeys
    index: np.ndarray
    payloads: Payloads
    skipped: dict[str, int]
    # Per selected packet, absolute positions in batch.data (-1: absent) and field values.
    _l3: np.ndarray
    _l4: np.ndarray
    _end: np.ndarray  # one past the payload
    _v4: np.ndarray
    _udp: np.ndarray
    _ip_len: np.ndarray  # IPv4 total length or IPv6 payload length
    _seg: np.ndarray  # TCP/UDP segment length (the pseudo-header's)
    _link_at: np.ndarray
    _link_max: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def count(self, counters: MutableMapping[str, int]) -> None:
        """Add the skipped-packet counts to ``counters`` (as ``skipped_<reason>``)."""
        for reason, n in self.skipped.items():
            if n:
                counters[f"skipped_{reason}"] += n


def _be16(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    return (data[at].astype(np.int64) << 8) | data[at + 1]


def select(batch: PacketBatch, keys: FlowKeys | None = None) -> Selection:
    """Find the TCP/UDP payloads of ``batch`` that can be rewritten (``keys``: its flow keys,
    when already computed)."""
    if keys is None:
        keys = flow_keys(batch)
    elif len(keys) != len(batch):
        raise ValueError(f"flow keys for {len(keys)} packets given for a batch of {len(batch)}")
    n = len(batch)
    reason = np.empty(n, np.uint8)
    l3, l4, start, end, ip_len, link_at, link_max = (np.empty(n, np.int64) for _ in range(7))
    v4, udp = np.empty(n, bool), np.empty(n, bool)
    flags = np.empty(n, np.uint8)
    # One compiled pass over the segment: per packet, numpy's way took some 40 array operations.
    m = _locate(
        np.ascontiguousarray(batch.data),
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.linktypes,
        keys.family,
        keys.proto,
        keys.fragment,
        keys.l3_off,
        keys.l4_off,
        keys.payload_off,
        reason,
        l3,
        l4,
        start,
        end,
        v4,
        udp,
        ip_len,
        flags,
        link_at,
        link_max,
    )
    counts = np.bincount(reason, minlength=len(SKIP_REASONS) + 1)
    skipped = {why: int(counts[k + 1]) for k, why in enumerate(SKIP_REASONS)}
    skipped["too_large"] = 0
    l4, start, end = l4[:m], start[:m], end[:m]
    payloads = Payloads(batch.data, start, end - start, flags[:m])
    return Selection(
        batch,
        keys,
        np.flatnonzero(reason == _OK),
        payloads,
        skipped,
        l3[:m],
        l4,
        end,
        v4[:m],
        udp[:m],
        ip_len[:m],
        end - l4,
        link_at[:m],
        link_max[:m],
    )


def fits(sel: Selection, new_lengths: np.ndarray) -> np.ndarray:
    """Per selected packet, whether a payload of ``new_lengths`` bytes would fit its length
    fields (the IP and UDP lengths, a link-layer length on the way)."""
    delta = new_lengths - sel.payloads.lengths
    ok = (sel._ip_len + delta <= 0xFFFF) & (sel._seg + delta <= 0xFFFF)
    link = sel._link_at >= 0
    if link.any():
        field = _be16(sel.batch.data, np.where(link, sel._link_at, 0)) + delta
        ok &= ~link | ((field >= 0) & (field <= sel._link_max))
    return ok


def replace(
    sel: Selection, new: Payloads, changed: np.ndarray | None = None
) -> tuple[PacketBatch, np.ndarray]:
    """The batch with each selected packet's payload replaced by ``new`` (one per selected
    packet; where ``changed`` is False the packet stays as it was).

    Returns the new batch and, per selected packet, whether it was rewritten: a payload too
    large for a length field leaves its packet as it was (counted in ``sel.skipped``).
    """
    placed = _place(sel, new, changed, new.lengths)
    return placed.batch, placed.done


@dataclass(eq=False)
class Reserved:
    """A new batch whose rewritten packets have room for their new payloads: ``at[i]`` is
    where selected packet ``i``'s new payload starts in ``batch.data`` (-1: left as it was,
    ``done[i]`` False). Fill the room, then call ``finish()`` for the TCP/UDP checksums."""

    batch: PacketBatch
    done: np.ndarray
    at: np.ndarray
    _finish: Callable[[], None]

    def finish(self) -> PacketBatch:
        self._finish()
        return self.batch


def reserve(
    sel: Selection, lengths: np.ndarray, lead: np.ndarray, changed: np.ndarray | None = None
) -> Reserved:
    """As ``replace``, but the new payloads (``lengths[i]`` bytes) are written by the caller
    into the new batch's buffer itself, sparing a copy: each begins with the row ``lead[i]``,
    the rest is left for the caller (uninitialised until then). Lengths and the IPv4 header
    checksum are fixed at once, the TCP/UDP checksums by ``finish()``."""
    m = len(sel)
    lead = np.ascontiguousarray(lead, np.uint8)
    lengths = np.asarray(lengths, np.int64)
    if lead.ndim != 2 or lead.shape[0] != m or len(lengths) != m:
        raise ValueError(f"one lead row and one length per selected packet ({m})")
    if (lengths < lead.shape[1]).any():
        raise ValueError("each length must hold its lead")
    w = lead.shape[1]
    new = Payloads(
        lead.reshape(-1), np.arange(0, m * w, w, dtype=np.int64), lengths, np.zeros(m, np.uint8)
    )
    return _place(sel, new, changed, np.full(m, w, np.int64))


def _place(
    sel: Selection, new: Payloads, changed: np.ndarray | None, copy_len: np.ndarray
) -> Reserved:
    m = len(sel)
    if len(new) != m:
        raise ValueError(f"{len(new)} new payloads for {m} selected packets")
    changed = np.ones(m, bool) if changed is None else np.asarray(changed, bool).copy()
    delta = new.lengths - sel.payloads.lengths
    room = fits(sel, new.lengths)
    too_large = changed & ~room
    sel.skipped["too_large"] += int(too_large.sum())
    changed &= room
    batch = sel.batch
    if not changed.any():
        return Reserved(batch, changed, np.full(m, -1, np.int64), lambda: None)
    cap = batch.caplen.astype(np.int64)
    new_cap = cap.copy()
    new_cap[sel.index] += np.where(changed, delta, 0)
    out_off = packed_starts(new_cap)
    out = np.empty(int(new_cap.sum()), np.uint8)
    src = np.ascontiguousarray(batch.data)
    new_data = np.ascontiguousarray(new.data, np.uint8)
    copy_len = np.asarray(copy_len, np.int64)
    if m and (int(new.starts.min()) < 0 or int((new.starts + copy_len).max()) > len(new_data)):
        raise ValueError("a new payload lies outside its buffer")
    at = np.full(m, -1, np.int64)
    removed = np.full(m, -1, np.int64)
    starts = np.asarray(new.starts, np.int64)
    lengths = np.asarray(new.lengths, np.int64)
    flags = np.asarray(new.flags, np.uint8)
    # Headers, new payload and trailer copied and the lengths and checksums fixed in one pass
    # (the TCP/UDP checksums of payloads not all copied: by finish()).
    _rebuild(
        src,
        batch.offsets,
        batch.caplen,
        out,
        out_off,
        sel.index,
        changed,
        sel._l3,
        sel._l4,
        sel.payloads.starts,
        sel._end,
        sel._v4,
        sel._udp,
        sel._ip_len,
        sel._link_at,
        new_data,
        starts,
        lengths,
        copy_len,
        flags,
        at,
        removed,
    )
    caplen = new_cap.astype(np.uint32)
    origlen = batch.origlen.copy()
    rows = sel.index[changed]
    origlen[rows] = caplen[rows]
    seq = batch.seq if batch.has_explicit_seq else None
    result = PacketBatch(
        out,
        out_off,
        caplen,
        origlen,
        batch.ts_ns,
        batch.iface,
        batch.interfaces,
        batch.first_seq,
        seq,
    )

    def finish() -> None:
        _finish(
            out,
            at,
            sel.index,
            out_off,
            batch.offsets,
            sel._l4,
            sel._udp,
            sel.payloads.starts,
            sel._end,
            lengths,
            flags,
            src,
            removed,
        )

    return Reserved(result, changed, at, finish)


def rewrite_payloads(
    batch: PacketBatch, fn: Callable, counters: MutableMapping[str, int] | None = None
) -> PacketBatch:
    """Apply ``fn`` to each rewritable payload: it takes a ``memoryview`` and returns the new
    bytes, or None to leave that packet alone. The simple per-packet path (services that can
    work on whole arrays use ``select``/``replace``). The checksum-form flags pass through."""
    sel = select(batch)
    results = [fn(p) for p in sel.payloads.views()]
    changed = np.array([r is not None for r in results], bool)
    pieces = [b"" if r is None else r for r in results]
    out, done = replace(sel, Payloads.pack(pieces, sel.payloads.flags), changed)
    if counters is not None:
        sel.count(counters)
        counters["rewritten"] += int(done.sum())
    return out
