# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled record walkers and packers: the fast twin of ``engine/capture/capture_py.py``.

Same functions, same arguments, same results (a test compares the two on random and mutated
buffers). Bytes are read only inside ``buf[:end]`` and nothing is allocated from a length found
in the data. Array dtypes are the reader's and writer's: offsets int64, caplen/origlen/iface
uint32, ts_ns int64, ticks uint64; output arrays must be C-contiguous.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #  include <stdlib.h>
    #  define PKTX_BSWAP16(x) _byteswap_ushort(x)
    #  define PKTX_BSWAP32(x) _byteswap_ulong(x)
    #  if defined(_M_IX86) || defined(_M_X64)
    #    include <xmmintrin.h>
    #    define PKTX_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
    #  else
    #    define PKTX_PREFETCH(p) ((void)(p))
    #  endif
    #else
    #  define PKTX_BSWAP16(x) __builtin_bswap16(x)
    #  define PKTX_BSWAP32(x) __builtin_bswap32(x)
    #  define PKTX_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
    #endif
    #define PKTX_U32_MAX ((int64_t)0xFFFFFFFF)
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #  define PKTX_HOST_BIG 1
    #else
    #  define PKTX_HOST_BIG 0
    #endif
    """
    uint16_t bswap16 "PKTX_BSWAP16" (uint16_t x) noexcept nogil
    uint32_t bswap32 "PKTX_BSWAP32" (uint32_t x) noexcept nogil
    void prefetch "PKTX_PREFETCH" (const void *p) noexcept nogil
    const bint HOST_BIG "PKTX_HOST_BIG"
    const int64_t U32_MAX "PKTX_U32_MAX"

# Status codes: the numbers of engine/capture/pcapformat.py (a test checks they agree).
OK = 0
BLOCK = 1
TRUNC_HEADER = 2
TRUNC_DATA = 3
BAD_CAPLEN = 4
BAD_BLOCK_LEN = 5
BAD_TRAILER = 6
BAD_IFACE = 7

PUBLIC = ("walk_pcap", "walk_pcapng", "gather", "pack_pcap", "pack_pcapng")

cdef enum:
    S_OK = 0
    S_BLOCK = 1
    S_TRUNC_HEADER = 2
    S_TRUNC_DATA = 3
    S_BAD_CAPLEN = 4
    S_BAD_BLOCK_LEN = 5
    S_BAD_TRAILER = 6
    S_BAD_IFACE = 7
    S_IFACE_OVERFLOW = -1  # iface_base + id does not fit the uint32 array (an OverflowError)

cdef enum:
    BT_SHB = 0x0A0D0D0A
    BT_IDB = 0x00000001
    BT_PB = 0x00000002
    BT_SPB = 0x00000003
    BT_EPB = 0x00000006

# The walk is a chain of dependent loads (a record's length gives the next one's place), so it
# runs at memory latency unless the bytes ahead are already on their way: every line up to this
# far ahead of the record being read is prefetched once.
cdef enum:
    AHEAD = 4096
    LINE = 64
    NS = 1000000000


cdef inline uint32_t rd32(const uint8_t *p, bint swap) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)  # unaligned load; the compiler makes this one instruction
    return bswap32(v) if swap else v


cdef inline uint16_t rd16(const uint8_t *p, bint swap) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return bswap16(v) if swap else v


cdef inline void wr32le(uint8_t *p, uint32_t v) noexcept nogil:
    if HOST_BIG:
        v = bswap32(v)
    memcpy(p, &v, 4)


cdef inline int64_t ahead(const uint8_t *p, int64_t pf, int64_t pos, int64_t end) noexcept nogil:
    """Prefetch the lines from ``pf`` up to AHEAD bytes past ``pos`` (never past ``end``)."""
    cdef int64_t stop = pos + AHEAD
    if stop > end:
        stop = end
    while pf < stop:
        prefetch(p + pf)
        pf += LINE
    return pf


cdef inline int pcap_loop(const uint8_t *p, int64_t *ppos, int64_t end, bint swap, int64_t scale,
                          int64_t max_caplen, int64_t limit, int64_t *offsets, uint32_t *caplen,
                          uint32_t *origlen, int64_t *ts_ns, int64_t *pn) noexcept nogil:
    cdef int64_t pos = ppos[0], n = 0, pf = ppos[0]
    cdef uint32_t incl
    cdef int status = S_OK
    while n < limit and pos < end:
        if end - pos < 16:
            status = S_TRUNC_HEADER
            break
        pf = ahead(p, pf, pos, end)
        incl = rd32(p + pos + 8, swap)
        if incl > max_caplen:
            status = S_BAD_CAPLEN
            break
        if end - pos - 16 < incl:
            status = S_TRUNC_DATA
            break
        offsets[n] = pos + 16
        caplen[n] = incl
        origlen[n] = rd32(p + pos + 12, swap)
        ts_ns[n] = <int64_t>rd32(p + pos, swap) * NS + <int64_t>rd32(p + pos + 4, swap) * scale
        n += 1
        pos += 16 + <int64_t>incl
    ppos[0] = pos
    pn[0] = n
    return status


cdef inline int pcapng_loop(const uint8_t *p, int64_t *ppos, int64_t end, bint swap,
                            int64_t iface_base, int64_t n_ifaces, int64_t snaplen0,
                            int64_t limit, int64_t *offsets, uint32_t *caplen, uint32_t *origlen,
                            uint64_t *ticks, uint32_t *iface, int64_t *pn) noexcept nogil:
    cdef int64_t pos = ppos[0], n = 0, pf = ppos[0], ifx
    cdef uint32_t btype, blen, ifid, incl, orig
    cdef const uint8_t *b
    cdef int status = S_OK
    while n < limit and pos < end:
        if end - pos < 8:
            status = S_TRUNC_HEADER
            break
        pf = ahead(p, pf, pos, end)
        b = p + pos
        btype = rd32(b, swap)
        blen = rd32(b + 4, swap)
        if btype == BT_SHB or btype == BT_IDB:
            status = S_BLOCK
            break
        if blen < 12 or blen & 3:
            status = S_BAD_BLOCK_LEN
            break
        if end - pos < blen:
            status = S_TRUNC_DATA
            break
        if rd32(b + blen - 4, swap) != blen:
            status = S_BAD_TRAILER
            break
        if btype == BT_EPB or btype == BT_PB:
            if blen < 32:
                status = S_BAD_BLOCK_LEN
                break
            ifid = rd32(b + 8, swap) if btype == BT_EPB else rd16(b + 8, swap)
            if ifid >= n_ifaces:
                status = S_BAD_IFACE
                break
            incl = rd32(b + 20, swap)
            if incl > blen - 32:
                status = S_BAD_CAPLEN
                break
            ifx = iface_base + ifid
            if ifx < 0 or ifx > U32_MAX:
                status = S_IFACE_OVERFLOW
                break
            offsets[n] = pos + 28
            caplen[n] = incl
            origlen[n] = rd32(b + 24, swap)
            ticks[n] = (<uint64_t>rd32(b + 12, swap) << 32) | rd32(b + 16, swap)
            iface[n] = <uint32_t>ifx
            n += 1
        elif btype == BT_SPB:
            if blen < 16:
                status = S_BAD_BLOCK_LEN
                break
            if n_ifaces < 1:
                status = S_BAD_IFACE
                break
            if iface_base < 0 or iface_base > U32_MAX:
                status = S_IFACE_OVERFLOW
                break
            orig = rd32(b + 8, swap)
            offsets[n] = pos + 12
            # Captured length: the original, cut to the first interface's snaplen (the
            # block's room may hold up to 3 bytes of padding beyond it).
            incl = orig if orig < blen - 16 else blen - 16
            if snaplen0 > 0 and incl > snaplen0:
                incl = <uint32_t>snaplen0
            caplen[n] = incl
            origlen[n] = orig
            ticks[n] = 0  # a Simple Packet Block carries no timestamp
            iface[n] = <uint32_t>iface_base
            n += 1
        pos += blen
    ppos[0] = pos
    pn[0] = n
    return status


cdef int64_t _clamp(object v, int64_t lo, int64_t hi):
    # Python ints of any size, narrowed to a range where every value outside behaves the same.
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


cdef _check_walk(Py_ssize_t size, object pos, object end, object limit, Py_ssize_t room):
    if pos < 0 or end > size:
        raise ValueError(f"walk span {pos}..{end} lies outside the buffer of {size} bytes")
    if limit > room:
        raise ValueError(f"limit {limit} exceeds the output arrays' length {room}")


def walk_pcap(const uint8_t[::1] buf not None, pos, end, swap, nano, max_caplen, limit,
              int64_t[::1] offsets not None, uint32_t[::1] caplen not None,
              uint32_t[::1] origlen not None, int64_t[::1] ts_ns not None):
    """Walk pcap records in ``buf[pos:end]``, at most ``limit`` of them.

    Fills ``offsets`` (of each packet's data), ``caplen``, ``origlen``, ``ts_ns``; returns
    ``(count, pos, status)`` with ``pos`` at the first record not taken.
    """
    _check_walk(buf.shape[0], pos, end, limit,
                min(offsets.shape[0], caplen.shape[0], origlen.shape[0], ts_ns.shape[0]))
    if not (pos < end and limit > 0):
        return 0, pos, OK
    cdef int64_t p = pos, e = end, n = 0
    cdef int64_t lim = limit, mc = _clamp(max_caplen, -1, U32_MAX)
    cdef bint sw = swap
    cdef int64_t scale = 1 if nano else 1000
    cdef int status
    sw ^= HOST_BIG
    with nogil:
        if sw:  # two copies of the loop, each with its byte order fixed
            status = pcap_loop(&buf[0], &p, e, True, scale, mc, lim, &offsets[0], &caplen[0],
                               &origlen[0], &ts_ns[0], &n)
        else:
            status = pcap_loop(&buf[0], &p, e, False, scale, mc, lim, &offsets[0], &caplen[0],
                               &origlen[0], &ts_ns[0], &n)
    return n, p, status


def walk_pcapng(const uint8_t[::1] buf not None, pos, end, swap, iface_base, n_ifaces, snaplen0,
                limit,
                int64_t[::1] offsets not None, uint32_t[::1] caplen not None,
                uint32_t[::1] origlen not None, uint64_t[::1] ticks not None,
                uint32_t[::1] iface not None):
    """Walk pcapng blocks in ``buf[pos:end]`` within one section, at most ``limit`` packets.

    Packet blocks (EPB, SPB, obsolete PB) fill ``offsets``, ``caplen``, ``origlen``, ``ticks``
    (raw timestamp units of the interface) and ``iface`` (``iface_base`` + the section's
    interface id); other blocks are skipped, except SHB and IDB, where the walk stops with
    status ``BLOCK`` so the caller reads them. ``snaplen0`` is the section's first interface's
    snapshot length (0: none), which cuts Simple Packet Blocks. Returns ``(count, pos, status)``.
    """
    _check_walk(buf.shape[0], pos, end, limit,
                min(offsets.shape[0], caplen.shape[0], origlen.shape[0], ticks.shape[0],
                    iface.shape[0]))
    if not (pos < end and limit > 0):
        return 0, pos, OK
    cdef int64_t p = pos, e = end, n = 0, lim = limit
    cdef int64_t base = _clamp(iface_base, -2 * U32_MAX, U32_MAX + 1)
    cdef int64_t nif = _clamp(n_ifaces, 0, U32_MAX + 1)
    cdef int64_t snap0 = _clamp(snaplen0, 0, U32_MAX + 1)
    cdef bint sw = swap
    cdef int status
    sw ^= HOST_BIG
    with nogil:
        if sw:
            status = pcapng_loop(&buf[0], &p, e, True, base, nif, snap0, lim, &offsets[0],
                                 &caplen[0], &origlen[0], &ticks[0], &iface[0], &n)
        else:
            status = pcapng_loop(&buf[0], &p, e, False, base, nif, snap0, lim, &offsets[0],
                                 &caplen[0], &origlen[0], &ticks[0], &iface[0], &n)
    if status == S_IFACE_OVERFLOW:
        raise OverflowError(f"interface index beyond uint32 (iface_base {iface_base})")
    return n, p, status


cdef inline bint outside(int64_t start, int64_t length, int64_t size) noexcept nogil:
    return start < 0 or length > size or start > size - length


cdef _check_lengths(Py_ssize_t k, Py_ssize_t shortest):
    if shortest < k:
        raise ValueError(f"per-packet arrays shorter than caplen ({k} packets)")


cdef _outside_error(Py_ssize_t i, int64_t start, int64_t length, Py_ssize_t size, str what):
    return ValueError(f"packet {i}: bytes {start}..{start + length} lie outside the {what} "
                      f"buffer of {size} bytes")


# The copies use memmove: a gather may compact a buffer into itself.
def gather(const uint8_t[::1] src not None, const int64_t[:] src_off not None,
           const uint32_t[:] caplen not None, uint8_t[::1] dst not None,
           const int64_t[:] dst_off not None):
    """Copy packet ``i`` from ``src[src_off[i]:][:caplen[i]]`` to ``dst[dst_off[i]:]``."""
    cdef Py_ssize_t k = caplen.shape[0], i, bad = -1
    _check_lengths(k, min(src_off.shape[0], dst_off.shape[0]))
    cdef int64_t ns = src.shape[0], nd = dst.shape[0], s = 0, d = 0, c = 0
    cdef const uint8_t *sp = &src[0] if ns else NULL
    cdef uint8_t *dp = &dst[0] if nd else NULL
    with nogil:
        for i in range(k):
            s = src_off[i]
            d = dst_off[i]
            c = caplen[i]
            if outside(s, c, ns) or outside(d, c, nd):
                bad = i
                break
            if c:
                memmove(dp + d, sp + s, <size_t>c)
    if bad >= 0:
        if outside(s, c, ns):
            raise _outside_error(bad, s, c, ns, "source")
        raise _outside_error(bad, d, c, nd, "destination")


def pack_pcap(const uint8_t[::1] data not None, const int64_t[:] offsets not None,
              const uint32_t[:] caplen not None, const uint32_t[:] origlen not None,
              const int64_t[:] ts_ns not None, nano, uint8_t[::1] out not None):
    """Write pcap records (little-endian) for the packets into ``out``; returns bytes written."""
    cdef Py_ssize_t k = caplen.shape[0], i, bad = -1
    _check_lengths(k, min(offsets.shape[0], origlen.shape[0], ts_ns.shape[0]))
    cdef int64_t nd = data.shape[0], no = out.shape[0], pos = 0, o = 0, c = 0, t, sec, frac
    cdef const uint8_t *dp = &data[0] if nd else NULL
    cdef uint8_t *op = &out[0] if no else NULL
    cdef bint ns = bool(nano)
    with nogil:
        for i in range(k):
            o = offsets[i]
            c = caplen[i]
            if outside(o, c, nd) or outside(pos, 16 + c, no):
                bad = i
                break
            t = ts_ns[i]
            sec = t // NS  # C division truncates; make it floor like Python's divmod
            frac = t - sec * NS
            if frac < 0:
                frac += NS
                sec -= 1
            if not ns:
                frac //= 1000
            wr32le(op + pos, <uint32_t>sec)
            wr32le(op + pos + 4, <uint32_t>frac)
            wr32le(op + pos + 8, <uint32_t>c)
            wr32le(op + pos + 12, origlen[i])
            if c:
                memmove(op + pos + 16, dp + o, <size_t>c)
            pos += 16 + c
    if bad >= 0:
        if outside(o, c, nd):
            raise _outside_error(bad, o, c, nd, "data")
        raise _outside_error(bad, pos, 16 + c, no, "output")
    return pos


def pack_pcapng(const uint8_t[::1] data not None, const int64_t[:] offsets not None,
                const uint32_t[:] caplen not None, const uint32_t[:] origlen not None,
                const uint64_t[:] ticks not None, const uint32_t[:] iface not None,
                uint8_t[::1] out not None):
    """Write Enhanced Packet Blocks (little-endian) into ``out``; returns bytes written."""
    cdef Py_ssize_t k = caplen.shape[0], i, bad = -1
    _check_lengths(k, min(offsets.shape[0], origlen.shape[0], ticks.shape[0], iface.shape[0]))
    cdef int64_t nd = data.shape[0], no = out.shape[0], pos = 0, o = 0, c = 0, blen = 0
    cdef const uint8_t *dp = &data[0] if nd else NULL
    cdef uint8_t *op = &out[0] if no else NULL
    cdef uint64_t t
    with nogil:
        for i in range(k):
            o = offsets[i]
            c = caplen[i]
            blen = 32 + ((c + 3) & ~3)
            if blen > U32_MAX or outside(o, c, nd) or outside(pos, blen, no):
                bad = i
                break
            t = ticks[i]
            wr32le(op + pos, BT_EPB)
            wr32le(op + pos + 4, <uint32_t>blen)
            wr32le(op + pos + 8, iface[i])
            wr32le(op + pos + 12, <uint32_t>(t >> 32))
            wr32le(op + pos + 16, <uint32_t>t)
            wr32le(op + pos + 20, <uint32_t>c)
            wr32le(op + pos + 24, origlen[i])
            if c:
                memmove(op + pos + 28, dp + o, <size_t>c)
            memset(op + pos + 28 + c, 0, <size_t>(blen - 32 - c))
            wr32le(op + pos + blen - 4, <uint32_t>blen)
            pos += blen
    if bad >= 0:
        if blen > U32_MAX:
            raise ValueError(f"packet {bad}: {c} bytes do not fit in one pcapng block")
        if outside(o, c, nd):
            raise _outside_error(bad, o, c, nd, "data")
        raise _outside_error(bad, pos, blen, no, "output")
    return pos
