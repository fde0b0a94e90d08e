"""Read pcap and pcapng files into PacketBatches: headers here, records by the chosen walker."""

from __future__ import annotations

import logging
import mmap
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from engine.capture import backend
from engine.capture import pcapformat as F
from engine.capture.batch import Interface, PacketBatch
from engine.capture.timestamps import TsResolution, ticks_to_ns
from engine.errors import CaptureError

log = logging.getLogger(__name__)

ERRORS = ("strict", "truncate")
# int64 nanoseconds span +-292 years around the epoch; an if_tsoffset beyond that is damage.
_MAX_TSOFFSET_S = (1 << 63) // 1_000_000_000
# Streaming gives back the mapped pages behind the walk once this much has been consumed.
_RELEASE_BYTES = 16 << 20
# How many records one walker call takes when reading a whole file.
_CHUNK = 1 << 16


class CaptureTruncatedWarning(UserWarning):
    """``errors="truncate"`` dropped the damaged tail of a capture (the message says where)."""


@dataclass
class _Section:
    swap: bool
    version: tuple[int, int]
    iface_base: int
    resolutions: list[TsResolution] = field(default_factory=list)
    offsets_s: list[int] = field(default_factory=list)


class CaptureReader:
    """Iterate a pcap or pcapng file as PacketBatches of at most ``batch_packets`` packets.

    The file is memory-mapped; each batch's ``data`` is a zero-copy view of the records it
    holds, and pages behind the walk are released, so memory stays bounded whatever the file
    size. After iteration, ``damage`` holds the ``CaptureError`` that ended a
    ``errors="truncate"`` read early (else None) and ``dropped_bytes`` what was left unread.
    """

    def __init__(
        self,
        path,
        *,
        errors: str = "strict",
        batch_packets: int = 65536,
        backend_module: ModuleType | None = None,
        _buffer: np.ndarray | None = None,
    ):
        if errors not in ERRORS:
            raise ValueError(f"errors must be one of {ERRORS}, not {errors!r}")
        if batch_packets < 1:
            raise ValueError("batch_packets must be at least 1")
        self.path = os.fspath(path)
        self.errors = errors
        self.batch_packets = int(batch_packets)
        self.walker = backend_module or backend.capture
        self.damage: CaptureError | None = None
        self.dropped_bytes = 0
        self.interfaces: list[Interface] = []
        self.sections: list[_Section] = []
        self._times: list[tuple[TsResolution, int]] = []  # per global interface
        self._consumer_released = 0
        self._mmap: mmap.mmap | None = None
        if _buffer is not None:
            self.buf = _buffer
        else:
            self.buf = self._map()
        self.size = len(self.buf)
        # How far the walk has come: the end of the last batch handed out, in bytes of the
        # file (read by another thread for a progress display).
        self.position = 0
        self._detect()

    # -- opening -------------------------------------------------------------------------------
    def _map(self) -> np.ndarray:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise CaptureError(
                        "empty file, not a pcap or pcapng capture", path=self.path, offset=0
                    )
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise CaptureError(f"cannot read: {exc.strerror or exc}", path=self.path) from None
        return np.frombuffer(self._mmap, np.uint8)

    def _error(self, message: str, record: int | None = None, offset: int | None = None):
        return CaptureError(message, path=self.path, record=record, offset=offset)

    def _detect(self) -> None:
        if self.size < 4:
            raise self._error(f"file of {self.size} bytes is too short to be a capture", 0, 0)
        (magic,) = struct.unpack_from("<I", self.buf.data, 0)
        if magic in (F.PCAP_MAGIC_US, F.PCAP_MAGIC_NS):
            self._open_pcap(False, magic == F.PCAP_MAGIC_NS)
        elif magic in (_bswap(F.PCAP_MAGIC_US), _bswap(F.PCAP_MAGIC_NS)):
            self._open_pcap(True, magic == _bswap(F.PCAP_MAGIC_NS))
        elif magic == F.BT_SHB:
            self.format = "pcapng"
            self.data_start = 0
            # An unsupported or damaged first section is an error at open, as a pcap header is.
            self._read_shb(0, 0)
        else:
            raise self._error(
                f"unknown file format (magic number 0x{magic:08x}): not a pcap or pcapng capture",
                0,
                0,
            )

    def _open_pcap(self, swap: bool, nano: bool) -> None:
        self.format = "pcap"
        self.swap, self.nano = swap, nano
        if self.size < F.PCAP_HEADER_LEN:
            raise self._error(f"pcap file header cut short: {self.size} of 24 bytes", 0, 0)
        e = ">" if swap else "<"
        _, vmaj, vmin, _zone, _sigfigs, snaplen, lt = struct.unpack_from(
            e + "IHHiIII", self.buf.data, 0
        )
        self.version = (vmaj, vmin)
        if vmaj != F.PCAP_VERSION_MAJOR or vmin > F.PCAP_VERSION_MINOR_MAX:
            raise self._error(f"unsupported pcap savefile version {vmaj}.{vmin}", None, 4)
        if lt & 0x03FF0000:
            reserved = lt & 0x03FF0000
            raise self._error(
                f"savefile linktype reserved field not zero (0x{reserved:08x})", None, 20
            )
        self.fcs_len = (lt >> 28) * 2 if lt & 0x04000000 else None
        linktype = lt & 0xFFFF
        self.snaplen = snaplen
        self.max_caplen = max(
            snaplen, F.MAX_SNAPLEN_LARGE if linktype in F.LARGE_SNAPLEN_LINKTYPES else F.MAX_SNAPLEN
        )
        self.interfaces = [Interface(linktype, snaplen, tsresol=9 if nano else 6)]
        self.data_start = F.PCAP_HEADER_LEN

    @property
    def byte_order(self) -> str:
        if self.format == "pcap":
            return "big" if self.swap else "little"
        orders = {"big" if s.swap else "little" for s in self.sections}
        return orders.pop() if len(orders) == 1 else "mixed"

    @property
    def ts_resolutions(self) -> list[str]:
        if self.format == "pcap":
            return ["ns" if self.nano else "us"]
        return sorted({str(r) for s in self.sections for r in s.resolutions})

    # -- walking -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PacketBatch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[PacketBatch]:
        """The batches from packet ``start`` (0-based) on, each numbered by its packets' places
        in the file. The records before it are walked (their headers say where the next one
        is) but not handed out: no batch is made of them, and their pages are released.
        At the end, ``walked`` is the number of packets in the file."""
        seq = 0
        released = 0
        for arrays in self._chunks(self.batch_packets):
            offsets, caplen, origlen, ts, iface = arrays
            n = len(offsets)
            if n == 0:
                continue
            if seq + n <= start:
                seq += n
                released = self._release_behind(int(offsets[-1]) + int(caplen[-1]), released)
                continue
            if seq < start:  # the batch that holds packet ``start``: from there
                cut = start - seq
                offsets, caplen, origlen, ts, iface = (a[cut:] for a in arrays)
                seq, n = start, n - cut
            lo = int(offsets[0])
            hi = int(offsets[-1]) + int(caplen[-1])
            batch = PacketBatch(
                self.buf[lo:hi],
                offsets - lo,
                caplen,
                origlen,
                ts,
                iface,
                tuple(self.interfaces),
                seq,
            )
            seq += n
            self.position = hi
            yield batch
            # The consumer has had the batch: let the kernel drop its pages and those behind
            # it (they fault back in from the page cache if a kept batch is read again). Up to
            # the batch's end, not its start: else two batches' spans stay resident at once.
            released = self._release_behind(hi, released)
        self.walked = seq
        self.position = self.size

    def _release_behind(self, hi: int, released: int) -> int:
        """Release the map's pages from ``released`` to ``hi`` once that is worth it; where
        the released part now ends."""
        if self._mmap is not None and hi - released >= _RELEASE_BYTES:
            end = hi - hi % mmap.PAGESIZE
            self._mmap.madvise(mmap.MADV_DONTNEED, released, end - released)
            return end
        return released

    def file_end(self, batch: PacketBatch) -> int | None:
        """Where in the file ``batch``'s last byte ends, if its buffer is a view of this
        reader's map (else None: a copy, which holds no pages of the map)."""
        if self._mmap is None or len(batch) == 0:
            return None
        base = self.buf.__array_interface__["data"][0]
        start = batch.data.__array_interface__["data"][0] - base
        if not 0 <= start <= self.size:
            return None
        return start + int((batch.offsets + batch.caplen).max())

    def release_through(self, end: int) -> None:
        """Drop the map's pages before ``end`` from memory (a consumer is done with them).

        The walk releases pages behind itself, but a consumer that holds batches (a dispatcher
        sending them without copying) faults them back in; it calls this as it finishes."""
        if self._mmap is None:
            return
        end -= end % mmap.PAGESIZE
        if end - self._consumer_released >= _RELEASE_BYTES:
            self._mmap.madvise(
                mmap.MADV_DONTNEED, self._consumer_released, end - self._consumer_released
            )
            self._consumer_released = end

    def read_all(self) -> PacketBatch:
        """The whole capture as one batch whose buffer is the file's bytes (no packet copy)."""
        parts = list(self._chunks(_CHUNK))
        if not parts:
            return PacketBatch(
                self.buf[:0],
                np.zeros(0, np.int64),
                np.zeros(0, np.uint32),
                np.zeros(0, np.uint32),
                np.zeros(0, np.int64),
                np.zeros(0, np.uint32),
                tuple(self.interfaces) or (Interface(1),),
            )
        cols = [
            np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]
            for k in range(5)
        ]
        offsets, caplen, origlen, ts_ns, iface = cols
        return PacketBatch(
            self.buf, offsets, caplen, origlen, ts_ns, iface, interfaces=tuple(self.interfaces)
        )

    def _chunks(self, limit: int):
        if self.format == "pcap":
            yield from self._pcap_chunks(limit)
        else:
            yield from self._pcapng_chunks(limit)

    def _alloc(self, limit: int):
        return (np.empty(limit, np.int64), np.empty(limit, np.uint32), np.empty(limit, np.uint32))

    def _room(self, limit: int, pos: int, min_record: int) -> int:
        # No more records than the bytes left can hold: a huge batch_packets (or a small file
        # read with the default) must not allocate arrays for records that cannot be there.
        return max(1, min(limit, (self.size - pos) // min_record + 1))

    def _pcap_chunks(self, limit: int):
        pos, record = self.data_start, 0
        while pos < self.size:
            room = self._room(limit, pos, F.PCAP_RECORD_HEADER_LEN)
            offsets, caplen, origlen = self._alloc(room)
            ts = np.empty(room, np.int64)
            n, new_pos, status = self.walker.walk_pcap(
                self.buf,
                pos,
                self.size,
                self.swap,
                self.nano,
                self.max_caplen,
                room,
                offsets,
                caplen,
                origlen,
                ts,
            )
            if n:
                yield (offsets[:n], caplen[:n], origlen[:n], ts[:n], np.zeros(n, np.uint32))
            record += n
            pos = new_pos
            if status != F.OK:
                self._damaged(self._pcap_message(status, pos), record, pos)
                return
            if n == 0:
                break

    def _pcap_message(self, status: int, pos: int) -> str:
        left = self.size - pos
        if status == F.TRUNC_HEADER:
            return f"record header cut short: {left} of 16 bytes before end of file"
        e = ">" if self.swap else "<"
        incl, _orig = struct.unpack_from(e + "II", self.buf.data, pos + 8)
        if status == F.BAD_CAPLEN:
            return f"invalid packet capture length {incl}, bigger than maximum of {self.max_caplen}"
        return f"record data cut short: {left - 16} of {incl} bytes before end of file"

    def _damaged(self, message: str, record: int, pos: int) -> None:
        err = self._error(message, record, pos)
        if self.errors == "strict":
            raise err
        self.damage = err
        self.dropped_bytes = self.size - pos
        warnings.warn(
            CaptureTruncatedWarning(f"{err}; dropped the last {self.dropped_bytes} bytes"),
            stacklevel=4,
        )

    # -- pcapng --------------------------------------------------------------------------------
    def _pcapng_chunks(self, limit: int):
        pos, block = 0, 0
        section: _Section | None = None
        self.sections, self.interfaces, self._times = [], [], []
        while pos < self.size:
            if section is None:
                section, pos = self._read_shb(pos, block)
                self.sections.append(section)
                block += 1
                continue
            room = self._room(limit, pos, F.PCAPNG_MIN_BLOCK)
            offsets, caplen, origlen = self._alloc(room)
            ticks = np.empty(room, np.uint64)
            iface = np.empty(room, np.uint32)
            n, new_pos, status = self.walker.walk_pcapng(
                self.buf,
                pos,
                self.size,
                section.swap,
                section.iface_base,
                len(section.resolutions),
                self._snaplen0(section),
                room,
                offsets,
                caplen,
                origlen,
                ticks,
                iface,
            )
            if n:
                yield (
                    offsets[:n],
                    caplen[:n],
                    origlen[:n],
                    self._ticks_to_ns(ticks[:n], iface[:n]),
                    iface[:n],
                )
            # Blocks skipped by the walker are not counted one by one; record numbers for
            # pcapng are packets read plus header blocks, which is what a user can check.
            block += n
            pos = new_pos
            if status == F.OK:
                if n == 0:
                    break
                continue
            if status == F.BLOCK:
                btype = struct.unpack_from(">I" if section.swap else "<I", self.buf.data, pos)[0]
                try:
                    if btype == F.BT_SHB:
                        section, pos = self._read_shb(pos, block)
                        self.sections.append(section)
                    else:
                        pos = self._read_idb(pos, block, section)
                except CaptureError as err:
                    if self.errors == "strict":
                        raise
                    self._damaged(err.message, block, pos)
                    return
                block += 1
                continue
            self._damaged(self._pcapng_message(status, pos, section), block, pos)
            return

    def _snaplen0(self, section: _Section) -> int:
        """The snaplen of the section's first interface (it cuts Simple Packet Blocks)."""
        if not section.resolutions:
            return 0
        return self.interfaces[section.iface_base].snaplen

    def _ticks_to_ns(self, ticks: np.ndarray, iface: np.ndarray) -> np.ndarray:
        first = int(iface[0])
        if np.all(iface == first):
            res, off = self._times[first]
            return ticks_to_ns(ticks, res, off)
        out = np.empty(len(ticks), np.int64)
        for i in np.unique(iface):
            mask = iface == i
            res, off = self._times[int(i)]
            out[mask] = ticks_to_ns(ticks[mask], res, off)
        return out

    def _pcapng_message(self, status: int, pos: int, section: _Section) -> str:
        e = ">" if section.swap else "<"
        left = self.size - pos
        if status == F.TRUNC_HEADER:
            return f"block header cut short: {left} of 8 bytes before end of file"
        btype, blen = struct.unpack_from(e + "II", self.buf.data, pos)
        if status == F.TRUNC_DATA:
            return (
                f"block of type 0x{btype:08x} cut short: {left} of {blen} bytes before end of file"
            )
        if status == F.BAD_BLOCK_LEN:
            return f"block of type 0x{btype:08x} has invalid total length {blen}"
        if status == F.BAD_TRAILER:
            trailer = struct.unpack_from(e + "I", self.buf.data, pos + blen - 4)[0]
            return f"block total length in header {blen} and trailer {trailer} don't match"
        if status == F.BAD_IFACE:
            ifid = (
                struct.unpack_from(e + "I", self.buf.data, pos + 8)[0]
                if btype == F.BT_EPB
                else struct.unpack_from(e + "H", self.buf.data, pos + 8)[0]
            )
            if btype == F.BT_SPB:
                return "simple packet block in a section with no interface"
            return (
                f"packet refers to interface {ifid}, but the section describes "
                f"{len(section.resolutions)}"
            )
        incl = struct.unpack_from(e + "I", self.buf.data, pos + 20)[0]
        return f"packet captured length {incl} overruns its block of {blen} bytes"

    def _block_bounds(self, pos: int, block: int, swap: bool, min_len: int) -> int:
        e = ">" if swap else "<"
        if self.size - pos < 12:
            raise self._error(
                f"block header cut short: {self.size - pos} bytes before end of file", block, pos
            )
        btype, blen = struct.unpack_from(e + "II", self.buf.data, pos)
        if blen < min_len or blen % 4:
            raise self._error(
                f"block of type 0x{btype:08x} has invalid total length {blen}", block, pos
            )
        if self.size - pos < blen:
            raise self._error(
                f"block of type 0x{btype:08x} cut short: {self.size - pos} of "
                f"{blen} bytes before end of file",
                block,
                pos,
            )
        trailer = struct.unpack_from(e + "I", self.buf.data, pos + blen - 4)[0]
        if trailer != blen:
            raise self._error(
                f"block total length in header {blen} and trailer {trailer} don't match", block, pos
            )
        return blen

    def _read_shb(self, pos: int, block: int) -> tuple[_Section, int]:
        if self.size - pos < 12:
            raise self._error("section header block cut short", block, pos)
        (btype,) = struct.unpack_from("<I", self.buf.data, pos)
        if btype != F.BT_SHB:
            raise self._error(
                f"expected a section header block, found type 0x{btype:08x}", block, pos
            )
        (bom,) = struct.unpack_from("<I", self.buf.data, pos + 8)
        if bom == F.BYTE_ORDER_MAGIC:
            swap = False
        elif bom == _bswap(F.BYTE_ORDER_MAGIC):
            swap = True
        else:
            raise self._error(
                f"section header has bad byte-order magic 0x{bom:08x}", block, pos + 8
            )
        e = ">" if swap else "<"
        if self.size - pos < 16:
            raise self._error("section header block cut short", block, pos)
        vmaj, vmin = struct.unpack_from(e + "HH", self.buf.data, pos + 12)
        if (vmaj, vmin) not in F.PCAPNG_VERSIONS:
            raise self._error(f"unsupported pcapng savefile version {vmaj}.{vmin}", block, pos + 12)
        blen = self._block_bounds(pos, block, swap, 28)
        self._options(pos + 24, pos + blen - 4, swap, block)
        return _Section(swap, (vmaj, vmin), len(self.interfaces)), pos + blen

    def _read_idb(self, pos: int, block: int, section: _Section) -> int:
        blen = self._block_bounds(pos, block, section.swap, 20)
        e = ">" if section.swap else "<"
        linktype, _reserved, snaplen = struct.unpack_from(e + "HHI", self.buf.data, pos + 8)
        opts = self._options(pos + 16, pos + blen - 4, section.swap, block)
        res = TsResolution()
        offset_s = 0
        name = description = None
        for code, start, length in opts:
            value = bytes(self.buf[start : start + length])
            if code == F.IF_TSRESOL and length >= 1:
                res = TsResolution.from_option(value[0])
                if not res.supported():
                    raise self._error(
                        f"unsupported interface timestamp resolution {res}", block, start
                    )
            elif code == F.IF_TSOFFSET and length >= 8:
                (offset_s,) = struct.unpack_from(e + "q", value)
                if abs(offset_s) > _MAX_TSOFFSET_S:
                    raise self._error(
                        f"interface timestamp offset {offset_s} s is out of range", block, start
                    )
            elif code == F.IF_NAME:
                name = value.rstrip(b"\0").decode("utf-8", "replace")
            elif code == F.IF_DESCRIPTION:
                description = value.rstrip(b"\0").decode("utf-8", "replace")
        self.interfaces.append(Interface(linktype, snaplen, name, description, res.to_option()))
        section.resolutions.append(res)
        section.offsets_s.append(offset_s)
        self._times.append((res, offset_s))
        return pos + blen

    def _options(self, pos: int, end: int, swap: bool, block: int) -> list[tuple[int, int, int]]:
        e = ">" if swap else "<"
        out = []
        while pos < end:
            if end - pos < 4:
                raise self._error("option header overruns its block", block, pos)
            code, length = struct.unpack_from(e + "HH", self.buf.data, pos)
            if code == F.OPT_ENDOFOPT:
                break
            padded = (length + 3) & ~3
            if pos + 4 + padded > end:
                raise self._error(f"option {code} of {length} bytes overruns its block", block, pos)
            out.append((code, pos + 4, length))
            pos += 4 + padded
        return out


def _bswap(x: int) -> int:
    return int.from_bytes(x.to_bytes(4, "little"), "big")


def open_capture(
    path,
    *,
    batch_packets: int = 65536,
    errors: str = "strict",
    backend_module: ModuleType | None = None,
) -> CaptureReader:
    """Iterate ``path`` (pcap or pcapng) as PacketBatches over a memory-mapped file."""
    return CaptureReader(
        path, errors=errors, batch_packets=batch_packets, backend_module=backend_module
    )


def read_capture(
    path, *, errors: str = "strict", backend_module: ModuleType | None = None
) -> PacketBatch:
    """Read the whole of ``path`` into one PacketBatch.

    The file's bytes are read into memory once; packets are views into them. With
    ``errors="truncate"`` every complete record before damage is returned and a
    ``CaptureTruncatedWarning`` says what was dropped.
    """
    try:
        buf = np.fromfile(os.fspath(path), np.uint8)
    except OSError as exc:
        raise CaptureError(f"cannot read: {exc.strerror or exc}", path=os.fspath(path)) from None
    if len(buf) == 0:
        raise CaptureError(
            "empty file, not a pcap or pcapng capture", path=os.fspath(path), offset=0
        )
    reader = CaptureReader(path, errors=errors, backend_module=backend_module, _buffer=buf)
    return reader.read_all()
