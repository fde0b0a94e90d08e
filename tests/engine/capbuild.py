"""Build pcap and pcapng bytes field by field, for tests that feed the record walkers.

Every builder takes ``swap`` (write big-endian) and lets a test override a length field so it
can lie about the bytes that follow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine.capture import pcapformat as F


def _e(swap: bool) -> str:
    return ">" if swap else "<"


def _pad4(body: bytes) -> bytes:
    return body + b"\0" * (-len(body) % 4)


# -- pcap ------------------------------------------------------------------------------------
def pcap_header(*, swap: bool = False, nano: bool = False, snaplen: int = F.MAX_SNAPLEN,
                linktype: int = 1) -> bytes:
    magic = F.PCAP_MAGIC_NS if nano else F.PCAP_MAGIC_US
    return struct.pack(_e(swap) + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(data: bytes, *, sec: int = 0, frac: int = 0, orig: int | None = None,
                incl: int | None = None, swap: bool = False) -> bytes:
    incl = len(data) if incl is None else incl
    orig = len(data) if orig is None else orig
    return struct.pack(_e(swap) + "IIII", sec, frac, incl, orig) + data


# -- pcapng ----------------------------------------------------------------------------------
def block(btype: int, body: bytes, *, swap: bool = False, blen: int | None = None,
          trailer: int | None = None) -> bytes:
    """A block with ``body`` padded to 4 bytes; ``blen``/``trailer`` override the lengths."""
    body = _pad4(body)
    total = 12 + len(body)
    blen = total if blen is None else blen
    trailer = blen if trailer is None else trailer
    return struct.pack(_e(swap) + "II", btype, blen) + body + struct.pack(_e(swap) + "I",
                                                                          trailer)


def option(code: int, value: bytes, *, swap: bool = False) -> bytes:
    return struct.pack(_e(swap) + "HH", code, len(value)) + _pad4(value)


def shb(*, swap: bool = False, version: tuple[int, int] = (1, 0)) -> bytes:
    body = struct.pack(_e(swap) + "IHHq", F.BYTE_ORDER_MAGIC, *version, -1)
    return block(F.BT_SHB, body, swap=swap)


def idb(linktype: int = 1, snaplen: int = F.MAX_SNAPLEN, *, tsresol: int | None = None,
        swap: bool = False) -> bytes:
    body = struct.pack(_e(swap) + "HHI", linktype, 0, snaplen)
    if tsresol is not None:
        body += option(F.IF_TSRESOL, bytes([tsresol]), swap=swap)
        body += option(F.OPT_ENDOFOPT, b"", swap=swap)
    return block(F.BT_IDB, body, swap=swap)


def epb(data: bytes, *, ifid: int = 0, ticks: int = 0, orig: int | None = None,
        incl: int | None = None, swap: bool = False, **lengths) -> bytes:
    head = struct.pack(_e(swap) + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(data) if incl is None else incl, len(data) if orig is None else orig)
    return block(F.BT_EPB, head + data, swap=swap, **lengths)


def pb(data: bytes, *, ifid: int = 0, drops: int = 0, ticks: int = 0, orig: int | None = None,
       incl: int | None = None, swap: bool = False, **lengths) -> bytes:
    """The obsolete Packet Block: a 16-bit interface id and a 16-bit drop count."""
    head = struct.pack(_e(swap) + "HHIIII", ifid, drops, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(data) if incl is None else incl, len(data) if orig is None else orig)
    return block(F.BT_PB, head + data, swap=swap, **lengths)


def spb(data: bytes, *, orig: int | None = None, swap: bool = False, **lengths) -> bytes:
    head = struct.pack(_e(swap) + "I", len(data) if orig is None else orig)
    return block(F.BT_SPB, head + data, swap=swap, **lengths)


# -- what a walker should find ---------------------------------------------------------------
@dataclass
class Expected:
    """The arrays a walk over built bytes must fill, appended packet by packet."""

    offsets: list[int]
    caplen: list[int]
    origlen: list[int]
    stamps: list[int]  # ts_ns for pcap, raw ticks for pcapng
    iface: list[int]

    @classmethod
    def new(cls) -> Expected:
        return cls([], [], [], [], [])

    def add(self, offset: int, caplen: int, origlen: int, stamp: int, iface: int = 0) -> None:
        self.offsets.append(offset)
        self.caplen.append(caplen)
        self.origlen.append(origlen)
        self.stamps.append(stamp)
        self.iface.append(iface)


def pcap_file(packets, *, swap: bool = False, nano: bool = False) -> tuple[bytes, Expected]:
    """A pcap file of ``packets`` given as ``(data, sec, frac, orig)``, and its expected walk."""
    out = bytearray(pcap_header(swap=swap, nano=nano))
    exp = Expected.new()
    for data, sec, frac, orig in packets:
        exp.add(len(out) + 16, len(data), orig, sec * 1_000_000_000 + frac * (1 if nano else 1000))
        out += pcap_record(data, sec=sec, frac=frac, orig=orig, swap=swap)
    return bytes(out), exp
