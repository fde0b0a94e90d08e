"""numba helpers over packet bytes that every kernel module shares: big-endian 16- and 32-bit
words read and written in place, and the Internet checksum's one's-complement sum and fold.

Inlined where they are called (``inline="always"``), so sharing them costs nothing; the
kernel modules (`engine.packet.header_kernels`, `engine.packet.inspect_kernels`,
`engine.capture.generate_kernels`) import them instead of keeping copies of their own.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def word(data, at):
    """The big-endian 16-bit word at ``data[at:at+2]``, as int64."""
    return (np.int64(data[at]) << 8) | np.int64(data[at + 1])


@njit(cache=True, nogil=True, inline="always")
def put_word(data, at, value):
    """Write ``value``'s low 16 bits big-endian at ``data[at:at+2]``."""
    data[at] = (value >> 8) & 0xFF
    data[at + 1] = value & 0xFF


@njit(cache=True, nogil=True, inline="always")
def put_u32(data, at, value):
    """Write ``value``'s low 32 bits big-endian at ``data[at:at+4]``."""
    data[at] = (value >> 24) & 0xFF
    data[at + 1] = (value >> 16) & 0xFF
    data[at + 2] = (value >> 8) & 0xFF
    data[at + 3] = value & 0xFF


@njit(cache=True, nogil=True, inline="always")
def fold(s):
    """Fold a one's-complement sum's carries into its low 16 bits."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@njit(cache=True, nogil=True, inline="always")
def sum_words(data, at, length):
    """The sum (unfolded, int64) of the big-endian words of ``data[at:at+length]``, ``length``
    even."""
    s = np.int64(0)
    for k in range(at, at + length, 2):
        s += (np.int64(data[k]) << 8) | np.int64(data[k + 1])
    return s
