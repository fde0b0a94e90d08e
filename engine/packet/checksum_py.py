"""The Internet checksum (RFC 1071) in pure Python/numpy: the twin of ``ext/_checksum.pyx``.

Values are 16-bit integers in network byte order (the first byte of a word is its high byte), so
``internet_checksum`` returns what goes into a header field written big-endian, and a region
that holds its own correct checksum sums to 0.
"""

from __future__ import annotations

import numpy as np

# Per-packet checksum status (both twins use these values; ``engine.packet.checksum`` re-exports
# them).
NONE = 0  # no such header, or not one with an Internet checksum (e.g. SCTP, a later fragment)
GOOD = 1
BAD = 2
TRUNCATED = 3  # the bytes it covers were not all captured: cannot say
NO_CHECKSUM = 4  # UDP over IPv4 with checksum 0: the sender did not compute one
MALFORMED = 5  # the lengths do not add up (IP length shorter than the headers, UDP length...)

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
# IPv6 extension headers sized (length + 1) * 8: hop-by-hop, routing, destination options,
# mobility, HIP, shim6, and the two experimental numbers.
_EXT_8 = (0, 43, 60, 135, 139, 140, 253, 254)

PUBLIC = ["ones_complement_sum", "internet_checksum", "checksum_packets"]


def _region(buf, start: int, length: int) -> np.ndarray:
    a = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1)
    if a.dtype != np.uint8:
        raise TypeError(f"checksum needs a uint8 buffer, not {a.dtype}")
    if start < 0 or length < 0 or start + length > len(a):
        raise ValueError(
            f"region [{start}, {start + length}) lies outside the {len(a)}-byte buffer"
        )
    return a[start : start + length]


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_complement_sum(buf, start: int, length: int, initial: int = 0) -> int:
    """The folded 16-bit ones'-complement sum of ``buf[start:start+length]`` plus ``initial``.

    An odd length is padded with a zero byte. ``initial`` (any non-negative int, e.g. a
    pseudo-header's sum) is folded in, so sums of pieces chain: each piece but the last must
    have an even length.
    """
    if initial < 0:
        raise ValueError("initial must be non-negative")
    a = _region(buf, start, length)
    even = length & ~1
    words = a[:even].view(">u2") if a.flags.c_contiguous else a[:even].copy().view(">u2")
    s = int(words.sum(dtype=np.uint64)) + _fold(initial)
    if length & 1:
        s += int(a[-1]) << 8
    return _fold(s)


def internet_checksum(buf, start: int, length: int, initial: int = 0) -> int:
    """The RFC 1071 checksum of ``buf[start:start+length]``: the complement of its sum."""
    return ~ones_complement_sum(buf, start, length, initial) & 0xFFFF


def checksum_packets(
    data, offsets, caplen, family, proto, l3_off, l4_off, fragment, fix, ip_status, l4_status
):
    """Verify (and with ``fix``, rewrite in ``data``) each packet's IPv4 header checksum and
    its TCP, UDP, ICMP or ICMPv6 checksum, using the flow keys' offsets.

    ``ip_status``/``l4_status`` receive the status found *before* any rewrite. Only checksums of
    headers captured in full are rewritten; a UDP/IPv4 checksum of 0 is left at 0.
    """
    count = len(offsets)
    for name, arr in (
        ("caplen", caplen),
        ("family", family),
        ("proto", proto),
        ("l3_off", l3_off),
        ("l4_off", l4_off),
        ("fragment", fragment),
        ("ip_status", ip_status),
        ("l4_status", l4_status),
    ):
        if len(arr) != count:
            raise ValueError(f"{name} holds {len(arr)} values for {count} packets")
    buf = np.asarray(data).reshape(-1)
    if fix and count and not buf.flags.writeable:
        raise ValueError("checksum_packets with fix needs a writable buffer")
    for i in range(count):
        start = int(offsets[i])
        n = int(caplen[i])
        ip_status[i] = NONE
        l4_status[i] = NONE
        if start < 0 or start + n > len(buf):
            continue
        ip, l4 = _one(
            buf[start : start + n],
            n,
            int(family[i]),
            int(proto[i]),
            int(l3_off[i]),
            int(l4_off[i]),
            int(fragment[i]),
            bool(fix),
        )
        ip_status[i] = ip
        l4_status[i] = l4


def _be16(p: np.ndarray, at: int) -> int:
    return (int(p[at]) << 8) | int(p[at + 1])


def _put16(p: np.ndarray, at: int, v: int) -> None:
    p[at] = v >> 8
    p[at + 1] = v & 0xFF


def _one(
    p: np.ndarray, n: int, fam: int, pr: int, l3: int, l4: int, frag: int, fix: bool
) -> tuple[int, int]:
    ip_st = NONE
    l4_st = NONE
    if fam == 4 and l3 >= 0 and l3 + 20 <= n:
        ihl = (int(p[l3]) & 0x0F) * 4
        ip_len = _be16(p, l3 + 2)
        if ihl < 20:
            ip_st = MALFORMED
        elif l3 + ihl > n:
            ip_st = TRUNCATED
        else:
            ip_st = GOOD if internet_checksum(p, l3, ihl) == 0 else BAD
            if fix:
                _put16(p, l3 + 10, 0)
                _put16(p, l3 + 10, internet_checksum(p, l3, ihl))
    elif fam == 6 and l3 >= 0 and l3 + 40 <= n:
        ip_len = 40 + _be16(p, l3 + 4)
    else:
        return ip_st, l4_st
    if l4 < 0 or frag != 0:
        return ip_st, l4_st
    if pr == IPPROTO_TCP:
        field, least = 16, 20
    elif pr == IPPROTO_UDP:
        field, least = 6, 8
    elif (pr == IPPROTO_ICMP and fam == 4) or (pr == IPPROTO_ICMPV6 and fam == 6):
        field, least = 2, 4
    else:
        return ip_st, l4_st
    seg = l3 + ip_len - l4
    if seg < least:
        return ip_st, MALFORMED
    if l4 + least > n:
        return ip_st, TRUNCATED
    if pr == IPPROTO_UDP:
        udp_len = _be16(p, l4 + 4)
        if udp_len < 8 or udp_len > seg:
            return ip_st, MALFORMED
        seg = udp_len
    if l4 + seg > n:
        return ip_st, TRUNCATED
    stored = _be16(p, l4 + field)
    if pr == IPPROTO_UDP and fam == 4 and stored == 0:
        return ip_st, NO_CHECKSUM
    if pr == IPPROTO_ICMP:
        pseudo = 0
    elif fam == 4:
        pseudo = ones_complement_sum(p, l3 + 12, 8, pr + seg)
    else:
        pseudo = ones_complement_sum(p, l3 + 8, 16, pr + (seg >> 16) + (seg & 0xFFFF))
        pseudo = ones_complement_sum(p, final_destination(p, n, l3, l4), 16, pseudo)
    if pr == IPPROTO_UDP and stored == 0:
        l4_st = BAD  # RFC 8200: a UDP checksum of 0 over IPv6 is an error
    else:
        l4_st = GOOD if internet_checksum(p, l4, seg, pseudo) == 0 else BAD
    if fix:
        _put16(p, l4 + field, 0)
        value = internet_checksum(p, l4, seg, pseudo)
        if pr == IPPROTO_UDP and value == 0:
            value = 0xFFFF
        _put16(p, l4 + field, value)
    return ip_st, l4_st


def final_destination(p: np.ndarray, n: int, l3: int, l4: int) -> int:
    """Where the IPv6 packet at ``l3`` (upper layer at ``l4``) holds the address its upper-layer
    checksum is computed over (RFC 8200, 8.1): the final destination.

    A Routing header with segments left names it: the last address of a type 0 or type 2
    header, the first entry of a type 4 (Segment Routing, RFC 8754) segment list, whose order
    is reversed. With no segments left, or no such header, it is the Destination Address. A
    type 3 (RPL) header compresses its addresses; it is not unpacked here, and the Destination
    Address is used.
    """
    dst = l3 + 24
    nh = int(p[l3 + 6])
    off = l3 + 40
    while off + 8 <= l4 <= n:
        if nh in _EXT_8:
            size = (int(p[off + 1]) + 1) * 8
        elif nh == IPPROTO_FRAGMENT:
            size = 8
        elif nh == IPPROTO_AH:
            size = (int(p[off + 1]) + 2) * 4
        else:
            break
        if off + size > l4:
            break
        if nh == IPPROTO_ROUTING and p[off + 3] != 0:
            kind = int(p[off + 2])
            addresses = (size - 8) // 16
            if kind in (0, 2) and addresses:
                dst = off + 8 + 16 * (addresses - 1)
            elif kind == 4 and addresses:
                dst = off + 8
        nh = int(p[off])
        off += size
    return dst
