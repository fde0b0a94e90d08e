# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Flow-key extraction in C: the compiled twin of ``engine/packet/flowkeys_py.py``.

Same signature, same outputs; the packet loop runs without the GIL. Every read is of a packet's
own bytes and is checked against its ``caplen`` first. Field meanings: ``engine.packet.flowkeys``.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define PKTX_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define PKTX_PREFETCH(p) ((void)0)
    #endif
    """
    void PKTX_PREFETCH(const void* p) noexcept nogil

cdef enum:
    # Packets ahead whose first bytes are fetched while the current one is parsed: headers lie
    # one per packet, hundreds of bytes apart, at strides the hardware prefetcher cannot guess.
    PREFETCH_AHEAD = 8

PUBLIC = ["extract_flow_keys"]

cdef enum:
    LT_NULL = 0
    LT_ETHERNET = 1
    LT_RAW = 101
    LT_LOOP = 108
    LT_LINUX_SLL = 113
    LT_IPV4 = 228
    LT_IPV6 = 229
    LT_LINUX_SLL2 = 276

    ETH_IPV4 = 0x0800
    ETH_IPV6 = 0x86DD
    ETH_8021Q = 0x8100
    ETH_8021AD = 0x88A8
    ETH_QINQ_OLD = 0x9100
    ETH_PPPOE_SESSION = 0x8864
    ETH_MPLS_UC = 0x8847
    ETH_MPLS_MC = 0x8848
    PPP_IPV4 = 0x0021
    PPP_IPV6 = 0x0057

    AF_INET = 2

    IPPROTO_HOPOPTS = 0
    IPPROTO_ICMP = 1
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_DCCP = 33
    IPPROTO_ROUTING = 43
    IPPROTO_FRAGMENT = 44
    IPPROTO_AH = 51
    IPPROTO_ICMPV6 = 58
    IPPROTO_DSTOPTS = 60
    IPPROTO_SCTP = 132
    IPPROTO_UDPLITE = 136

    FRAG_NONE = 0
    FRAG_FIRST = 1
    FRAG_LATER = 2

    INT32_MAX = 0x7FFFFFFF


cdef struct Keys:
    int family
    int proto
    Py_ssize_t src
    Py_ssize_t dst
    int sport
    int dport
    Py_ssize_t l3
    Py_ssize_t l4
    Py_ssize_t payload
    int fragment


cdef inline uint32_t be16(const uint8_t* b, Py_ssize_t p) noexcept nogil:
    return (<uint32_t>b[p] << 8) | b[p + 1]


cdef inline uint32_t be32(const uint8_t* b, Py_ssize_t p) noexcept nogil:
    return (be16(b, p) << 16) | be16(b, p + 2)


cdef inline bint is_af_inet6(uint32_t v) noexcept nogil:
    return v == 24 or v == 28 or v == 30


cdef void parse_packet(const uint8_t* b, Py_ssize_t n, uint32_t lt, Keys* k) noexcept nogil:
    cdef uint32_t et, fam_be, fam_le, ppp, frag, version
    cdef Py_ssize_t pos, q, hlen, ihl
    cdef int nh, bottom

    # -- link layer ------------------------------------------------------------------------
    if lt == LT_ETHERNET:
        if n < 14:
            return
        et = be16(b, 12)
        pos = 14
    elif lt == LT_LINUX_SLL:
        if n < 16:
            return
        et = be16(b, 14)
        pos = 16
    elif lt == LT_LINUX_SLL2:
        if n < 20:
            return
        et = be16(b, 0)
        pos = 20
    elif lt == LT_NULL or lt == LT_LOOP:
        if n < 4:
            return
        fam_be = be32(b, 0)
        fam_le = ((<uint32_t>b[3] << 24) | (<uint32_t>b[2] << 16) | (<uint32_t>b[1] << 8)
                  | b[0])
        if fam_be == AF_INET or fam_le == AF_INET:
            et = ETH_IPV4
        elif is_af_inet6(fam_be) or is_af_inet6(fam_le):
            et = ETH_IPV6
        else:
            return
        pos = 4
    elif lt == LT_RAW:
        if n < 1:
            return
        version = b[0] >> 4
        if version == 4:
            et = ETH_IPV4
        elif version == 6:
            et = ETH_IPV6
        else:
            return
        pos = 0
    elif lt == LT_IPV4:
        et = ETH_IPV4
        pos = 0
    elif lt == LT_IPV6:
        et = ETH_IPV6
        pos = 0
    else:
        return

    # -- tags and shims ----------------------------------------------------------------------
    while True:
        if et == ETH_8021Q or et == ETH_8021AD or et == ETH_QINQ_OLD:
            if pos + 4 > n:
                return
            et = be16(b, pos + 2)
            pos += 4
        elif et <= 1500:
            if pos + 8 > n or b[pos] != 0xAA or b[pos + 1] != 0xAA or b[pos + 2] != 0x03:
                return
            et = be16(b, pos + 6)
            pos += 8
        elif et == ETH_PPPOE_SESSION:
            if pos + 8 > n:
                return
            ppp = be16(b, pos + 6)
            pos += 8
            if ppp == PPP_IPV4:
                et = ETH_IPV4
            elif ppp == PPP_IPV6:
                et = ETH_IPV6
            else:
                return
        elif et == ETH_MPLS_UC or et == ETH_MPLS_MC:
            while True:
                if pos + 4 > n:
                    return
                bottom = b[pos + 2] & 1
                pos += 4
                if bottom:
                    break
            if pos >= n:
                return
            version = b[pos] >> 4
            if version == 4:
                et = ETH_IPV4
            elif version == 6:
                et = ETH_IPV6
            else:
                return
        else:
            break

    # -- IP ------------------------------------------------------------------------------------
    if et == ETH_IPV4:
        if pos + 20 > n or b[pos] >> 4 != 4:
            return
        ihl = (b[pos] & 0x0F) * 4
        if ihl < 20:
            return
        k.family = 4
        k.l3 = pos
        k.src = pos + 12
        k.dst = pos + 16
        nh = b[pos + 9]
        frag = be16(b, pos + 6)
        if frag & 0x1FFF:
            k.fragment = FRAG_LATER
            k.proto = nh
            return
        if frag & 0x2000:
            k.fragment = FRAG_FIRST
        q = pos + ihl
        if q > n:
            k.proto = nh
            return
    elif et == ETH_IPV6:
        if pos + 40 > n or b[pos] >> 4 != 6:
            return
        k.family = 6
        k.l3 = pos
        k.src = pos + 8
        k.dst = pos + 24
        nh = b[pos + 6]
        q = pos + 40
    else:
        return

    # -- extension headers (IPv6), AH (both) -------------------------------------------------
    while True:
        if nh == IPPROTO_AH or (k.family == 6 and (nh == IPPROTO_HOPOPTS
                                                   or nh == IPPROTO_ROUTING
                                                   or nh == IPPROTO_DSTOPTS)):
            if q + 2 > n:
                k.proto = nh
                return
            if nh == IPPROTO_AH:
                hlen = (<Py_ssize_t>b[q + 1] + 2) * 4
            else:
                hlen = (<Py_ssize_t>b[q + 1] + 1) * 8
            if q + hlen > n:
                k.proto = nh
                return
            nh = b[q]
            q += hlen
        elif k.family == 6 and nh == IPPROTO_FRAGMENT:
            if q + 8 > n:
                k.proto = nh
                return
            frag = be16(b, q + 2)
            nh = b[q]
            q += 8
            if frag & 0xFFF8:
                k.fragment = FRAG_LATER
                k.proto = nh
                return
            if frag & 1:
                k.fragment = FRAG_FIRST
        else:
            break

    # -- transport -------------------------------------------------------------------------
    k.proto = nh
    k.l4 = q
    if (nh == IPPROTO_TCP or nh == IPPROTO_UDP or nh == IPPROTO_SCTP or nh == IPPROTO_UDPLITE
            or nh == IPPROTO_DCCP):
        if q + 2 <= n:
            k.sport = be16(b, q)
        if q + 4 <= n:
            k.dport = be16(b, q + 2)
    elif nh == IPPROTO_ICMP or nh == IPPROTO_ICMPV6:
        if q + 1 <= n:
            k.sport = b[q]
        if q + 2 <= n:
            k.dport = b[q + 1]
    hlen = 0
    if nh == IPPROTO_TCP:
        if q + 13 <= n:
            hlen = (b[q + 12] >> 4) * 4
            if hlen < 20:
                hlen = 0
    elif nh == IPPROTO_DCCP:
        if q + 5 <= n:
            hlen = <Py_ssize_t>b[q + 4] * 4
            if hlen < 12:
                hlen = 0
    elif nh == IPPROTO_UDP or nh == IPPROTO_UDPLITE or nh == IPPROTO_ICMP or nh == IPPROTO_ICMPV6:
        hlen = 8
    elif nh == IPPROTO_SCTP:
        hlen = 12
    if hlen and q + hlen <= n:
        k.payload = q + hlen


def extract_flow_keys(const uint8_t[::1] data, const int64_t[::1] offsets,
                      const uint32_t[::1] caplen, const uint32_t[::1] linktypes,
                      uint8_t[::1] family, uint8_t[::1] proto,
                      uint8_t[:, ::1] src, uint8_t[:, ::1] dst,
                      uint16_t[::1] sport, uint16_t[::1] dport,
                      int32_t[::1] l3_off, int32_t[::1] l4_off, int32_t[::1] payload_off,
                      uint8_t[::1] fragment):
    """Fill the flow-key arrays for every packet ``data[offsets[i] : offsets[i] + caplen[i]]``.

    ``linktypes[i]`` is packet ``i``'s link type. Outputs (all of length ``len(offsets)``,
    ``src``/``dst`` of shape ``(n, 16)``) are overwritten in full. A packet that lies outside
    ``data`` is reported as having no flow key.
    """
    cdef Py_ssize_t count = offsets.shape[0]
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i, n, alen
    cdef int64_t start, ahead
    cdef Keys k
    cdef const uint8_t* base
    cdef const uint8_t* pkt
    for name, arr in (("caplen", caplen), ("linktypes", linktypes), ("family", family),
                      ("proto", proto), ("sport", sport), ("dport", dport),
                      ("l3_off", l3_off), ("l4_off", l4_off), ("payload_off", payload_off),
                      ("fragment", fragment)):
        if arr.shape[0] != count:
            raise ValueError(f"{name} holds {arr.shape[0]} values for {count} packets")
    if src.shape[0] != count or dst.shape[0] != count or src.shape[1] != 16 \
            or dst.shape[1] != 16:
        raise ValueError(f"src and dst must have shape ({count}, 16)")
    base = &data[0] if size else NULL
    with nogil:
        for i in range(count):
            if i + PREFETCH_AHEAD < count:
                ahead = offsets[i + PREFETCH_AHEAD]
                if 0 <= ahead and ahead + 64 < size:
                    PKTX_PREFETCH(base + ahead)
                    PKTX_PREFETCH(base + ahead + 64)
            start = offsets[i]
            n = caplen[i]
            if n > INT32_MAX:
                n = INT32_MAX
            memset(&k, 0, sizeof(Keys))
            k.l3 = -1
            k.l4 = -1
            k.payload = -1
            if start >= 0 and start + n <= size and base != NULL:
                pkt = base + start
                parse_packet(pkt, n, linktypes[i], &k)
            family[i] = <uint8_t>k.family
            proto[i] = <uint8_t>k.proto
            sport[i] = <uint16_t>k.sport
            dport[i] = <uint16_t>k.dport
            l3_off[i] = <int32_t>k.l3
            l4_off[i] = <int32_t>k.l4
            payload_off[i] = <int32_t>k.payload
            fragment[i] = <uint8_t>k.fragment
            memset(&src[i, 0], 0, 16)
            memset(&dst[i, 0], 0, 16)
            if k.family:
                alen = 4 if k.family == 4 else 16
                memcpy(&src[i, 0], pkt + k.src, alen)
                memcpy(&dst[i, 0], pkt + k.dst, alen)
