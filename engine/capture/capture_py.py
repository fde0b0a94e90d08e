"""Pure-Python record walkers and packers: the slow, obvious twin of ``ext/_capture.pyx``.

Each function fills caller-provided numpy arrays so both twins share one interface; the reader
(``engine.capture.reader``) turns the status codes into ``CaptureError`` messages.
"""

from __future__ import annotations

import struct

import numpy as np

from engine.capture.pcapformat import (
    BAD_BLOCK_LEN,
    BAD_CAPLEN,
    BAD_IFACE,
    BAD_TRAILER,
    BLOCK,
    BT_EPB,
    BT_IDB,
    BT_PB,
    BT_SHB,
    BT_SPB,
    OK,
    TRUNC_DATA,
    TRUNC_HEADER,
)

PUBLIC = ("walk_pcap", "walk_pcapng", "gather", "pack_pcap", "pack_pcapng")


def walk_pcap(buf, pos, end, swap, nano, max_caplen, limit, offsets, caplen, origlen, ts_ns):
    """Walk pcap records in ``buf[pos:end]``, at most ``limit`` of them.

    Fills ``offsets`` (of each packet's data), ``caplen``, ``origlen``, ``ts_ns``; returns
    ``(count, pos, status)`` with ``pos`` at the first record not taken.
    """
    _check_walk(buf, pos, end, limit, (offsets, caplen, origlen, ts_ns))
    rec = struct.Struct(">IIII" if swap else "<IIII")
    mv = memoryview(buf)
    scale = 1 if nano else 1000
    n = 0
    while n < limit and pos < end:
        if end - pos < 16:
            return n, pos, TRUNC_HEADER
        sec, frac, incl, orig = rec.unpack_from(mv, pos)
        if incl > max_caplen:
            return n, pos, BAD_CAPLEN
        if end - pos - 16 < incl:
            return n, pos, TRUNC_DATA
        offsets[n] = pos + 16
        caplen[n] = incl
        origlen[n] = orig
        ts_ns[n] = sec * 1_000_000_000 + frac * scale
        n += 1
        pos += 16 + incl
    return n, pos, OK


def walk_pcapng(
    buf,
    pos,
    end,
    swap,
    iface_base,
    n_ifaces,
    snaplen0,
    limit,
    offsets,
    caplen,
    origlen,
    ticks,
    iface,
):
    """Walk pcapng blocks in ``buf[pos:end]`` within one section, at most ``limit`` packets.

    Packet blocks (EPB, SPB, obsolete PB) fill ``offsets``, ``caplen``, ``origlen``, ``ticks``
    (raw timestamp units of the interface) and ``iface`` (``iface_base`` + the section's
    interface id); other blocks are skipped, except SHB and IDB, where the walk stops with
    status ``BLOCK`` so the caller reads them. ``snaplen0`` is the section's first interface's
    snapshot length (0: none), which cuts Simple Packet Blocks. Returns ``(count, pos, status)``.
    """
    _check_walk(buf, pos, end, limit, (offsets, caplen, origlen, ticks, iface))
    e = ">" if swap else "<"
    u32 = struct.Struct(e + "I")
    mv = memoryview(buf)
    n = 0
    while n < limit and pos < end:
        if end - pos < 8:
            return n, pos, TRUNC_HEADER
        btype, blen = struct.unpack_from(e + "II", mv, pos)
        if btype in (BT_SHB, BT_IDB):
            return n, pos, BLOCK
        if blen < 12 or blen % 4:
            return n, pos, BAD_BLOCK_LEN
        if end - pos < blen:
            return n, pos, TRUNC_DATA
        if u32.unpack_from(mv, pos + blen - 4)[0] != blen:
            return n, pos, BAD_TRAILER
        if btype in (BT_EPB, BT_PB):
            if blen < 32:
                return n, pos, BAD_BLOCK_LEN
            if btype == BT_EPB:
                ifid, hi, lo, incl, orig = struct.unpack_from(e + "IIIII", mv, pos + 8)
            else:
                ifid, _drops, hi, lo, incl, orig = struct.unpack_from(e + "HHIIII", mv, pos + 8)
            if ifid >= n_ifaces:
                return n, pos, BAD_IFACE
            if incl > blen - 32:
                return n, pos, BAD_CAPLEN
            offsets[n] = pos + 28
            caplen[n] = incl
            origlen[n] = orig
            ticks[n] = (hi << 32) | lo
            iface[n] = iface_base + ifid
            n += 1
        elif btype == BT_SPB:
            if blen < 16:
                return n, pos, BAD_BLOCK_LEN
            if n_ifaces < 1:
                return n, pos, BAD_IFACE
            orig = u32.unpack_from(mv, pos + 8)[0]
            offsets[n] = pos + 12
            # The original length cut to the first interface's snaplen: the block's room may
            # hold up to 3 bytes of padding beyond it.
            caplen[n] = min(orig, blen - 16, snaplen0 if snaplen0 > 0 else orig)
            origlen[n] = orig
            ticks[n] = 0  # a Simple Packet Block carries no timestamp
            iface[n] = iface_base
            n += 1
        pos += blen
    return n, pos, OK


def gather(src, src_off, caplen, dst, dst_off):
    """Copy packet ``i`` from ``src[src_off[i]:][:caplen[i]]`` to ``dst[dst_off[i]:]``."""
    _check_lengths(caplen, src_off, dst_off)
    for i in range(len(caplen)):
        s = int(src_off[i])
        d = int(dst_off[i])
        c = int(caplen[i])
        _check_packet(i, s, c, src, "source")
        _check_packet(i, d, c, dst, "destination")
        dst[d : d + c] = src[s : s + c]


def pack_pcap(data, offsets, caplen, origlen, ts_ns, nano, out):
    """Write pcap records (little-endian) for the packets into ``out``; returns bytes written."""
    _check_lengths(caplen, offsets, origlen, ts_ns)
    rec = struct.Struct("<IIII")
    mv = memoryview(out)
    pos = 0
    for i in range(len(caplen)):
        c = int(caplen[i])
        _check_packet(i, int(offsets[i]), c, data, "data")
        _check_packet(i, pos, 16 + c, out, "output")
        sec, frac = divmod(int(ts_ns[i]), 1_000_000_000)
        if not nano:
            frac //= 1000
        rec.pack_into(mv, pos, sec & 0xFFFFFFFF, frac, c, int(origlen[i]))
        o = int(offsets[i])
        out[pos + 16 : pos + 16 + c] = data[o : o + c]
        pos += 16 + c
    return pos


def pack_pcapng(data, offsets, caplen, origlen, ticks, iface, out):
    """Write Enhanced Packet Blocks (little-endian) into ``out``; returns bytes written."""
    _check_lengths(caplen, offsets, origlen, ticks, iface)
    head = struct.Struct("<IIIIIII")
    mv = memoryview(out)
    pos = 0
    for i in range(len(caplen)):
        c = int(caplen[i])
        blen = 32 + ((c + 3) & ~3)
        if blen > 0xFFFFFFFF:
            raise ValueError(f"packet {i}: {c} bytes do not fit in one pcapng block")
        _check_packet(i, int(offsets[i]), c, data, "data")
        _check_packet(i, pos, blen, out, "output")
        t = int(ticks[i])
        head.pack_into(
            mv, pos, BT_EPB, blen, int(iface[i]), t >> 32, t & 0xFFFFFFFF, c, int(origlen[i])
        )
        o = int(offsets[i])
        out[pos + 28 : pos + 28 + c] = data[o : o + c]
        out[pos + 28 + c : pos + blen - 4] = 0
        struct.pack_into("<I", mv, pos + blen - 4, blen)
        pos += blen
    return pos


# Argument checks, mirrored by the compiled twin: bad arguments are a ValueError in both, never a
# read or write outside the arrays (nor, here, a negative index quietly counting from the end).
def _check_walk(buf, pos, end, limit, arrays) -> None:
    if pos < 0 or end > len(buf):
        raise ValueError(f"walk span {pos}..{end} lies outside the buffer of {len(buf)} bytes")
    room = min(len(a) for a in arrays)
    if limit > room:
        raise ValueError(f"limit {limit} exceeds the output arrays' length {room}")


def _check_lengths(caplen, *arrays) -> None:
    if any(len(a) < len(caplen) for a in arrays):
        raise ValueError(f"per-packet arrays shorter than caplen ({len(caplen)} packets)")


def _check_packet(i: int, start: int, length: int, buf, what: str) -> None:
    if start < 0 or start + length > len(buf):
        raise ValueError(
            f"packet {i}: bytes {start}..{start + length} lie outside the {what} "
            f"buffer of {len(buf)} bytes"
        )


def pcap_record_bytes(caplen) -> int:
    return int(np.sum(caplen, dtype=np.int64)) + 16 * len(caplen)
