"""numba kernel that copies one retired TPACKET_V3 block's frames into a PacketBatch's arrays.

A private function over numpy arrays and ints, as in ``engine.packet.kernels``;
``engine.capture.packet_ring`` checks the arguments and owns the documentation. It runs unchanged
under ``NUMBA_DISABLE_JIT=1`` and is tested against ``tests/engine/naive.py``'s
``walk_tpacket_block``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# struct tpacket3_hdr (linux/if_packet.h), in 32-bit words from the frame's start
_NEXT_OFFSET = 0
_SEC = 1
_NSEC = 2
_SNAPLEN = 3
_LEN = 4
_MAC = 6  # tp_mac is the low half of word 6 (tp_net the high half) on a little-endian host
_HDR_BYTES = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))


@njit(cache=True, nogil=True)
def _walk_block(block, words, first, count, snaplen, data, offsets, caplen, origlen, ts_ns):
    """Copy ``count`` frames of ``block`` (bytes; ``words`` the same memory as native uint32),
    the first at byte ``first``, each next at ``tp_next_offset``, into ``data`` back to back,
    cut to ``snaplen``; fill the arrays. Returns the bytes written, or ``-1 - i`` when frame
    ``i`` does not lie inside the block (then the block is not to be trusted past it)."""
    size = block.shape[0]
    at = np.int64(first)
    pos = np.int64(0)
    for i in range(count):
        if at < 0 or at % 4 or at + _HDR_BYTES > size:
            return -1 - i
        w = at // 4
        n = np.int64(words[w + _SNAPLEN])
        if n > snaplen:
            n = snaplen
        start = at + np.int64(words[w + _MAC] & 0xFFFF)
        if start + n > size or pos + n > data.shape[0]:
            return -1 - i
        data[pos : pos + n] = block[start : start + n]
        offsets[i] = pos
        caplen[i] = n
        origlen[i] = words[w + _LEN]
        ts_ns[i] = np.int64(words[w + _SEC]) * 1_000_000_000 + np.int64(words[w + _NSEC])
        pos += n
        nxt = np.int64(words[w + _NEXT_OFFSET])
        if nxt == 0 and i + 1 < count:
            return -2 - i
        at += nxt
    return pos
