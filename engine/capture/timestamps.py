"""Timestamp units of capture files turned into int64 nanoseconds, exactly, without floats."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NS = 1_000_000_000


@dataclass(frozen=True)
class TsResolution:
    """A pcapng ``if_tsresol``: ticks of 10**-exp (``base`` 10) or 2**-exp (``base`` 2) seconds."""

    base: int = 10
    exp: int = 6

    @classmethod
    def from_option(cls, value: int) -> TsResolution:
        return cls(2, value & 0x7F) if value & 0x80 else cls(10, value)

    def to_option(self) -> int:
        return (0x80 | self.exp) if self.base == 2 else self.exp

    def supported(self) -> bool:
        # Beyond these the tick count can no longer say anything a 64-bit nanosecond can hold.
        return self.exp <= 18 if self.base == 10 else self.exp <= 63

    def __str__(self) -> str:
        if self.base == 10:
            return {0: "s", 3: "ms", 6: "us", 9: "ns"}.get(self.exp, f"10^-{self.exp} s")
        return f"2^-{self.exp} s"


def ticks_to_ns(ticks: np.ndarray, res: TsResolution, offset_s: int = 0) -> np.ndarray:
    """Nanoseconds since the epoch for raw pcapng timestamps (uint64 ticks)."""
    t = ticks.astype(np.uint64, copy=False)
    if res.base == 10:
        if res.exp <= 9:
            ns = t * np.uint64(10 ** (9 - res.exp))
        else:
            ns = t // np.uint64(10 ** (res.exp - 9))
    else:
        e = res.exp
        sec = t >> np.uint64(e)
        frac = t & np.uint64((1 << e) - 1)
        if e <= 32:  # frac < 2**32 and 1e9 < 2**30: the product fits in 64 bits
            sub = (frac * np.uint64(_NS)) >> np.uint64(e)
        else:
            # frac * 1e9 needs up to 93 bits: take it in two 32-bit halves. Flooring the low
            # half's share first leaves the final floor unchanged, so this is exact (dropping
            # the fraction's low bits instead would come out 1 ns short about one time in ten).
            hi = (frac >> np.uint64(32)) * np.uint64(_NS)
            lo = ((frac & np.uint64(0xFFFFFFFF)) * np.uint64(_NS)) >> np.uint64(32)
            sub = (hi + lo) >> np.uint64(e - 32)
        ns = sec * np.uint64(_NS) + sub
    out = ns.view(np.int64)
    if offset_s:
        out = out + np.int64(offset_s * _NS)
    return out


def ns_to_ticks(ts_ns: np.ndarray, res: TsResolution) -> np.ndarray:
    """The inverse for writing (base-10 resolutions up to ns only), rounding down."""
    if res.base != 10 or res.exp > 9:
        raise ValueError(f"cannot write timestamps at resolution {res}")
    div = 10 ** (9 - res.exp)
    t = ts_ns // div if div != 1 else ts_ns
    return t.astype(np.int64, copy=False).view(np.uint64)
