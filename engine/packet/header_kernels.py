"""numba kernels that rewrite IP header fields in place and patch checksums incrementally.

Private functions over numpy arrays and ints, as in ``engine.packet.kernels``; the services that
call them (``engine.services.anonymize``, ``engine.services.inspect``) check the arguments and own
the documentation. Checksums are updated by RFC 1624's equation 3, ``HC' = ~(~HC + ~m + m')``,
never recomputed: a checksum that was wrong before (offloaded, corrupted) stays exactly as
wrong, and one that was right stays right. They run unchanged under ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.packet.byte_kernels import fold, put_word, sum_words, word

_TCP = 6
_UDP = 17
_DCCP = 33
_ICMPV6 = 58
_UDPLITE = 136


@njit(cache=True, inline="always")
def _updated(checksum, old_sum, new_sum):
    """RFC 1624 eqn 3: the checksum once words summing to ``old_sum`` now sum to ``new_sum``."""
    s = fold((~checksum & 0xFFFF) + (~fold(old_sum) & 0xFFFF) + fold(new_sum))
    return ~s & 0xFFFF


@njit(cache=True, inline="always")
def _l4_checksum_at(proto, family):
    """Where the transport checksum sits in the transport header; -1 for none over a
    pseudo-header (ICMPv4's covers only the ICMP message, SCTP's is a CRC)."""
    if proto == _TCP:
        return 16
    if proto in (_UDP, _UDPLITE, _DCCP):
        return 6
    if proto == _ICMPV6 and family == 6:
        return 2
    return -1


@njit(cache=True)
def _routed(data, at, nh, end):
    """Whether an IPv6 routing header with segments left sits in the extension headers from
    ``at`` (then the pseudo-header holds the final destination, not the header's)."""
    size: np.int64 | int
    while at + 8 <= end:
        if nh == 43:
            if data[at + 3] != 0:
                return True
            size = (np.int64(data[at + 1]) + 1) * 8
        elif nh == 0 or nh == 60:
            size = (np.int64(data[at + 1]) + 1) * 8
        elif nh == 44:
            size = 8
        elif nh == 51:
            size = (np.int64(data[at + 1]) + 2) * 4
        else:
            return False
        nh = data[at]
        at += size
    return False


@njit(cache=True, nogil=True)
def _rewrite_addresses(data, offsets, caplen, family, proto, l3_off, l4_off, fragment, src, dst):
    """Write ``src[i]``/``dst[i]`` (first 4 bytes for IPv4, 16 for IPv6) over packet i's
    outermost IP addresses; update the IPv4 header checksum and the TCP, UDP, UDP-Lite, DCCP or
    ICMPv6 checksum (their pseudo-header holds the addresses). A UDP checksum of 0 (none sent)
    stays 0; one that would become 0 is written 0xFFFF. Returns how many packets were
    rewritten (those with ``family`` 4 or 6)."""
    rewritten = 0
    for i in range(offsets.shape[0]):
        fam = family[i]
        if fam == 4:
            alen = 4
            sat = 12
            dat = 16
        elif fam == 6:
            alen = 16
            sat = 8
            dat = 24
        else:
            continue
        base = offsets[i]
        end = base + np.int64(caplen[i])
        l3 = base + np.int64(l3_off[i])
        old_s = sum_words(data, l3 + sat, alen)
        old_d = sum_words(data, l3 + dat, alen)
        for k in range(alen):
            data[l3 + sat + k] = src[i, k]
            data[l3 + dat + k] = dst[i, k]
        new_s = sum_words(data, l3 + sat, alen)
        new_d = sum_words(data, l3 + dat, alen)
        rewritten += 1
        old = old_s + old_d
        new = new_s + new_d
        if fam == 4 and fold(old) != fold(new):
            put_word(data, l3 + 10, _updated(word(data, l3 + 10), old, new))
        if fragment[i] == 2 or l4_off[i] < 0:
            continue
        p = proto[i]
        pos = _l4_checksum_at(p, fam)
        if pos < 0:
            continue
        at = base + np.int64(l4_off[i]) + pos
        if at + 2 > end:
            continue
        checksum = word(data, at)
        if p == _UDP and checksum == 0:
            continue
        if fam == 6 and _routed(data, l3 + 40, data[l3 + 6], end):
            old = old_s
            new = new_s
        if fold(old) == fold(new):
            continue
        value = _updated(checksum, old, new)
        if p == _UDP and value == 0:
            value = 0xFFFF
        put_word(data, at, value)
    return rewritten


@njit(cache=True, nogil=True)
def _set_dscp(data, offsets, family, l3_off, selected, dscp):
    """Set the DSCP (top six bits of the IPv4 TOS / IPv6 traffic class, ECN bits kept) of the
    packets with ``selected[i]``, updating the IPv4 header checksum. Returns how many changed
    (IPv4 or IPv6 packets among the selected)."""
    marked = 0
    for i in range(offsets.shape[0]):
        if not selected[i]:
            continue
        l3 = offsets[i] + np.int64(l3_off[i])
        if family[i] == 4:
            old = word(data, l3)
            data[l3 + 1] = (dscp << 2) | (data[l3 + 1] & 3)
            new = word(data, l3)
            if old != new:
                put_word(data, l3 + 10, _updated(word(data, l3 + 10), old, new))
        elif family[i] == 6:
            tc = ((np.int64(data[l3]) & 0xF) << 4) | (np.int64(data[l3 + 1]) >> 4)
            tc = (dscp << 2) | (tc & 3)
            data[l3] = (data[l3] & 0xF0) | (tc >> 4)
            data[l3 + 1] = ((tc & 0xF) << 4) | (data[l3 + 1] & 0xF)
        else:
            continue
        marked += 1
    return marked
