"""numba kernels that find TCP/UDP payloads and rebuild packets around new ones, a segment per call.

Private functions over numpy arrays and ints, as in ``engine.packet.kernels``;
``engine.services.payload`` checks the arguments and owns the documentation (what is selected,
which fields change, the checksum forms). Their slow twins are
``tests/engine/services/payload_naive.py`` (the numpy implementation these replaced). They run
unchanged under ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.packet.byte_kernels import put_word, word

# Why a packet is left alone (0: selected); the order of ``payload.SKIP_REASONS``, plus one.
OK, NOT_TCP_UDP, FRAGMENT, TRUNCATED, MALFORMED, EMPTY = range(6)

_TCP = 6
_UDP = 17
_PPPOE_SESSION = 0x8864
_MAX_VLAN_TAGS = 8
_DOT3_MAX = 1500
_FLAG_L4_FFFF = 0x01
_FLAG_IP_FFFF = 0x02


@njit(cache=True, inline="always")
def _is_vlan(et):
    return et == 0x8100 or et == 0x88A8 or et == 0x9100


@njit(cache=True, inline="always")
def _copy(dst, d, src, s, n):
    """``dst[d:d + n] = src[s:s + n]``, as fast as a memcpy (a slice assignment is 3x slower, an
    index loop over the whole arrays 10x: neither vectorizes)."""
    to = dst[d : d + n]
    fro = src[s : s + n]
    for k in range(n):
        to[k] = fro[k]


_U8 = np.uint64(8)
_U16 = np.uint64(16)
_U24 = np.uint64(24)


@njit(cache=True)
def _be_sum(data, at, n):
    """The ones'-complement sum of ``data[at:at + n]`` as big-endian 16-bit words paired from
    ``at`` (an odd last byte padded with zero), modulo 0xFFFF."""
    # Four bytes a step as one little-endian 32-bit word: 2**16 is 1 modulo 0xFFFF, so a 32-bit
    # word counts as its two 16-bit halves, and a byte-swapped 16-bit word is 256 times the
    # word modulo 0xFFFF. Over a slice of its own (as in ``_copy``) LLVM vectorizes it: 5x the
    # word-by-word loop.
    whole = n & ~np.int64(3)
    d = data[at : at + whole]
    s = np.uint64(0)
    for k in range(0, whole, 4):
        s += (
            np.uint64(d[k])
            | (np.uint64(d[k + 1]) << _U8)
            | (np.uint64(d[k + 2]) << _U16)
            | (np.uint64(d[k + 3]) << _U24)
        )
    r = np.int64(s % np.uint64(0xFFFF)) * 256
    k = at + whole
    if n - whole >= 2:
        r += word(data, k)
        k += 2
    if (n - whole) & 1:
        r += np.int64(data[k]) << 8
    return r % 0xFFFF


@njit(cache=True, nogil=True)
def _region_sums(data, starts, lengths, out):
    """out[i]: ``_be_sum`` of ``data[starts[i]:starts[i] + lengths[i]]``."""
    for i in range(starts.shape[0]):
        out[i] = _be_sum(data, np.int64(starts[i]), np.int64(lengths[i]))


@njit(cache=True, nogil=True)
def _locate(
    data,
    offsets,
    caplen,
    origlen,
    linktype,
    family,
    proto,
    fragment,
    l3_off,
    l4_off,
    payload_off,
    reason,
    l3,
    l4,
    start,
    end,
    v4,
    udp,
    ip_len,
    flags,
    link_at,
    link_max,
):
    """Per packet: ``reason`` (OK or why it is left alone) and, for OK ones, the absolute
    positions of its IP header, transport header, payload and payload end, whether it is IPv4
    and UDP, its IP length field, its checksum-form flags and where its link-layer length field
    is (-1 for none) with that field's largest value. Returns how many are OK."""
    m = 0
    for i in range(offsets.shape[0]):
        fam = family[i]
        p = proto[i]
        if (fam != 4 and fam != 6) or (p != _TCP and p != _UDP):
            reason[i] = NOT_TCP_UDP
            continue
        if fragment[i] != 0:
            reason[i] = FRAGMENT
            continue
        if caplen[i] != origlen[i]:
            reason[i] = TRUNCATED
            continue
        if payload_off[i] < 0:
            reason[i] = MALFORMED
            continue
        o = np.int64(offsets[i])
        a3 = o + np.int64(l3_off[i])
        a4 = o + np.int64(l4_off[i])
        po = o + np.int64(payload_off[i])
        is4 = fam == 4
        isudp = p == _UDP
        n = word(data, a3 + 2) if is4 else word(data, a3 + 4)
        ip_end = (a3 if is4 else a3 + 40) + n
        e = ip_end
        bad = ip_end > o + np.int64(caplen[i]) or po > ip_end or (not is4 and n == 0)
        if isudp:
            ulen = word(data, a4 + 4)
            e = a4 + ulen
            bad = bad or ulen < 8 or e > ip_end
        if bad:
            reason[i] = MALFORMED
            continue
        if e == po:
            reason[i] = EMPTY
            continue
        reason[i] = OK
        f = 0
        if not isudp and word(data, a4 + 16) == 0xFFFF:
            f |= _FLAG_L4_FFFF
        if is4 and word(data, a3 + 10) == 0xFFFF:
            f |= _FLAG_IP_FFFF
        # int64 from the start, so numba types each one variable (mypy: ints go in later).
        at: np.int64 | int = np.int64(-1)
        limit: np.int64 | int = np.int64(0)
        lt = linktype[i]
        if lt == 1:
            q = o + 12
            for _ in range(_MAX_VLAN_TAGS):
                if q + 2 < a3 and _is_vlan(word(data, q)):
                    q += 4
                else:
                    break
            if q + 2 <= a3:
                et = word(data, q)
                if et < 0x0600:
                    at = q
                    limit = _DOT3_MAX
                elif et == _PPPOE_SESSION and q + 8 <= a3:
                    at = q + 6
                    limit = 0xFFFF
        elif lt == 113 or lt == 276:
            proto_at = 14 if lt == 113 else 0
            header = 16 if lt == 113 else 20
            if o + header + 6 <= a3 and word(data, o + proto_at) == _PPPOE_SESSION:
                at = o + header + 4
                limit = 0xFFFF
        l3[m] = a3
        l4[m] = a4
        start[m] = po
        end[m] = e
        v4[m] = is4
        udp[m] = isudp
        ip_len[m] = n
        flags[m] = f
        link_at[m] = at
        link_max[m] = limit
        m += 1
    return m


@njit(cache=True, inline="always")
def _update(old, removed, added, zero):
    """RFC 1624 eqn. 3 (see ``engine.services.payload``): ``zero`` for a ones'-complement 0."""
    r = (old + removed + (0xFFFF - added)) % 0xFFFF
    return zero if r == 0 else r


@njit(cache=True, nogil=True)
def _rebuild(
    src,
    offsets,
    caplen,
    out,
    out_off,
    rows,
    changed,
    l3,
    l4,
    start,
    end,
    v4,
    udp,
    ip_len,
    link_at,
    new_data,
    new_start,
    new_len,
    copy_len,
    new_flags,
    at,
    removed,
):
    """Every packet of ``src`` copied to ``out`` at ``out_off``; selected packet ``j`` (batch
    position ``rows[j]``) with ``changed[j]`` gets its payload ``src[start[j]:end[j]]``
    replaced by ``new_len[j]`` bytes at ``at[j]``, of which the first ``copy_len[j]`` come from
    ``new_data[new_start[j]:]`` (the bytes after ``end[j]`` follow), and its lengths and IPv4
    checksum updated. ``out_off`` must leave room for that. The TCP/UDP checksum is updated
    too where all the new payload was copied; elsewhere ``removed[j]`` keeps the sum of what
    left it (for ``_finish``, once the caller has written the rest). ``at`` and ``removed``
    come filled with -1, which stays for packets left as they were."""
    n = offsets.shape[0]
    j = 0
    for i in range(n):
        o = np.int64(offsets[i])
        d = np.int64(out_off[i])
        c = np.int64(caplen[i])
        while j < rows.shape[0] and rows[j] < i:
            j += 1
        if j >= rows.shape[0] or rows[j] != i or not changed[j]:
            _copy(out, d, src, o, c)
            continue
        ps = np.int64(start[j])
        pe = np.int64(end[j])
        k = np.int64(new_len[j])
        ns = np.int64(new_start[j])
        pre = ps - o
        _copy(out, d, src, o, pre)
        _copy(out, d + pre, new_data, ns, np.int64(copy_len[j]))
        _copy(out, d + pre + k, src, pe, o + c - pe)
        at[j] = d + pre
        shift = d - o
        delta = k - (pe - ps)
        a3 = np.int64(l3[j])
        a4 = np.int64(l4[j])
        f = new_flags[j]
        n_ip = np.int64(ip_len[j])
        if v4[j]:
            put_word(out, a3 + 2 + shift, n_ip + delta)
            zero = 0xFFFF if f & _FLAG_IP_FFFF else 0
            put_word(out, a3 + 10 + shift, _update(word(src, a3 + 10), n_ip, n_ip + delta, zero))
        else:
            put_word(out, a3 + 4 + shift, n_ip + delta)
        seg = pe - a4
        if udp[j]:
            put_word(out, a4 + 4 + shift, seg + delta)
        ck = word(src, a4 + (6 if udp[j] else 16))
        if udp[j] and ck == 0:  # none was sent: stays 0
            removed[j] = -1
        else:
            times = 2 if udp[j] else 1
            removed[j] = (_be_sum(src, ps, pe - ps) + times * seg) % 0xFFFF
            if copy_len[j] == k:
                _l4_checksum(out, a4 + shift, d + pre, k, seg + delta, udp[j], f, ck, removed[j])
                removed[j] = -1  # done
        la = np.int64(link_at[j])
        if la >= 0:
            put_word(out, la + shift, word(src, la) + delta)


@njit(cache=True, inline="always")
def _l4_checksum(out, a4, payload_at, k, new_seg, is_udp, f, ck, removed):
    """The TCP/UDP checksum at transport header ``a4`` of ``out``, updated from ``ck`` for a
    payload of ``k`` bytes at ``payload_at`` replacing words that summed to ``removed``."""
    if is_udp:
        ck_at = a4 + 6
        times = 2
        zero = 0xFFFF
    else:
        ck_at = a4 + 16
        times = 1
        zero = 0xFFFF if f & _FLAG_L4_FFFF else 0
    added = (_be_sum(out, payload_at, k) + times * new_seg) % 0xFFFF
    put_word(out, ck_at, _update(ck, removed, added, zero))


@njit(cache=True, nogil=True)
def _finish(out, at, rows, out_off, offsets, l4, udp, start, end, new_len, new_flags, src, removed):
    """The TCP/UDP checksums ``_rebuild`` left (where ``removed[j] >= 0`` and the payload was
    not all copied), now that the payloads at ``at`` are written."""
    for j in range(at.shape[0]):
        if at[j] < 0 or removed[j] < 0:
            continue
        i = rows[j]
        shift = np.int64(out_off[i]) - np.int64(offsets[i])
        a4 = np.int64(l4[j])
        k = np.int64(new_len[j])
        seg = np.int64(end[j]) - a4
        delta = k - (np.int64(end[j]) - np.int64(start[j]))
        ck = word(src, a4 + (6 if udp[j] else 16))
        _l4_checksum(
            out, a4 + shift, np.int64(at[j]), k, seg + delta, udp[j], new_flags[j], ck, removed[j]
        )


@njit(cache=True, nogil=True)
def _gather_behind(lead, src, starts, lengths, dst, at):
    """``dst[at[i]:]`` gets ``lead[i]`` (a row of bytes) then ``src[starts[i]:][:lengths[i]]``
    (which may be 0 bytes long)."""
    w = lead.shape[1]
    for i in range(starts.shape[0]):
        d = np.int64(at[i])
        to = dst[d : d + w]
        for k in range(w):
            to[k] = lead[i, k]
        _copy(dst, d + w, src, np.int64(starts[i]), np.int64(lengths[i]))


@njit(cache=True, nogil=True)
def _flow_rows(fixed, family, proto, src, dst, sport, dport, index, flow, rows):
    """Row ``j`` of ``rows``: ``fixed``, then packet ``index[j]``'s family and protocol and, with
    ``flow``, its 16-byte source and destination addresses and big-endian ports."""
    w = fixed.shape[0]
    for j in range(index.shape[0]):
        i = index[j]
        r = rows[j]
        for k in range(w):
            r[k] = fixed[k]
        r[w] = family[i]
        r[w + 1] = proto[i]
        if flow:
            for k in range(16):
                r[w + 2 + k] = src[i, k]
                r[w + 18 + k] = dst[i, k]
            r[w + 34] = sport[i] >> 8
            r[w + 35] = sport[i] & 0xFF
            r[w + 36] = dport[i] >> 8
            r[w + 37] = dport[i] & 0xFF
