"""Type stub for the compiled AES-256-GCM segment cipher (ext/_aesgcm.pyx)."""

from typing import TypeAlias

import numpy as np

# Cython's typed memoryviews take any buffer; numpy's stubs declare ndarray a buffer only from
# Python 3.12 on, so the arrays are named here.
Buffer: TypeAlias = np.ndarray | memoryview | bytes | bytearray

class Gcm:
    def __init__(self, key: Buffer) -> None: ...
    def seal(
        self,
        nonces: Buffer,
        aad: Buffer,
        rows: Buffer,
        plain: Buffer,
        p0: Buffer,
        p1: Buffer,
        out: Buffer,
        at: Buffer,
    ) -> None: ...
    def open(
        self,
        nonces: Buffer,
        aad: Buffer,
        data: Buffer,
        c0: Buffer,
        c1: Buffer,
        plain: Buffer,
        q0: Buffer,
        ok: Buffer,
    ) -> int: ...
