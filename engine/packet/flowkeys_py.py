"""Flow-key extraction in pure Python: the slow, obvious twin of ``ext/_flowkeys.pyx``.

Both twins fill caller-provided arrays, one row per packet, and never read a byte past a packet's
``caplen`` nor outside ``data``. What each field means is written down in
``engine.packet.flowkeys``; the Cython twin follows the same steps in the same order, so the two
can be read side by side.
"""

from __future__ import annotations

# Link types understood (LINKTYPE_* values as stored in pcap/pcapng).
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
ETH_VLAN = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, the pre-standard QinQ outer tag
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = (0x8847, 0x8848)
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057

AF_INET = 2
AF_INET6 = (24, 28, 30)  # NetBSD/OpenBSD, FreeBSD, Darwin: all appear in NULL/LOOP captures

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_DCCP = 33
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136

FRAG_NONE = 0
FRAG_FIRST = 1  # offset 0, more fragments follow: the transport header is here
FRAG_LATER = 2  # a non-first fragment: no transport header, no ports

PORT_PROTOS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE, IPPROTO_DCCP)

_INT32_MAX = 0x7FFFFFFF

PUBLIC = ["extract_flow_keys"]


def extract_flow_keys(
    data,
    offsets,
    caplen,
    linktypes,
    family,
    proto,
    src,
    dst,
    sport,
    dport,
    l3_off,
    l4_off,
    payload_off,
    fragment,
):
    """Fill the flow-key arrays for every packet ``data[offsets[i] : offsets[i] + caplen[i]]``.

    ``linktypes[i]`` is packet ``i``'s link type. Outputs (all of length ``len(offsets)``,
    ``src``/``dst`` of shape ``(n, 16)``) are overwritten in full. A packet that lies outside
    ``data`` is reported as having no flow key.
    """
    count = len(offsets)
    for name, arr in (
        ("caplen", caplen),
        ("linktypes", linktypes),
        ("family", family),
        ("proto", proto),
        ("sport", sport),
        ("dport", dport),
        ("l3_off", l3_off),
        ("l4_off", l4_off),
        ("payload_off", payload_off),
        ("fragment", fragment),
    ):
        if len(arr) != count:
            raise ValueError(f"{name} holds {len(arr)} values for {count} packets")
    if src.shape != (count, 16) or dst.shape != (count, 16):
        raise ValueError(f"src and dst must have shape ({count}, 16)")
    mv = memoryview(data).cast("B") if len(data) else memoryview(b"")
    size = len(mv)
    for i in range(count):
        start = int(offsets[i])
        n = min(int(caplen[i]), _INT32_MAX)
        k = _Keys()
        if start >= 0 and start + n <= size:
            _packet(mv, start, n, int(linktypes[i]), k)
        family[i] = k.family
        proto[i] = k.proto
        sport[i] = k.sport
        dport[i] = k.dport
        l3_off[i] = k.l3
        l4_off[i] = k.l4
        payload_off[i] = k.payload
        fragment[i] = k.fragment
        src[i, :] = 0
        dst[i, :] = 0
        if k.family:
            alen = 4 if k.family == 4 else 16
            s = start + k.src
            d = start + k.dst
            src[i, :alen] = mv[s : s + alen]
            dst[i, :alen] = mv[d : d + alen]


class _Keys:
    """One packet's results while it is being parsed (offsets relative to the packet)."""

    __slots__ = (
        "dport",
        "dst",
        "family",
        "fragment",
        "l3",
        "l4",
        "payload",
        "proto",
        "sport",
        "src",
    )

    def __init__(self) -> None:
        self.family = 0
        self.proto = 0
        self.src = 0
        self.dst = 0
        self.sport = 0
        self.dport = 0
        self.l3 = -1
        self.l4 = -1
        self.payload = -1
        self.fragment = FRAG_NONE


def _packet(b, base: int, n: int, lt: int, k: _Keys) -> None:
    """Parse one packet of ``n`` bytes at ``b[base:]``; every index below is checked against n."""

    def be16(p: int) -> int:
        return (b[base + p] << 8) | b[base + p + 1]

    def be32(p: int) -> int:
        return (be16(p) << 16) | be16(p + 2)

    # -- link layer: find the ethertype (or the IP version) and where its payload starts -----
    if lt == LT_ETHERNET:
        if n < 14:
            return
        et = be16(12)
        pos = 14
    elif lt == LT_LINUX_SLL:
        if n < 16:
            return
        et = be16(14)
        pos = 16
    elif lt == LT_LINUX_SLL2:
        if n < 20:
            return
        et = be16(0)
        pos = 20
    elif lt in (LT_NULL, LT_LOOP):
        # The family is in the capturing host's byte order for NULL and meant to be big-endian
        # for LOOP, but writers get LOOP wrong too: accept either order for both.
        if n < 4:
            return
        fam_be = be32(0)
        fam_le = (b[base + 3] << 24) | (b[base + 2] << 16) | (b[base + 1] << 8) | b[base]
        if fam_be == AF_INET or fam_le == AF_INET:
            et = ETH_IPV4
        elif fam_be in AF_INET6 or fam_le in AF_INET6:
            et = ETH_IPV6
        else:
            return
        pos = 4
    elif lt == LT_RAW:
        if n < 1:
            return
        version = b[base] >> 4
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

    # -- tags and shims between the link header and IP -----------------------------------------
    while True:
        if et in ETH_VLAN:
            if pos + 4 > n:
                return
            et = be16(pos + 2)
            pos += 4
        elif et <= 1500:
            # An 802.3 length, not a type: only LLC/SNAP carries an ethertype after it.
            if (
                pos + 8 > n
                or b[base + pos] != 0xAA
                or b[base + pos + 1] != 0xAA
                or b[base + pos + 2] != 0x03
            ):
                return
            et = be16(pos + 6)
            pos += 8
        elif et == ETH_PPPOE_SESSION:
            if pos + 8 > n:
                return
            ppp = be16(pos + 6)
            pos += 8
            if ppp == PPP_IPV4:
                et = ETH_IPV4
            elif ppp == PPP_IPV6:
                et = ETH_IPV6
            else:
                return
        elif et in ETH_MPLS:
            while True:
                if pos + 4 > n:
                    return
                bottom = b[base + pos + 2] & 1
                pos += 4
                if bottom:
                    break
            # MPLS does not say what it carries; like every dissector, guess from the version.
            if pos >= n:
                return
            version = b[base + pos] >> 4
            if version == 4:
                et = ETH_IPV4
            elif version == 6:
                et = ETH_IPV6
            else:
                return
        else:
            break

    # -- IP --------------------------------------------------------------------------------------
    if et == ETH_IPV4:
        if pos + 20 > n or b[base + pos] >> 4 != 4:
            return
        ihl = (b[base + pos] & 0x0F) * 4
        if ihl < 20:
            return
        k.family = 4
        k.l3 = pos
        k.src = pos + 12
        k.dst = pos + 16
        nh = b[base + pos + 9]
        frag = be16(pos + 6)
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
        if pos + 40 > n or b[base + pos] >> 4 != 6:
            return
        k.family = 6
        k.l3 = pos
        k.src = pos + 8
        k.dst = pos + 24
        nh = b[base + pos + 6]
        q = pos + 40
    else:
        return

    # -- extension headers (IPv6), AH (both) ---------------------------------------------------
    while True:
        if nh == IPPROTO_AH or (
            k.family == 6 and nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS)
        ):
            if q + 2 > n:
                k.proto = nh
                return
            hlen = (b[base + q + 1] + 2) * 4 if nh == IPPROTO_AH else (b[base + q + 1] + 1) * 8
            if q + hlen > n:
                k.proto = nh
                return
            nh = b[base + q]
            q += hlen
        elif k.family == 6 and nh == IPPROTO_FRAGMENT:
            if q + 8 > n:
                k.proto = nh
                return
            frag = be16(q + 2)
            nh = b[base + q]
            q += 8
            if frag & 0xFFF8:
                k.fragment = FRAG_LATER
                k.proto = nh
                return
            if frag & 1:
                k.fragment = FRAG_FIRST
        else:
            break

    # -- transport ---------------------------------------------------------------------------
    k.proto = nh
    k.l4 = q
    if nh in PORT_PROTOS:
        if q + 2 <= n:
            k.sport = be16(q)
        if q + 4 <= n:
            k.dport = be16(q + 2)
    elif nh in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if q + 1 <= n:
            k.sport = b[base + q]
        if q + 2 <= n:
            k.dport = b[base + q + 1]
    hlen = 0
    if nh == IPPROTO_TCP:
        if q + 13 <= n:
            hlen = (b[base + q + 12] >> 4) * 4
            if hlen < 20:
                hlen = 0
    elif nh == IPPROTO_DCCP:
        if q + 5 <= n:
            hlen = b[base + q + 4] * 4
            if hlen < 12:
                hlen = 0
    elif nh in (IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_ICMP, IPPROTO_ICMPV6):
        hlen = 8
    elif nh == IPPROTO_SCTP:
        hlen = 12
    if hlen and q + hlen <= n:
        k.payload = q + hlen
