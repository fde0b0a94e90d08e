"""numba kernels of signature matching: payload bounds and the Aho-Corasick scan.

Private functions over numpy arrays and ints, as in ``engine.kernels``; ``engine.ahocorasick``
and ``engine.services.inspect`` check the arguments and own the documentation. The slow twin
the tests compare with is ``bytes.find`` of every pattern in every payload. They run unchanged
under ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_UDP = 17


@njit(cache=True, inline="always")
def _word(data, at):
    return (np.int64(data[at]) << 8) | np.int64(data[at + 1])


@njit(cache=True, nogil=True)
def _payload_bounds(data, offsets, caplen, family, proto, l3_off, l4_off, payload_off, starts,
                    ends):
    """starts[i], ends[i]: absolute buffer offsets of packet i's transport payload, or -1, -1
    when it has none (``payload_off`` -1).

    The payload ends at the captured end, or earlier where the IP total length (IPv4), the
    payload length (IPv6) or the UDP length says the datagram ends (so link-layer padding is
    not scanned). A length field of 0 or shorter than the headers before the payload (TCP
    segmentation offload writes 0; a jumbogram has 0) is ignored.
    """
    for i in range(offsets.shape[0]):
        po = np.int64(payload_off[i])
        if po < 0:
            starts[i] = -1
            ends[i] = -1
            continue
        base = offsets[i]
        end = np.int64(caplen[i])
        l3 = np.int64(l3_off[i])
        if family[i] == 4:
            stop = l3 + _word(data, base + l3 + 2)
            if po <= stop < end:
                end = stop
        elif family[i] == 6:
            stop = l3 + 40 + _word(data, base + l3 + 4)
            if po <= stop < end:
                end = stop
        l4 = np.int64(l4_off[i])
        if proto[i] == _UDP and l4 >= 0:
            stop = l4 + _word(data, base + l4 + 4)
            if po <= stop < end:
                end = stop
        starts[i] = base + po
        ends[i] = base + end


@njit(cache=True, nogil=True)
def _ac_scan(data, starts, ends, flat, byte_class, width, limit, report, dict_link, own_ptr,
             own_ids, matched, counts, last_seen):
    """Run the Aho-Corasick DFA over ``data[starts[i]:ends[i]]`` for every i (``starts[i]``
    -1: skipped).

    States are held premultiplied by ``width``: the state after byte b is
    ``flat[state + byte_class[b]]`` (both uint32). States from ``limit`` on end patterns:
    ``report[s]`` (s = state // width) is the first state on s's suffix chain that ends some,
    ``dict_link`` the next one (0: none), ``own_ids[own_ptr[s]:own_ptr[s + 1]]`` the patterns
    ending at s. Sets ``matched[i]``; adds 1 to ``counts[p]`` for every region holding pattern
    p (``last_seen``, one slot per pattern, initialised to -1, keeps it to once per region).
    Returns the number of bytes scanned.
    """
    scanned = 0
    for i in range(starts.shape[0]):
        lo = starts[i]
        hi = ends[i]
        if lo < 0:
            continue
        scanned += hi - lo
        state = np.uint32(0)
        hit = False
        for j in range(lo, hi):
            state = flat[state + byte_class[data[j]]]
            if state >= limit:
                hit = True
                t = report[state // width]
                while t > 0:
                    for k in range(own_ptr[t], own_ptr[t + 1]):
                        p = own_ids[k]
                        if last_seen[p] != i:
                            last_seen[p] = i
                            counts[p] += 1
                    t = dict_link[t]
        matched[i] = hit
    return scanned
