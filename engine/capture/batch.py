"""PacketBatch: a run of packets as struct-of-arrays over one byte buffer."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from itertools import pairwise

import numpy as np

from engine.capture import backend

# Link types we name in messages and `pktx info`; any other value is carried through untouched.
LINKTYPE_NAMES = {
    0: "NULL",
    1: "EN10MB",
    7: "ARCNET_BSD",
    8: "SLIP",
    9: "PPP",
    101: "RAW",
    104: "C_HDLC",
    105: "IEEE802_11",
    108: "LOOP",
    113: "LINUX_SLL",
    119: "PRISM_HEADER",
    127: "IEEE802_11_RADIOTAP",
    129: "ARCNET_LINUX",
    165: "MTP2",
    192: "PPI",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}

DEFAULT_SNAPLEN = 262144


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"LINKTYPE_{linktype}")


@dataclass(frozen=True)
class Interface:
    """What a packet was captured on: link type and snapshot length (pcapng IDB, pcap header),
    and ``tsresol``, the timestamp resolution it was captured at as a pcapng ``if_tsresol``
    value (6: microseconds, 9: nanoseconds, 0x80 | k: 2**-k seconds; None: not known), which
    a writer keeps unless told otherwise."""

    linktype: int
    snaplen: int = DEFAULT_SNAPLEN
    name: str | None = None
    description: str | None = None
    tsresol: int | None = None


_IFACE_FIELDS = frozenset(f.name for f in fields(Interface))
_HEADER = struct.Struct("<4sHHqq")  # magic, version, flags, count, first_seq
_EXPLICIT_SEQ = 1  # flags: the seq frame holds the sequence numbers, even when n is 0
_MAGIC = b"PKXB"
_VERSION = 1
# Frame order after the header; the receiver takes them as numpy views without copying.
_ARRAY_FIELDS = (
    ("offsets", np.int64),
    ("caplen", np.uint32),
    ("origlen", np.uint32),
    ("ts_ns", np.int64),
    ("iface", np.uint32),
)
# header, the arrays, the explicit seq (empty when implicit), the data
FRAME_COUNT = 3 + len(_ARRAY_FIELDS)


class PacketBatch:
    """A run of packets: one ``uint8`` buffer and parallel arrays, no object per packet.

    Packet ``i`` is ``data[offsets[i] : offsets[i] + caplen[i]]``; packets need not be
    contiguous or in buffer order (a batch read from a file points between the record headers).
    ``ts_ns`` is int64 nanoseconds since the epoch; ``iface`` indexes ``interfaces``, which gives
    each packet's link type. Stream sequence numbers are implicit, ``first_seq + position``,
    until ``take`` picks packets out of order or leaves some out: then ``seq`` is an explicit
    int64 array that travels with the batch (the reassembler puts packets back by it).
    """

    __slots__ = (
        "_seq",
        "caplen",
        "data",
        "first_seq",
        "iface",
        "interfaces",
        "offsets",
        "origlen",
        "ts_ns",
    )

    def __init__(
        self,
        data: np.ndarray,
        offsets: np.ndarray,
        caplen: np.ndarray,
        origlen: np.ndarray,
        ts_ns: np.ndarray,
        iface: np.ndarray | None = None,
        interfaces: Sequence[Interface] = (Interface(1),),
        first_seq: int = 0,
        seq: np.ndarray | None = None,
    ) -> None:
        self.data = _as(data, np.uint8)
        self.offsets = _as(offsets, np.int64)
        self.caplen = _as(caplen, np.uint32)
        self.origlen = _as(origlen, np.uint32)
        self.ts_ns = _as(ts_ns, np.int64)
        n = len(self.offsets)
        self.iface = np.zeros(n, np.uint32) if iface is None else _as(iface, np.uint32)
        self.interfaces = tuple(interfaces)
        self.first_seq = int(first_seq)
        self._seq = None if seq is None else _as(seq, np.int64)
        if self._seq is not None and len(self._seq) != n:
            raise ValueError("PacketBatch seq differs in length from its packets")
        if not (len(self.caplen) == len(self.origlen) == len(self.ts_ns) == len(self.iface) == n):
            raise ValueError("PacketBatch arrays differ in length")
        if n and not self.interfaces:
            raise ValueError("PacketBatch has packets but no interfaces")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, interfaces: Sequence[Interface] = (Interface(1),)) -> PacketBatch:
        z = np.zeros(0, np.int64)
        return cls(
            np.zeros(0, np.uint8),
            z,
            z.astype(np.uint32),
            z.astype(np.uint32),
            z,
            interfaces=interfaces,
        )

    @classmethod
    def from_packets(
        cls,
        packets: Iterable[bytes],
        ts_ns: Iterable[int] | None = None,
        linktype: int = 1,
        origlen: Iterable[int] | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
    ) -> PacketBatch:
        """Build a batch by copying ``packets`` (bytes-like) into one buffer."""
        pkts = [bytes(p) for p in packets]
        caplen = np.fromiter((len(p) for p in pkts), np.uint32, len(pkts))
        offsets = np.zeros(len(pkts), np.int64)
        if len(pkts) > 1:
            np.cumsum(caplen[:-1], out=offsets[1:])
        data = np.frombuffer(b"".join(pkts), np.uint8).copy()
        ts = np.zeros(len(pkts), np.int64) if ts_ns is None else np.fromiter(ts_ns, np.int64)
        orig = caplen.copy() if origlen is None else np.fromiter(origlen, np.uint32)
        return cls(data, offsets, caplen, orig, ts, interfaces=(Interface(linktype, snaplen),))

    @classmethod
    def concat(cls, batches: Sequence[PacketBatch]) -> PacketBatch:
        """One batch holding the packets of ``batches`` in order (copies into one buffer)."""
        batches = [b for b in batches]
        if not batches:
            return cls.empty()
        index: dict[Interface, int] = {}
        parts = []
        for b in batches:
            remap = np.array(
                [index.setdefault(i, len(index)) for i in b.interfaces] or [0], np.uint32
            )
            c = b.compact()
            parts.append((c, remap[c.iface] if len(c) else c.iface))
        interfaces = tuple(index)
        data = np.concatenate([c.data for c, _ in parts])
        bases = np.cumsum([0] + [len(c.data) for c, _ in parts[:-1]])
        offsets = np.concatenate([c.offsets + base for (c, _), base in zip(parts, bases)])
        return cls(
            data,
            offsets,
            np.concatenate([c.caplen for c, _ in parts]),
            np.concatenate([c.origlen for c, _ in parts]),
            np.concatenate([c.ts_ns for c, _ in parts]),
            np.concatenate([i for _, i in parts]),
            interfaces or batches[0].interfaces,
            batches[0].first_seq,
            np.concatenate([b.seq for b in batches])
            if any(b.has_explicit_seq for b in batches) or not _consecutive(batches)
            else None,
        )

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.packet(i)

    def packet(self, i: int) -> np.ndarray:
        """Packet ``i``'s captured bytes as a zero-copy ``uint8`` view."""
        o = int(self.offsets[i])
        return self.data[o : o + int(self.caplen[i])]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start = key.indices(len(self))[0]
            seq = None if self._seq is None else self._seq[key]
            if self._seq is None and key.step not in (None, 1):
                seq = self.seq[key]
            return self._select(key, self.first_seq + start, seq)
        if isinstance(key, (int, np.integer)):
            return self.packet(int(key))
        raise TypeError(f"PacketBatch indices must be int or slice, not {type(key).__name__}")

    def take(self, indices) -> PacketBatch:
        """The packets at ``indices`` (any order, repeats allowed), sharing this buffer."""
        idx = np.asarray(indices, np.int64)
        return self._select(idx, self.first_seq, self.seq[idx])

    def _select(self, key, first_seq: int, seq) -> PacketBatch:
        return PacketBatch(
            self.data,
            self.offsets[key],
            self.caplen[key],
            self.origlen[key],
            self.ts_ns[key],
            self.iface[key],
            self.interfaces,
            first_seq,
            seq,
        )

    @property
    def seq(self) -> np.ndarray:
        """Each packet's stream sequence number (int64)."""
        if self._seq is not None:
            return self._seq
        return np.arange(self.first_seq, self.first_seq + len(self), dtype=np.int64)

    @property
    def has_explicit_seq(self) -> bool:
        return self._seq is not None

    def with_seq(self, seq) -> PacketBatch:
        """This batch with explicit sequence numbers ``seq`` (None: implicit again)."""
        return PacketBatch(
            self.data,
            self.offsets,
            self.caplen,
            self.origlen,
            self.ts_ns,
            self.iface,
            self.interfaces,
            self.first_seq,
            seq,
        )

    @property
    def nbytes(self) -> int:
        """Captured bytes in the batch (the sum of ``caplen``)."""
        return int(self.caplen.sum(dtype=np.int64))

    @property
    def linktypes(self) -> np.ndarray:
        """Each packet's link type."""
        table = np.array([i.linktype for i in self.interfaces] or [0], np.uint32)
        return table[self.iface]

    @property
    def linktype(self) -> int:
        """The batch's link type; an error if its packets have several."""
        kinds = (
            {self.interfaces[i].linktype for i in np.unique(self.iface)}
            if len(self)
            else {i.linktype for i in self.interfaces[:1]}
        )
        if len(kinds) != 1:
            raise ValueError(f"batch mixes link types {sorted(kinds)}")
        return kinds.pop()

    def is_compact(self) -> bool:
        """Whether the packets lie back to back in buffer order, filling the buffer exactly."""
        n = len(self)
        if n == 0:
            return len(self.data) == 0
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) + int(self.caplen[-1]) != len(
            self.data
        ):
            return False
        return bool(np.array_equal(self.offsets[1:], self.offsets[:-1] + self.caplen[:-1]))

    def compact(self) -> PacketBatch:
        """This batch with its packets copied back to back into a new buffer (or itself)."""
        if self.is_compact():
            return self
        n = len(self)
        offsets = np.zeros(n, np.int64)
        if n > 1:
            np.cumsum(self.caplen[:-1], out=offsets[1:])
        total = int(offsets[-1] + self.caplen[-1]) if n else 0
        data = np.empty(total, np.uint8)
        backend.capture.gather(self.data, self.offsets, self.caplen, data, offsets)
        return PacketBatch(
            data,
            offsets,
            self.caplen,
            self.origlen,
            self.ts_ns,
            self.iface,
            self.interfaces,
            self.first_seq,
            self._seq,
        )

    def same_packets(self, other: PacketBatch) -> bool:
        """Whether both hold the same packets: bytes, lengths, timestamps and link types."""
        if len(self) != len(other):
            return False
        if not (
            np.array_equal(self.caplen, other.caplen)
            and np.array_equal(self.origlen, other.origlen)
            and np.array_equal(self.ts_ns, other.ts_ns)
            and np.array_equal(self.linktypes, other.linktypes)
        ):
            return False
        return bool(np.array_equal(self.compact().data, other.compact().data))

    # -- frames --------------------------------------------------------------------------------
    def to_frames(self) -> list:
        """The batch as a list of bytes-like frames (header, arrays, data) for a multipart send.

        Only the span of the buffer the packets use is sent, as a view: nothing large is copied.
        """
        n = len(self)
        if n:
            lo = int(self.offsets.min())
            hi = int((self.offsets + self.caplen).max())
        else:
            lo = hi = 0
        offsets = self.offsets - lo if lo else self.offsets
        meta = json.dumps([asdict(i) for i in self.interfaces]).encode()
        flags = _EXPLICIT_SEQ if self._seq is not None else 0
        header = _HEADER.pack(_MAGIC, _VERSION, flags, n, self.first_seq) + meta
        arrays = [
            np.ascontiguousarray(getattr(self, f) if f != "offsets" else offsets, t)
            for f, t in _ARRAY_FIELDS
        ]
        seq = np.ascontiguousarray(self._seq).data.cast("B") if self._seq is not None else b""
        return [header, *(a.data.cast("B") for a in arrays), seq, self.data[lo:hi].data]

    @classmethod
    def from_frames(cls, frames: Sequence) -> PacketBatch:
        """Rebuild a batch from ``to_frames`` output, as numpy views on the frames (no copy)."""
        if len(frames) != FRAME_COUNT:
            raise ValueError(f"expected {FRAME_COUNT} frames, got {len(frames)}")
        head = bytes(frames[0])
        if len(head) < _HEADER.size:
            raise ValueError("batch header frame too short")
        magic, version, flags, n, first_seq = _HEADER.unpack_from(head)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"not a version-{_VERSION} batch header")
        try:
            # Fields a newer peer may add are ignored, not an error.
            interfaces = tuple(
                Interface(**{k: v for k, v in d.items() if k in _IFACE_FIELDS})
                for d in json.loads(head[_HEADER.size :])
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad interface table in batch header: {exc}") from None
        arrays = []
        for frame, (field, dtype) in zip(frames[1:-2], _ARRAY_FIELDS):
            a = np.frombuffer(frame, dtype)
            if len(a) != n:
                raise ValueError(f"frame {field} holds {len(a)} values, header says {n}")
            arrays.append(a)
        data = np.frombuffer(frames[-1], np.uint8)
        seq = None
        # An explicit empty list (a result that kept none of its packets) is flagged, since
        # its frame is as empty as that of a batch without one.
        if len(frames[-2]) or flags & _EXPLICIT_SEQ:
            seq = np.frombuffer(frames[-2], np.int64)
            if len(seq) != n:
                raise ValueError(f"frame seq holds {len(seq)} values, header says {n}")
        offsets, caplen, origlen, ts_ns, iface = arrays
        batch = cls(
            data,
            offsets,
            caplen,
            origlen,
            ts_ns,
            iface,
            interfaces=interfaces,
            first_seq=first_seq,
            seq=seq,
        )
        # Compared without adding, which could wrap past int64 for a hostile offset.
        if n and (
            int(batch.offsets.min()) < 0
            or np.any(batch.offsets > len(data) - batch.caplen.astype(np.int64))
        ):
            raise ValueError("batch packet extends past its data frame")
        if n and int(batch.iface.max()) >= len(interfaces):
            raise ValueError("batch packet refers to an interface it does not describe")
        return batch

    def __repr__(self) -> str:
        return f"PacketBatch({len(self)} packets, {self.nbytes} bytes, first_seq={self.first_seq})"


def _consecutive(batches: Sequence[PacketBatch]) -> bool:
    """Whether implicit numbering of the batches' packets, one after another, is right."""
    return all(b.first_seq == a.first_seq + len(a) for a, b in pairwise(batches))


def _as(a, dtype) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype == dtype else a.astype(dtype)
