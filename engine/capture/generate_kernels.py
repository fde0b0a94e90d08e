"""numba kernels for ``engine.capture.generate``: private functions over arrays and ints, nothing
else.

``engine.capture.generate`` plans the packets (flows, directions, sizes, times) with vectorized
numpy and owns the documentation; ``build_frames`` turns the plan into bytes in one pass, carrying
per-flow TCP and IP state from batch to batch. Its slow, obvious twin is the struct-based
builder in ``tests/engine/test_generate.py``; ``pack_templates`` is checked there against
plain slicing.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from engine.packet.byte_kernels import fold, put_u32, put_word, sum_words


@nb.njit(cache=True, nogil=True, inline="always")
def _copy(dst, dpos, src, spos, n):
    # Unsigned indices spare the negative-index check, so this compiles to vectorized moves;
    # numba's slice assignment (which checks for overlap) is several times slower here.
    d = np.uint64(dpos)
    s = np.uint64(spos)
    for k in range(np.uint64(n)):
        dst[d + k] = src[s + k]


@nb.njit(cache=True, nogil=True)
def build_frames(
    out,
    offsets,
    frame_len,
    rows,
    pay_len,
    pay_off,
    ts_ms,
    templates,
    hdr_len,
    l2_len,
    ipv6,
    tcp,
    tsopt,
    pool,
    pool_sums,
    seq,
    ipid,
    tsval_base,
    last_tsval,
):
    """Write frame ``p`` at ``out[offsets[p]:][:frame_len[p]]`` from header template ``rows[p]``.

    A template row is one direction of one flow (``row ^ 1`` is the other); its length fields,
    IPv4 ID, TCP sequence/ack/flags/timestamps and every checksum are zero and filled here. The
    payload is ``pool[pay_off[p]:][:pay_len[p]]`` (``pay_off`` even), whose word sum comes from
    ``pool_sums`` (prefix sums of the pool's 16-bit words) instead of a pass over the bytes.
    Bytes past the IP packet up to ``frame_len`` are Ethernet padding (zeros). ``seq``,
    ``ipid`` and ``last_tsval`` (per row) are updated in place.
    """
    for p in range(len(rows)):
        r = rows[p]
        peer = r ^ 1
        o = offsets[p]
        h = hdr_len[r]
        n = pay_len[p]
        po = pay_off[p]
        _copy(out, o, templates[r], 0, h)
        _copy(out, o + h, pool, po, n)
        end = o + h + n
        for k in range(np.uint64(end), np.uint64(o + frame_len[p])):
            out[k] = 0
        l3 = o + l2_len[r]
        if ipv6[r]:
            l4 = l3 + 40
            l4len = end - l4
            put_word(out, l3 + 4, l4len)
            s = sum_words(out, l3 + 8, 32)
        else:
            l4 = l3 + 20
            l4len = end - l4
            put_word(out, l3 + 2, end - l3)
            put_word(out, l3 + 4, ipid[r] & 0xFFFF)
            ipid[r] += 1
            put_word(out, l3 + 10, ~fold(sum_words(out, l3, 20)) & 0xFFFF)
            s = sum_words(out, l3 + 12, 8)
        s += (pool_sums[(po >> 1) + (n >> 1)] - pool_sums[po >> 1]) + l4len
        if n & 1:
            s += np.int64(pool[po + n - 1]) << 8
        if tcp[r]:
            put_u32(out, l4 + 4, seq[r])
            put_u32(out, l4 + 8, seq[peer])
            seq[r] = (seq[r] + n) & 0xFFFFFFFF
            out[l4 + 13] = 0x18 if n else 0x10  # PSH|ACK with data, else a bare ACK
            if tsopt[r]:
                tv = (ts_ms[p] + tsval_base[r]) & 0xFFFFFFFF
                put_u32(out, l4 + 24, tv)
                put_u32(out, l4 + 28, last_tsval[peer])
                last_tsval[r] = tv
            s += 6 + sum_words(out, l4, o + h - l4)
            put_word(out, l4 + 16, ~fold(s) & 0xFFFF)
        else:
            put_word(out, l4 + 4, l4len)
            s += 17 + sum_words(out, l4, 8)
            c = ~fold(s) & 0xFFFF
            put_word(out, l4 + 6, c if c else 0xFFFF)  # 0 means "no checksum" in UDP


@nb.njit(cache=True, nogil=True)
def pack_templates(out, l2, l2_len, l3, l3_len, l4, l4_len):
    """Row ``r`` of ``out``: ``l2[r, :l2_len[r]]``, then the same of ``l3``, then of ``l4``.

    All five 2-D arrays are C-contiguous; they are walked flat, without a view per row.
    """
    flat = out.reshape(-1)
    f2, f3, f4 = l2.reshape(-1), l3.reshape(-1), l4.reshape(-1)
    w, w2, w3, w4 = out.shape[1], l2.shape[1], l3.shape[1], l4.shape[1]
    for r in range(out.shape[0]):
        at = r * w
        _copy(flat, at, f2, r * w2, l2_len[r])
        at += l2_len[r]
        _copy(flat, at, f3, r * w3, l3_len[r])
        _copy(flat, at + l3_len[r], f4, r * w4, l4_len[r])
