"""numba kernels of signature matching: payload bounds and the Aho-Corasick scan.

Private functions over numpy arrays and ints, as in ``engine.packet.kernels``;
``engine.packet.ahocorasick`` and ``engine.services.inspect`` check the arguments and own the
documentation. The slow twin the tests compare with is ``bytes.find`` of every pattern in every
payload. They run unchanged under ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.packet.byte_kernels import word

_UDP = 17


@njit(cache=True, nogil=True)
def _payload_bounds(
    data, offsets, caplen, family, proto, l3_off, l4_off, payload_off, starts, ends
):
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
            stop = l3 + word(data, base + l3 + 2)
            if po <= stop < end:
                end = stop
        elif family[i] == 6:
            stop = l3 + 40 + word(data, base + l3 + 4)
            if po <= stop < end:
                end = stop
        l4 = np.int64(l4_off[i])
        if proto[i] == _UDP and l4 >= 0:
            stop = l4 + word(data, base + l4 + 4)
            if po <= stop < end:
                end = stop
        starts[i] = base + po
        ends[i] = base + end


@njit(cache=True, inline="always")
def _run(
    data,
    lo,
    hi,
    state,
    i,
    flat,
    byte_class,
    width,
    limit,
    report,
    dict_link,
    own_ptr,
    own_ids,
    counts,
    last_seen,
):
    """The DFA over ``data[lo:hi]`` from ``state``: (the state after, whether a pattern ended).
    Adds 1 to ``counts[p]`` the first time region i ends pattern p (``last_seen``)."""
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
    return state, hit


@njit(cache=True, nogil=True)
def _ac_scan(
    data,
    starts,
    ends,
    flat,
    byte_class,
    width,
    limit,
    report,
    dict_link,
    own_ptr,
    own_ids,
    matched,
    counts,
    last_seen,
):
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
        _state, hit = _run(
            data,
            lo,
            hi,
            np.uint32(0),
            i,
            flat,
            byte_class,
            width,
            limit,
            report,
            dict_link,
            own_ptr,
            own_ids,
            counts,
            last_seen,
        )
        matched[i] = hit
    return scanned


@njit(cache=True, inline="always")
def _flow_id(family, proto, src, dst, sport, dport, i):
    """A 64-bit FNV-1a hash of packet i's directional 5-tuple (never 0: 0 marks a free slot)."""
    h = np.uint64(0xCBF29CE484222325)
    prime = np.uint64(0x100000001B3)
    n = 4 if family[i] == 4 else 16
    for k in range(n):
        h = (h ^ np.uint64(src[i, k])) * prime
    for k in range(n):
        h = (h ^ np.uint64(dst[i, k])) * prime
    for v in (np.uint64(sport[i]), np.uint64(dport[i]), np.uint64(proto[i]), np.uint64(family[i])):
        h = (h ^ v) * prime
    return h | np.uint64(1)


@njit(cache=True, inline="always")
def _slot_of(keys, h):
    """Where flow ``h`` is in the table ``keys``, or the free slot it would take (linear
    probing from ``h`` modulo the table's size, a power of two)."""
    mask = keys.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    while keys[slot] != 0 and keys[slot] != h:
        slot = (slot + 1) & mask
    return slot


@njit(cache=True, nogil=True)
def _ac_scan_tcp_streams(
    data,
    offsets,
    caplen,
    starts,
    ends,
    family,
    proto,
    src,
    dst,
    sport,
    dport,
    l4_off,
    flat,
    byte_class,
    width,
    limit,
    report,
    dict_link,
    own_ptr,
    own_ids,
    matched,
    counts,
    last_seen,
    keys,
    next_seq,
    states,
):
    """`_ac_scan`, except that a TCP payload continuing its flow's byte stream starts from the
    state the flow's previous payload ended in, so a pattern split across segments is found
    (in the segment that completes it).

    The flows are an open-addressing table (linear probing; ``keys`` 0: free; its size a power
    of two the caller keeps at most half full): ``next_seq`` the sequence number the flow's next
    payload must start at to continue, ``states`` the state to continue from. A payload at any
    other sequence number (a gap, a retransmission, reordering) starts from the start state:
    a pattern is then missed across that boundary, never made up. A SYN's payload starts a
    stream. Returns (bytes scanned, flows added to the table).
    """
    scanned = 0
    added = 0
    for i in range(starts.shape[0]):
        lo = starts[i]
        hi = ends[i]
        if lo < 0:
            continue
        scanned += hi - lo
        l4 = np.int64(l4_off[i])
        base = offsets[i]
        tcp = proto[i] == 6 and l4 >= 0 and l4 + 14 <= np.int64(caplen[i])
        state = np.uint32(0)
        slot = -1
        seq = np.uint32(0)
        syn = np.uint32(0)
        if tcp:
            at = base + l4
            seq = (
                (np.uint32(data[at + 4]) << 24)
                | (np.uint32(data[at + 5]) << 16)
                | (np.uint32(data[at + 6]) << 8)
                | np.uint32(data[at + 7])
            )
            syn = np.uint32(1) if data[at + 13] & 2 else np.uint32(0)
            h = _flow_id(family, proto, src, dst, sport, dport, i)
            slot = _slot_of(keys, h)
            if keys[slot] == 0:
                keys[slot] = h
                added += 1
            elif syn == 0 and next_seq[slot] == seq:
                state = states[slot]
        state, hit = _run(
            data,
            lo,
            hi,
            state,
            i,
            flat,
            byte_class,
            width,
            limit,
            report,
            dict_link,
            own_ptr,
            own_ids,
            counts,
            last_seen,
        )
        matched[i] = hit
        if slot >= 0:
            next_seq[slot] = seq + syn + np.uint32(hi - lo)
            states[slot] = state
    return scanned, added


@njit(cache=True, nogil=True)
def _rehash(keys, next_seq, states, new_keys, new_next, new_states):
    """Move every flow of one table into an empty, larger one (its size a power of two)."""
    for s in range(keys.shape[0]):
        h = keys[s]
        if h == 0:
            continue
        slot = _slot_of(new_keys, h)
        new_keys[slot] = h
        new_next[slot] = next_seq[s]
        new_states[slot] = states[s]
