"""Write PacketBatches to pcap or pcapng files, atomically: a failed write leaves no file."""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import tempfile
from collections.abc import Iterable
from types import ModuleType

import numpy as np

from engine.capture import backend
from engine.capture import pcapformat as F
from engine.capture.batch import Interface, PacketBatch
from engine.capture.timestamps import TsResolution, ns_to_ticks
from engine.errors import EngineError

FORMATS = ("pcap", "pcapng")
TS_RESOLUTIONS = {"us": TsResolution(10, 6), "ns": TsResolution(10, 9)}
# An interface whose resolution is not known is written at microseconds (readable everywhere).
_UNKNOWN_RESOLUTION = TS_RESOLUTIONS["us"]
_SHB_APP = b"packet-exchange"


class CaptureWriter:
    """A capture file being written, batch by batch.

    Bytes go to a temporary file beside ``path`` that is renamed over it by ``close()``; an
    exception inside ``with`` (or ``abort()``) removes it, so an interrupted write never leaves a
    file that looks complete. Devices and pipes (``/dev/null``, a FIFO) are written directly.

    ``ts_resolution`` (``"us"`` or ``"ns"``) sets every timestamp's resolution. Without it each
    interface keeps its own (``Interface.tsresol``): a pcapng interface is written at its
    resolution when that is a decimal one no finer than nanoseconds, else at nanoseconds (all
    a timestamp holds); one whose resolution is unknown at microseconds. A pcap file has one
    resolution: nanoseconds if the first batch's interfaces hold anything finer than
    microseconds, else microseconds.
    """

    def __init__(
        self,
        path,
        *,
        format: str = "pcap",
        ts_resolution: str | None = None,
        backend_module: ModuleType | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
        if ts_resolution is not None and ts_resolution not in TS_RESOLUTIONS:
            raise ValueError(
                f"ts_resolution must be one of {tuple(TS_RESOLUTIONS)}, not {ts_resolution!r}"
            )
        self.path = os.fspath(path)
        self.format = format
        self.ts_resolution = ts_resolution
        self.packer = backend_module or backend.capture
        self.packets = 0
        self.bytes_written = 0
        self._linktype: int | None = None
        self._ifaces: dict[Interface, int] = {}
        self._iface_res: list[TsResolution] = []  # per written interface
        self._pcap_nano = False
        self._tmp: str | None = None
        try:
            existing: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()/abort()
        else:
            fd, self._tmp = tempfile.mkstemp(
                prefix=f".{os.path.basename(self.path)}.",
                suffix=".part",
                dir=os.path.dirname(os.path.abspath(self.path)),
            )
            try:
                # mkstemp makes the file private (0600); the capture gets the mode a plain
                # open would give it: the replaced file's, or 0666 less the umask.
                os.fchmod(fd, stat.S_IMODE(existing.st_mode) if existing else 0o666 & ~_umask())
                self._file = os.fdopen(fd, "wb")
            except BaseException:  # an error or a signal: no temporary file left behind
                os.close(fd)
                os.unlink(self._tmp)
                raise
        self._header_done = False
        # Where each snaplen field sits in the file, its value, and the longest packet written
        # under it: a service may lengthen packets (encrypt, compress), and a reader cuts
        # records longer than the snaplen, so close() raises the field when it must.
        self._snaplens: dict[object, list[int]] = {}
        self._buf: np.ndarray | None = None

    # -- context -------------------------------------------------------------------------------
    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def close(self) -> None:
        """Finish the file and give it its name."""
        if self._file.closed:
            return
        if not self._header_done:
            self._write_header(Interface(1))
        self._raise_snaplens()
        self._file.flush()
        if self._tmp is not None:
            os.fsync(self._file.fileno()) if os.environ.get("PKTX_FSYNC") else None
            self._file.close()
            os.replace(self._tmp, self.path)
            self._tmp = None
        else:
            self._file.close()

    def _raise_snaplens(self) -> None:
        stale = [
            (at, longest)
            for at, snaplen, longest in self._snaplens.values()
            if snaplen and longest > snaplen
        ]
        if not stale or not self._file.seekable():
            return
        self._file.flush()
        end = self._file.tell()
        for at, longest in stale:
            self._file.seek(at)
            self._file.write(struct.pack("<I", longest))
        self._file.seek(end)

    def abort(self) -> None:
        """Drop what was written (the temporary file); the destination is left untouched."""
        if not self._file.closed:
            self._file.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None

    # -- writing -------------------------------------------------------------------------------
    def write(self, batch: PacketBatch) -> None:
        if not self._header_done:
            self._write_header(
                batch.interfaces[0] if batch.interfaces else Interface(1), batch.interfaces
            )
        if len(batch) == 0:
            return
        if self.format == "pcap":
            self._write_pcap(batch)
        else:
            self._write_pcapng(batch)
        self.packets += len(batch)

    def _emit(self, buf) -> None:
        self._file.write(buf)
        self.bytes_written += len(buf)

    def _resolution(self, iface: Interface) -> TsResolution:
        """The resolution ``iface``'s timestamps are written at in a pcapng file."""
        if self.ts_resolution is not None:
            return TS_RESOLUTIONS[self.ts_resolution]
        if iface.tsresol is None:
            return _UNKNOWN_RESOLUTION
        res = TsResolution.from_option(iface.tsresol)
        if res.base == 10 and res.exp <= 9:
            return res
        return TS_RESOLUTIONS["ns"]

    def _pcap_resolution(self, interfaces) -> TsResolution:
        if self.ts_resolution is not None:
            return TS_RESOLUTIONS[self.ts_resolution]
        finer = any(self._resolution(i).exp > 6 for i in interfaces)
        return TS_RESOLUTIONS["ns" if finer else "us"]

    @property
    def resolutions(self) -> list[str]:
        """The timestamp resolutions written so far (``pktx info``'s names)."""
        if self.format == "pcap":
            return ["ns" if self._pcap_nano else "us"] if self._header_done else []
        return sorted({str(r) for r in self._iface_res})

    def _write_header(self, first: Interface, interfaces=()) -> None:
        self._header_done = True
        if self.format == "pcap":
            res = self._pcap_resolution(interfaces or (first,))
            self._pcap_nano = res == TS_RESOLUTIONS["ns"]
            magic = F.PCAP_MAGIC_NS if self._pcap_nano else F.PCAP_MAGIC_US
            self._linktype = first.linktype
            self._snaplens["pcap"] = [self.bytes_written + 16, first.snaplen, 0]
            self._emit(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, first.snaplen, first.linktype))
        else:
            opt = _option(F.SHB_USERAPPL, _SHB_APP) + _option(F.OPT_ENDOFOPT, b"")
            blen = 28 + len(opt)
            self._emit(
                struct.pack("<IIIHHq", F.BT_SHB, blen, F.BYTE_ORDER_MAGIC, 1, 0, -1)
                + opt
                + struct.pack("<I", blen)
            )

    def _write_pcap(self, batch: PacketBatch) -> None:
        # Not np.unique: it imports numpy.ma (20 ms of a 0.3 s pktx deliver) to ask whether
        # the array is masked.
        linktypes = batch.linktypes
        if len(linktypes) and bool((linktypes != self._linktype).any()):
            raise EngineError(
                f"pcap holds one link type ({self._linktype}); this batch has "
                f"{sorted(set(linktypes.tolist()))}: write pcapng instead"
            )
        out = self._scratch(int(batch.caplen.sum(dtype=np.int64)) + 16 * len(batch))
        n = self.packer.pack_pcap(
            batch.data,
            batch.offsets,
            batch.caplen,
            batch.origlen,
            batch.ts_ns,
            self._pcap_nano,
            out,
        )
        self._emit(out.data[:n])
        entry = self._snaplens["pcap"]
        entry[2] = max(entry[2], int(batch.caplen.max()))

    def _write_pcapng(self, batch: PacketBatch) -> None:
        remap = np.empty(len(batch.interfaces), np.uint32)
        for k, iface in enumerate(batch.interfaces):
            if iface not in self._ifaces:
                self._ifaces[iface] = len(self._ifaces)
                self._iface_res.append(self._resolution(iface))
                self._snaplens[self._ifaces[iface]] = [self.bytes_written + 12, iface.snaplen, 0]
                self._emit(self._idb(iface))
            remap[k] = self._ifaces[iface]
        iface_ids = remap[batch.iface]
        ticks = self._ticks(batch.ts_ns, iface_ids)
        padded = (batch.caplen.astype(np.int64) + 3) & ~3
        out = self._scratch(int(padded.sum()) + 32 * len(batch))
        n = self.packer.pack_pcapng(
            batch.data, batch.offsets, batch.caplen, batch.origlen, ticks, iface_ids, out
        )
        self._emit(out.data[:n])
        for k in np.unique(iface_ids).tolist():
            entry = self._snaplens[k]
            entry[2] = max(entry[2], int(batch.caplen[iface_ids == k].max()))

    def _ticks(self, ts_ns: np.ndarray, iface_ids: np.ndarray) -> np.ndarray:
        """Each packet's timestamp in its output interface's ticks."""
        used = np.unique(iface_ids).tolist()
        kinds = {self._iface_res[k] for k in used}
        if len(kinds) <= 1:
            return ns_to_ticks(ts_ns, kinds.pop() if kinds else _UNKNOWN_RESOLUTION)
        ticks = np.empty(len(ts_ns), np.uint64)
        for k in used:
            rows = iface_ids == k
            ticks[rows] = ns_to_ticks(ts_ns[rows], self._iface_res[k])
        return ticks

    def _scratch(self, size: int) -> np.ndarray:
        """A reused output buffer: fresh memory for every batch would cost a page fault per
        4 KiB written, which on these machines costs more than packing the records."""
        if self._buf is None or len(self._buf) < size:
            self._buf = np.empty(max(size, 1 << 20), np.uint8)
        return self._buf[:size]

    def _idb(self, iface: Interface) -> bytes:
        opts = b""
        if iface.name:
            opts += _option(F.IF_NAME, iface.name.encode())
        if iface.description:
            opts += _option(F.IF_DESCRIPTION, iface.description.encode())
        opts += _option(F.IF_TSRESOL, bytes([self._iface_res[self._ifaces[iface]].to_option()]))
        opts += _option(F.OPT_ENDOFOPT, b"")
        blen = 20 + len(opts)
        return (
            struct.pack("<IIHHI", F.BT_IDB, blen, iface.linktype, 0, iface.snaplen)
            + opts
            + struct.pack("<I", blen)
        )


def _umask() -> int:
    # Reading the umask means setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _option(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def write_capture(
    path,
    batches: PacketBatch | Iterable[PacketBatch],
    *,
    format: str = "pcap",
    ts_resolution: str | None = None,
    backend_module: ModuleType | None = None,
) -> int:
    """Write one batch or an iterable of batches to ``path``; returns the packets written
    (``ts_resolution``: see ``CaptureWriter``)."""
    if isinstance(batches, PacketBatch):
        batches = (batches,)
    with CaptureWriter(
        path, format=format, ts_resolution=ts_resolution, backend_module=backend_module
    ) as w:
        for b in batches:
            w.write(b)
    return w.packets
