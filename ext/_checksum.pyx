# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Internet checksum (RFC 1071) in C: the compiled twin of ``engine/packet/checksum_py.py``.

The sum is taken over 32-bit words in the host's byte order into a 64-bit accumulator (a loop
the C compiler vectorises) and byte-swapped at the end where the host is little-endian: RFC 1071
section 2(B) shows the ones'-complement sum commutes with byte order that way.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define PKTX_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define PKTX_PREFETCH(p) ((void)0)
    #endif
    """
    void PKTX_PREFETCH(const void* p) noexcept nogil

PUBLIC = ["ones_complement_sum", "internet_checksum", "checksum_packets"]

NONE = 0
GOOD = 1
BAD = 2
TRUNCATED = 3
NO_CHECKSUM = 4
MALFORMED = 5

cdef enum:
    ST_NONE = 0
    ST_GOOD = 1
    ST_BAD = 2
    ST_TRUNCATED = 3
    ST_NO_CHECKSUM = 4
    ST_MALFORMED = 5

    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ICMPV6 = 58

    # Packets ahead whose headers are fetched while the current one is summed (see _flowkeys).
    PREFETCH_AHEAD = 4

cdef uint16_t _probe = 1
cdef bint LITTLE = (<uint8_t*>&_probe)[0] == 1


cdef inline uint32_t fold(uint64_t s) noexcept nogil:
    s = (s & 0xFFFFFFFFULL) + (s >> 32)
    s = (s & 0xFFFFFFFFULL) + (s >> 32)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s


cdef inline uint32_t region_sum(const uint8_t* p, Py_ssize_t n, uint64_t initial) noexcept nogil:
    """Folded big-endian ones'-complement sum of p[0:n] plus an already folded ``initial``."""
    cdef uint64_t s = 0
    cdef uint32_t w, native
    cdef Py_ssize_t i, words = n >> 2
    for i in range(words):
        memcpy(&w, p + 4 * i, 4)
        s += w
    native = fold(s)
    if LITTLE:
        native = ((native & 0xFF) << 8) | (native >> 8)
    s = <uint64_t>native + initial
    i = words * 4
    if i + 2 <= n:
        s += (<uint32_t>p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        s += <uint32_t>p[i] << 8
    return fold(s)


cdef inline uint32_t be16(const uint8_t* p, Py_ssize_t at) noexcept nogil:
    return (<uint32_t>p[at] << 8) | p[at + 1]


cdef inline void put16(uint8_t* p, Py_ssize_t at, uint32_t v) noexcept nogil:
    p[at] = <uint8_t>(v >> 8)
    p[at + 1] = <uint8_t>(v & 0xFF)


cdef inline uint32_t cksum(const uint8_t* p, Py_ssize_t n, uint64_t initial) noexcept nogil:
    return ~region_sum(p, n, initial) & 0xFFFF


cdef uint64_t _fold_initial(object initial) except? 0:
    if initial < 0:
        raise ValueError("initial must be non-negative")
    while initial >> 16:
        initial = (initial & 0xFFFF) + (initial >> 16)
    return <uint64_t>initial


cdef const uint8_t* _region(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t length) except NULL:
    cdef Py_ssize_t size = buf.shape[0]
    if start < 0 or length < 0 or start + length > size:
        raise ValueError(f"region [{start}, {start + length}) lies outside the "
                         f"{size}-byte buffer")
    if size == 0:
        return <const uint8_t*>""
    return &buf[0] + start


def ones_complement_sum(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t length,
                        initial=0):
    """The folded 16-bit ones'-complement sum of ``buf[start:start+length]`` plus ``initial``.

    An odd length is padded with a zero byte. ``initial`` (any non-negative int, e.g. a
    pseudo-header's sum) is folded in, so sums of pieces chain: each piece but the last must
    have an even length.
    """
    cdef uint64_t init = _fold_initial(initial)
    cdef const uint8_t* p = _region(buf, start, length)
    cdef uint32_t s
    with nogil:
        s = region_sum(p, length, init)
    return s


def internet_checksum(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t length, initial=0):
    """The RFC 1071 checksum of ``buf[start:start+length]``: the complement of its sum."""
    cdef uint64_t init = _fold_initial(initial)
    cdef const uint8_t* p = _region(buf, start, length)
    cdef uint32_t s
    with nogil:
        s = cksum(p, length, init)
    return s


cdef Py_ssize_t final_destination(const uint8_t* p, Py_ssize_t n, Py_ssize_t l3,
                                  Py_ssize_t l4) noexcept nogil:
    # The twin of engine.packet.checksum_py.final_destination (RFC 8200, 8.1): the offset of the
    # address the upper-layer checksum covers, from a Routing header with segments left.
    cdef Py_ssize_t dst = l3 + 24, off = l3 + 40, size, addresses
    cdef int nh = p[l3 + 6], kind
    while off + 8 <= l4 and l4 <= n:
        if (nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140
                or nh == 253 or nh == 254):
            size = (<Py_ssize_t>p[off + 1] + 1) * 8
        elif nh == 44:
            size = 8
        elif nh == 51:
            size = (<Py_ssize_t>p[off + 1] + 2) * 4
        else:
            break
        if off + size > l4:
            break
        if nh == 43 and p[off + 3] != 0:
            kind = p[off + 2]
            addresses = (size - 8) // 16
            if (kind == 0 or kind == 2) and addresses > 0:
                dst = off + 8 + 16 * (addresses - 1)
            elif kind == 4 and addresses > 0:
                dst = off + 8
        nh = p[off]
        off += size
    return dst


cdef void one_packet(uint8_t* p, Py_ssize_t n, int fam, int pr, Py_ssize_t l3, Py_ssize_t l4,
                     int frag, bint fix, uint8_t* ip_out, uint8_t* l4_out) noexcept nogil:
    cdef int ip_st = ST_NONE
    cdef Py_ssize_t ihl, ip_len, seg, field, least, udp_len
    cdef uint32_t stored, value, pseudo
    ip_out[0] = ST_NONE
    l4_out[0] = ST_NONE
    if fam == 4 and 0 <= l3 and l3 + 20 <= n:
        ihl = (p[l3] & 0x0F) * 4
        ip_len = be16(p, l3 + 2)
        if ihl < 20:
            ip_st = ST_MALFORMED
        elif l3 + ihl > n:
            ip_st = ST_TRUNCATED
        else:
            ip_st = ST_GOOD if cksum(p + l3, ihl, 0) == 0 else ST_BAD
            if fix:
                put16(p, l3 + 10, 0)
                put16(p, l3 + 10, cksum(p + l3, ihl, 0))
    elif fam == 6 and 0 <= l3 and l3 + 40 <= n:
        ip_len = 40 + be16(p, l3 + 4)
    else:
        return
    ip_out[0] = <uint8_t>ip_st
    if l4 < 0 or frag != 0:
        return
    if pr == IPPROTO_TCP:
        field = 16
        least = 20
    elif pr == IPPROTO_UDP:
        field = 6
        least = 8
    elif (pr == IPPROTO_ICMP and fam == 4) or (pr == IPPROTO_ICMPV6 and fam == 6):
        field = 2
        least = 4
    else:
        return
    seg = l3 + ip_len - l4
    if seg < least:
        l4_out[0] = ST_MALFORMED
        return
    if l4 + least > n:
        l4_out[0] = ST_TRUNCATED
        return
    if pr == IPPROTO_UDP:
        udp_len = be16(p, l4 + 4)
        if udp_len < 8 or udp_len > seg:
            l4_out[0] = ST_MALFORMED
            return
        seg = udp_len
    if l4 + seg > n:
        l4_out[0] = ST_TRUNCATED
        return
    stored = be16(p, l4 + field)
    if pr == IPPROTO_UDP and fam == 4 and stored == 0:
        l4_out[0] = ST_NO_CHECKSUM
        return
    if pr == IPPROTO_ICMP:
        pseudo = 0
    elif fam == 4:
        pseudo = region_sum(p + l3 + 12, 8, fold(<uint64_t>pr + <uint64_t>seg))
    else:
        pseudo = region_sum(p + l3 + 8, 16,
                            fold(<uint64_t>pr + <uint64_t>(seg >> 16) + <uint64_t>(seg & 0xFFFF)))
        pseudo = region_sum(p + final_destination(p, n, l3, l4), 16, pseudo)
    if pr == IPPROTO_UDP and stored == 0:
        l4_out[0] = ST_BAD
    else:
        l4_out[0] = ST_GOOD if cksum(p + l4, seg, pseudo) == 0 else ST_BAD
    if fix:
        put16(p, l4 + field, 0)
        value = cksum(p + l4, seg, pseudo)
        if pr == IPPROTO_UDP and value == 0:
            value = 0xFFFF
        put16(p, l4 + field, value)


def checksum_packets(data, const int64_t[::1] offsets, const uint32_t[::1] caplen,
                     const uint8_t[::1] family, const uint8_t[::1] proto,
                     const int32_t[::1] l3_off, const int32_t[::1] l4_off,
                     const uint8_t[::1] fragment, bint fix,
                     uint8_t[::1] ip_status, uint8_t[::1] l4_status):
    """Verify (and with ``fix``, rewrite in ``data``) each packet's IPv4 header checksum and
    its TCP, UDP, ICMP or ICMPv6 checksum, using the flow keys' offsets.

    ``ip_status``/``l4_status`` receive the status found *before* any rewrite. Only checksums of
    headers captured in full are rewritten; a UDP/IPv4 checksum of 0 is left at 0.
    """
    cdef Py_ssize_t count = offsets.shape[0]
    cdef Py_ssize_t i, size, n
    cdef int64_t start, ahead
    cdef uint8_t[::1] writable
    cdef const uint8_t[::1] readable
    cdef uint8_t* base = NULL
    for name, arr in (("caplen", caplen), ("family", family), ("proto", proto),
                      ("l3_off", l3_off), ("l4_off", l4_off), ("fragment", fragment),
                      ("ip_status", ip_status), ("l4_status", l4_status)):
        if arr.shape[0] != count:
            raise ValueError(f"{name} holds {arr.shape[0]} values for {count} packets")
    if fix and count:
        try:
            writable = data
        except (ValueError, BufferError, TypeError):
            raise ValueError("checksum_packets with fix needs a writable buffer") from None
        size = writable.shape[0]
        if size:
            base = &writable[0]
    else:
        readable = data
        size = readable.shape[0]
        if size:
            base = <uint8_t*>&readable[0]  # never written through unless fix
    with nogil:
        for i in range(count):
            if i + PREFETCH_AHEAD < count:
                ahead = offsets[i + PREFETCH_AHEAD]
                if 0 <= ahead and ahead + 64 < size:
                    PKTX_PREFETCH(base + ahead)
                    PKTX_PREFETCH(base + ahead + 64)
            start = offsets[i]
            n = caplen[i]
            ip_status[i] = ST_NONE
            l4_status[i] = ST_NONE
            if start < 0 or start + n > size or base == NULL:
                continue
            one_packet(base + start, n, family[i], proto[i], l3_off[i], l4_off[i],
                       fragment[i], fix, &ip_status[i], &l4_status[i])
