"""compress / decompress: lz4 or zstd on TCP/UDP payloads, with lengths and checksums fixed.

Every payload ``compress`` takes is wrapped, shrunk or not, so ``decompress`` always gives it
back byte for byte. The wrapped payload is a 6-byte header then the body:

====== ==== =================================================================================
offset size field
====== ==== =================================================================================
0      2    magic ``0xC7 0x5A``
2      1    version (high nibble, 1) and codec (low nibble): 0 stored, 1 lz4 block, 2 zstd
3      1    flags: the checksum forms to restore (``engine.services.payload``); other bits 0
4      2    the original payload's length, big-endian
6           the body: the original payload (stored) or its compressed form
====== ==== =================================================================================

A payload is stored when compressing would not make the wrapped payload shorter than the
original. lz4 bodies are raw blocks (no size prefix); zstd bodies are single frames without
content size, checksum or dictionary id. Packets ``compress`` cannot take are passed as they
are and counted (see ``engine.services.payload``); so are packets whose wrapped payload would
not fit a length field (``skipped_too_large``: an incompressible payload of a 65,535-byte IP
packet). ``decompress`` leaves a payload without the header alone (counted as
``not_wrapped``); a wrapped payload that does not decode to its stated length is an error,
counted, and the packet kept as it is or dropped (``on_error``). So that ``decompress`` never
changes a packet ``compress`` passed as it was, ``compress`` fails on an unwrappable payload
that begins with the magic and version (``decompress`` would take it for a wrapped one).

Counters: ``packets_compressed``/``packets_decompressed`` and ``packets_stored``;
``bytes_before`` and ``bytes_after`` (payload bytes of the packets rewritten, headers not
included); ``not_wrapped``, ``errors`` and ``dropped`` (decompress); ``skipped_<reason>``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lz4.block
import numpy as np
import zstandard

from engine.capture import backend
from engine.capture.batch import PacketBatch
from engine.delivery.meter import iso_ns
from engine.services.base import Param, Service, ServiceError
from engine.services.payload import FLAGS_KNOWN, Payloads, packed_starts, replace, select

MAGIC = b"\xc7\x5a"
VERSION = 1
HEADER_SIZE = 6
STORED, LZ4, ZSTD = 0, 1, 2
CODECS = {"lz4": LZ4, "zstd": ZSTD}
# level 0 is the codec's default: lz4's fast mode, zstd's level 3.
_LEVELS = {"lz4": range(0, 13), "zstd": range(-7, 23)}


class Compress(Service):
    name = "compress"
    summary = "compress TCP/UDP payloads (lz4 or zstd); lengths and checksums fixed"
    params = (
        Param("codec", str, "lz4", "lz4 (fast) or zstd (smaller)", choices=tuple(CODECS)),
        Param("level", int, 0, "0 for the codec's default; lz4 1-12 high compression, zstd -7..22"),
    )

    def setup(self) -> None:
        codec, level = self.config["codec"], self.config["level"]
        if level not in _LEVELS[codec]:
            r = _LEVELS[codec]
            raise ServiceError(
                f"service {self.name!r}: parameter level must be in "
                f"{r.start}..{r.stop - 1} for {codec}, not {level}"
            )
        self._codec = CODECS[codec]
        self._compress: Callable[[bytes | memoryview], bytes]
        if codec == "lz4":
            kw = {"mode": "high_compression", "compression": level} if level else {}
            self._compress = partial(lz4.block.compress, store_size=False, **kw)
        else:
            cctx = zstandard.ZstdCompressor(
                level=level or 3,
                write_content_size=False,
                write_checksum=False,
                write_dict_id=False,
            )
            self._compress = cctx.compress

    def process(self, batch: PacketBatch) -> PacketBatch:
        sel = select(batch)
        old = sel.payloads
        views = old.views()
        bodies: list[bytes | memoryview] = list(map(self._compress, views))
        body_len = np.fromiter(map(len, bodies), np.int64, len(bodies))
        stored = body_len >= old.lengths
        for i in np.flatnonzero(stored).tolist():
            bodies[i] = views[i]
        codec = np.where(stored, STORED, self._codec)
        new = _wrap(Payloads.pack(bodies), codec, old.flags, old.lengths)
        out, done = replace(sel, new)
        looks = ~done & _looks_wrapped(old)
        if looks.any():
            row = int(sel.index[np.flatnonzero(looks)[0]])
            raise ServiceError(
                f"service 'compress': the packet captured at {iso_ns(int(batch.ts_ns[row]))} "
                f"(number {row} of {len(batch)} in its segment, {int(batch.caplen[row])} bytes) "
                "is too large to wrap, and its payload begins like a wrapped one: passed as "
                "it is, decompress would change it"
            )
        c = self.counters
        sel.count(c)
        c["packets_compressed"] += int((done & ~stored).sum())
        c["packets_stored"] += int((done & stored).sum())
        c["bytes_before"] += int(old.lengths[done].sum())
        c["bytes_after"] += int(new.lengths[done].sum())
        return out


def _looks_wrapped(payloads: Payloads) -> np.ndarray:
    """Per payload, whether it begins with the wrapper's magic and version."""
    data, starts, lengths = payloads.data, payloads.starts, payloads.lengths
    out = lengths >= HEADER_SIZE
    if not out.any():
        return out
    head = np.where(out, starts, 0)
    out &= (data[head] == MAGIC[0]) & (data[head + 1] == MAGIC[1])
    out &= (data[head + 2] >> 4) == VERSION
    return out


def _wrap(bodies: Payloads, codec: np.ndarray, flags: np.ndarray, original: np.ndarray) -> Payloads:
    """The bodies behind their headers, in one new buffer."""
    m = len(bodies)
    lengths = bodies.lengths + HEADER_SIZE
    starts = packed_starts(lengths)
    data = np.empty(int(lengths.sum()), np.uint8)
    data[starts] = MAGIC[0]
    data[starts + 1] = MAGIC[1]
    data[starts + 2] = (VERSION << 4) | codec
    data[starts + 3] = flags
    data[starts + 4] = original >> 8
    data[starts + 5] = original & 0xFF
    backend.capture.gather(
        bodies.data, bodies.starts, bodies.lengths.astype(np.uint32), data, starts + HEADER_SIZE
    )
    return Payloads(data, starts, lengths, np.zeros(m, np.uint8))


class Decompress(Service):
    name = "decompress"
    summary = "undo compress: restore TCP/UDP payloads, lengths and checksums"
    params = (
        Param(
            "on_error",
            str,
            "keep",
            "what to do with a packet whose wrapped payload is "
            "corrupt: keep it as it is, or drop it",
            choices=("keep", "drop"),
        ),
    )

    def setup(self) -> None:
        dctx = zstandard.ZstdDecompressor()
        self._expand = {
            LZ4: lambda body, n: lz4.block.decompress(body, uncompressed_size=n),
            ZSTD: lambda body, n: dctx.decompress(body, max_output_size=n),
        }

    def process(self, batch: PacketBatch) -> PacketBatch:
        sel = select(batch)
        old = sel.payloads
        data, starts, lengths = old.data, old.starts, old.lengths
        m = len(sel)
        wrapped = _looks_wrapped(old)
        head = np.where(wrapped, starts, 0)
        codec = (data[head + 2] & 0x0F).astype(np.int64)
        flags = data[head + 3]
        original = (data[head + 4].astype(np.int64) << 8) | data[head + 5]
        body_len = lengths - HEADER_SIZE
        # What the header alone shows to be wrong, before any decoding.
        corrupt = wrapped & (
            (codec > ZSTD)
            | ((flags & (0xFF ^ FLAGS_KNOWN)) != 0)
            | ((codec == STORED) & (body_len != original))
        )
        views = old.views()
        pieces: list = [b""] * m
        for i in np.flatnonzero(wrapped & ~corrupt).tolist():
            body = views[i][HEADER_SIZE:]
            kind = int(codec[i])
            if kind == STORED:
                pieces[i] = body
                continue
            try:
                pieces[i] = self._expand[kind](body, int(original[i]))
            except (lz4.block.LZ4BlockError, zstandard.ZstdError):
                corrupt[i] = True
                continue
            if len(pieces[i]) != original[i]:
                corrupt[i] = True
        usable = wrapped & ~corrupt
        new = Payloads.pack(pieces, np.where(usable, flags, 0))
        out, done = replace(sel, new, usable)
        c = self.counters
        sel.count(c)
        c["not_wrapped"] += int((~wrapped).sum())
        c["errors"] += int(corrupt.sum())
        c["packets_decompressed"] += int((done & (codec != STORED)).sum())
        c["packets_stored"] += int((done & (codec == STORED)).sum())
        c["bytes_before"] += int(lengths[done].sum())
        c["bytes_after"] += int(new.lengths[done].sum())
        if corrupt.any() and self.config["on_error"] == "drop":
            c["dropped"] += int(corrupt.sum())
            keep = np.ones(len(out), bool)
            keep[sel.index[corrupt]] = False
            return out.take(np.flatnonzero(keep))
        return out
