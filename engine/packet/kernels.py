"""numba kernels: private functions over numpy arrays and ints, nothing else.

The modules that call them (``engine.packet.segment``, ``engine.packet.flowhash``) check the
arguments and own the documentation. Every kernel here has a slow, obvious twin in
``tests/engine/naive.py``. They run unchanged as plain Python under ``NUMBA_DISABLE_JIT=1`` (for
coverage); callers wrap them in ``np.errstate(over="ignore")`` because the hash arithmetic wraps on
purpose.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# -- segmentation ------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _segment_starts(
    sizes, ts, max_packets, max_bytes, window_ns, open_count, open_bytes, open_ts, starts
):
    """Indices where a new segment starts; a limit of 0 is no limit.

    The segment open before ``sizes[0]`` holds ``open_count`` packets, ``open_bytes`` bytes and
    began at ``open_ts``. Returns ``(m, open_count, open_bytes, open_ts)``: ``starts[:m]`` are
    filled, the rest is the state of the segment left open.
    """
    m = 0
    for i in range(sizes.shape[0]):
        s = sizes[i]
        t = ts[i]
        cut = open_count == 0
        if not cut and max_packets > 0 and open_count >= max_packets:
            cut = True
        if not cut and max_bytes > 0 and open_bytes + s > max_bytes:
            cut = True
        if not cut and window_ns > 0 and t - open_ts >= window_ns:
            cut = True
        if cut:
            starts[m] = i
            m += 1
            open_count = 1
            open_bytes = s
            open_ts = t
        else:
            open_count += 1
            open_bytes += s
    return m, open_count, open_bytes, open_ts


# -- symmetric flow hash -----------------------------------------------------------------------

_M1 = np.uint64(0xFF51AFD7ED558CCD)  # murmur3's fmix64 multipliers
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
_S8 = np.uint64(8)


@njit(cache=True, inline="always")
def _fmix64(x):
    x ^= x >> _S33
    x *= _M1
    x ^= x >> _S33
    x *= _M2
    x ^= x >> _S33
    return x


@njit(cache=True, inline="always")
def _endpoint(a0, a1, port, seed):
    h = _fmix64(a0 ^ seed)
    h = _fmix64(h ^ a1)
    return _fmix64(h ^ (port * _GOLDEN))


@njit(cache=True, inline="always")
def _has_ports(proto, fragment):
    # TCP, UDP, DCCP, SCTP, UDP-Lite; ICMP's type and code would split echo from reply, and a
    # datagram's fragments must stay together although only the first has ports.
    return fragment == 0 and (
        proto == 6 or proto == 17 or proto == 33 or proto == 132 or proto == 136
    )


@njit(cache=True, nogil=True)
def _flow_hash(family, proto, src64, dst64, sport, dport, fragment, seed, out):
    """out[i] = a 64-bit hash of packet i's flow, the same for both directions.

    Each endpoint (two address words, port) is hashed alone and the two hashes are added, an
    operation blind to their order; the sum is mixed with family and protocol.
    """
    seed = np.uint64(seed)
    salt = seed * _GOLDEN
    for i in range(family.shape[0]):
        if _has_ports(proto[i], fragment[i]):
            ps = np.uint64(sport[i])
            pd = np.uint64(dport[i])
        else:
            ps = np.uint64(0)
            pd = np.uint64(0)
        e = _endpoint(src64[i, 0], src64[i, 1], ps, seed) + _endpoint(
            dst64[i, 0], dst64[i, 1], pd, seed
        )
        kind = (np.uint64(family[i]) << _S8) | np.uint64(proto[i])
        out[i] = _fmix64(e ^ _fmix64(kind ^ salt))
    return out


@njit(cache=True, nogil=True)
def _assign_workers(hashes, n_workers, out):
    """out[i] = the worker of hashes[i] among n_workers, from the hash's top 32 bits."""
    n = np.uint64(n_workers)
    for i in range(hashes.shape[0]):
        out[i] = ((hashes[i] >> _S32) * n) >> _S32
    return out


@njit(cache=True, nogil=True)
def _stable_partition(parts, n_parts, order, bounds):
    """A stable counting sort of positions by ``parts``: part p's positions, in their original
    order, are ``order[bounds[p]:bounds[p + 1]]``."""
    for p in range(n_parts + 1):
        bounds[p] = 0
    for i in range(parts.shape[0]):
        bounds[parts[i] + 1] += 1
    for p in range(n_parts):
        bounds[p + 1] += bounds[p]
    fill = bounds[:n_parts].copy()
    for i in range(parts.shape[0]):
        p = parts[i]
        order[fill[p]] = i
        fill[p] += 1
    return order
