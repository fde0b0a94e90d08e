"""Hand-built pcap/pcapng bytes and independent readers (scapy, dpkt) for the capture tests.

Builders take the byte order as a struct prefix ("<" or ">", or ``swap=True``) so a test can
write either, and can lie in length fields; every function here is deliberately naive: it is
the yardstick the engine is measured against. The one place tests build capture bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal

import pytest

# The corpus lives in shared/ beside the project root (CI clones the project with shared/ next
# to it); nobody on this project wrote those files.
from locations import CORPUS, need_corpus  # noqa: F401 (re-exported to its tests)

from engine.capture import backend

MAX_SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN: what the record walkers' tests declare
BACKENDS = backend.variants("capture")
BACKEND_IDS = ["pure" if m.__name__.endswith("_py") else "compiled" for m in BACKENDS]


def backend_params():
    """``pytest.mark.parametrize`` arguments running a test once per capture backend."""
    return pytest.mark.parametrize("walker", BACKENDS, ids=BACKEND_IDS)


# Files libpcap refuses (its testprogs/TESTrun), and the words of the error we must give.
REJECTED = {
    "libpcap/linktype-reserved-field-not-zero.pcap": (
        r"linktype reserved field not zero \(0x00300000\)"
    ),
    "libpcap/pcap-invalid-version-1.pcap": r"unsupported pcap savefile version 1\.4",
    "libpcap/pcap-invalid-version-2.pcap": r"unsupported pcap savefile version 2\.5",
    "libpcap/pcapng-invalid-vers-1.pcapng": r"unsupported pcapng savefile version 0\.1",
    "libpcap/pcapng-invalid-vers-2.pcapng": r"unsupported pcapng savefile version 1\.1",
    # libpcap names the second block; the first one's trailer is just as wrong, and we stop
    # there: either way the header and trailer lengths disagree.
    "libpcap/shb-option-too-long.pcapng": r"block total length in header \d+ and trailer "
    r"808464432 don't match",
}
CUT = "dpkt/truncated_dns_2.pcap"  # ends 7 bytes into a record header


def corpus_files() -> list[str]:
    """Every capture of the corpus, as paths relative to it (none when it is absent)."""
    if not CORPUS.is_dir():
        return []
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.pcap*"))


def readable_corpus_files() -> list[str]:
    """The corpus files libpcap reads whole."""
    return [f for f in corpus_files() if f not in REJECTED and f != CUT]


def corpus_params(keep=None) -> list:
    """pytest params of the corpus captures the reader accepts (``errors="truncate"``) and
    ``keep(batch)`` approves; one skipped param when the corpus is absent."""
    import warnings

    from engine import read_capture
    from engine.errors import CaptureError

    if not CORPUS.is_dir():
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(
                    reason=f"capture corpus not found at {CORPUS} (the shared folder beside the "
                    "project)"
                ),
            )
        ]
    found = []
    for path in sorted(CORPUS.glob("*/*.pcap*")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = read_capture(path, errors="truncate")
        except CaptureError:
            continue
        if keep is None or keep(batch):
            found.append(pytest.param(path, id=path.name))
    return found


# -- what a batch holds, as plain values --------------------------------------------------------
def packets_of(batch) -> list[tuple[bytes, int, int, int, int]]:
    """(bytes, caplen, origlen, ts_ns, linktype) for every packet of ``batch``."""
    lts = batch.linktypes
    return [
        (
            batch.packet(i).tobytes(),
            int(batch.caplen[i]),
            int(batch.origlen[i]),
            int(batch.ts_ns[i]),
            int(lts[i]),
        )
        for i in range(len(batch))
    ]


# -- pcap ---------------------------------------------------------------------------------------
# Every builder takes the byte order as ``e`` ("<" or ">") or as ``swap=True`` (big-endian);
# those the record walkers' tests use also let a test lie in a length field (``incl``,
# ``orig``, ``blen``, ``trailer``) about the bytes that follow.
def _order(e: str, swap: bool) -> str:
    return ">" if swap else e


def pcap_header(
    e: str = "<",
    *,
    nano: bool = False,
    version=(2, 4),
    snaplen: int = 65535,
    linktype: int = 1,
    swap: bool = False,
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack(
        _order(e, swap) + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype
    )


def pcap_record(
    data: bytes,
    sec: int = 0,
    frac: int = 0,
    e: str = "<",
    origlen: int | None = None,
    caplen: int | None = None,
    *,
    orig: int | None = None,
    incl: int | None = None,
    swap: bool = False,
) -> bytes:
    caplen = incl if incl is not None else len(data) if caplen is None else caplen
    origlen = orig if orig is not None else len(data) if origlen is None else origlen
    return struct.pack(_order(e, swap) + "IIII", sec, frac, caplen, origlen) + data


def pcap_file(records, e: str = "<", **header) -> bytes:
    """``records``: (data, sec, frac[, origlen]) tuples; frac in us or ns per ``nano``."""
    out = [pcap_header(e, **header)]
    for r in records:
        out.append(pcap_record(r[0], r[1], r[2], e, *r[3:]))
    return b"".join(out)


@dataclass
class Expected:
    """What a record walker must find in built bytes, appended packet by packet."""

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


def pcap_walk(
    packets, *, swap: bool = False, nano: bool = False, snaplen: int = MAX_SNAPLEN
) -> tuple[bytes, Expected]:
    """A pcap file of ``packets`` given as ``(data, sec, frac, orig)``, and what a walk over
    it must find."""
    out = bytearray(pcap_header(nano=nano, swap=swap, snaplen=snaplen))
    exp = Expected.new()
    for data, sec, frac, orig in packets:
        exp.add(len(out) + 16, len(data), orig, sec * 1_000_000_000 + frac * (1 if nano else 1000))
        out += pcap_record(data, sec, frac, orig=orig, swap=swap)
    return bytes(out), exp


# -- pcapng -------------------------------------------------------------------------------------
def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def option(code: int, value: bytes, e: str = "<", *, swap: bool = False) -> bytes:
    return struct.pack(_order(e, swap) + "HH", code, len(value)) + pad4(value)


def end_of_options(e: str = "<") -> bytes:
    return struct.pack(e + "HH", 0, 0)


def block(
    btype: int,
    body: bytes,
    e: str = "<",
    *,
    swap: bool = False,
    blen: int | None = None,
    trailer: int | None = None,
) -> bytes:
    """A block with ``body`` padded to 4 bytes; ``blen``/``trailer`` override the lengths."""
    e = _order(e, swap)
    body = pad4(body)
    blen = 12 + len(body) if blen is None else blen
    trailer = blen if trailer is None else trailer
    return struct.pack(e + "II", btype, blen) + body + struct.pack(e + "I", trailer)


def shb(e: str = "<", version=(1, 0), options: bytes = b"", *, swap: bool = False) -> bytes:
    e = _order(e, swap)
    return block(
        0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, version[0], version[1], -1) + options, e
    )


def idb(
    linktype: int = 1,
    snaplen: int = 0,
    e: str = "<",
    *,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    name: str | None = None,
    swap: bool = False,
) -> bytes:
    e = _order(e, swap)
    opts = b""
    if name is not None:
        opts += option(2, name.encode(), e)
    if tsresol is not None:
        opts += option(9, bytes([tsresol]), e)
    if tsoffset is not None:
        opts += option(14, struct.pack(e + "q", tsoffset), e)
    if opts:
        opts += end_of_options(e)
    return block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, e)


def epb(
    data: bytes,
    ticks: int = 0,
    ifid: int = 0,
    e: str = "<",
    origlen: int | None = None,
    options: bytes = b"",
    *,
    orig: int | None = None,
    incl: int | None = None,
    swap: bool = False,
    blen: int | None = None,
    trailer: int | None = None,
) -> bytes:
    e = _order(e, swap)
    origlen = orig if orig is not None else len(data) if origlen is None else origlen
    return block(
        6,
        struct.pack(
            e + "IIIII",
            ifid,
            ticks >> 32,
            ticks & 0xFFFFFFFF,
            len(data) if incl is None else incl,
            origlen,
        )
        + pad4(data)
        + options,
        e,
        blen=blen,
        trailer=trailer,
    )


def spb(
    data: bytes,
    e: str = "<",
    origlen: int | None = None,
    *,
    orig: int | None = None,
    swap: bool = False,
    blen: int | None = None,
    trailer: int | None = None,
) -> bytes:
    e = _order(e, swap)
    origlen = orig if orig is not None else len(data) if origlen is None else origlen
    return block(3, struct.pack(e + "I", origlen) + data, e, blen=blen, trailer=trailer)


def obsolete_pb(
    data: bytes,
    ticks: int = 0,
    ifid: int = 0,
    e: str = "<",
    origlen: int | None = None,
    *,
    drops: int = 0,
    orig: int | None = None,
    incl: int | None = None,
    swap: bool = False,
    blen: int | None = None,
    trailer: int | None = None,
) -> bytes:
    """The obsolete Packet Block: a 16-bit interface id and a 16-bit drop count."""
    e = _order(e, swap)
    origlen = orig if orig is not None else len(data) if origlen is None else origlen
    return block(
        2,
        struct.pack(
            e + "HHIIII",
            ifid,
            drops,
            ticks >> 32,
            ticks & 0xFFFFFFFF,
            len(data) if incl is None else incl,
            origlen,
        )
        + data,
        e,
        blen=blen,
        trailer=trailer,
    )


# -- oracles ------------------------------------------------------------------------------------
def scapy_packets(path) -> list[tuple[bytes, int, int, int, int]]:
    """What scapy's raw readers see: (bytes, caplen, origlen, ts_ns, linktype) per packet.

    scapy ignores ``if_tsoffset``; callers add it. Simple Packet Blocks have no timestamp (0).
    """
    from scapy.utils import RawPcapNgReader, RawPcapReader

    out = []
    # RawPcapReader hands pcapng files to RawPcapNgReader by their magic number.
    with RawPcapReader(str(path)) as r:
        ng = isinstance(r, RawPcapNgReader)
        while True:
            try:
                # _read_packet is what scapy documents for raw access; its default size (MTU)
                # would cut packets above 64 KiB.
                res = r._read_packet(size=1 << 30)
            except EOFError:
                break
            if res is None:
                break
            data, meta = res
            if ng:
                ticks = 0 if meta.tshigh is None else (meta.tshigh << 32) | meta.tslow
                ts = ticks * 10**9 // meta.tsresol
                out.append((data, len(data), meta.wirelen, ts, meta.linktype))
            else:
                scale = 1 if r.nano else 1000
                out.append(
                    (
                        data,
                        meta.caplen,
                        meta.wirelen,
                        meta.sec * 10**9 + meta.usec * scale,
                        r.linktype & 0xFFFF,
                    )
                )
    return out


def dpkt_packets(path) -> list[tuple[bytes, object]]:
    """What dpkt's readers see: (bytes, timestamp in seconds, float or Decimal) per packet."""
    import dpkt

    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(f)
        return [(bytes(buf), ts) for ts, buf in reader]


def same_time(ts_ns: int, ts) -> bool:
    """Whether dpkt's timestamp (exact Decimal for ns pcap, else a float) matches ``ts_ns``."""
    if isinstance(ts, Decimal):
        return int(ts * 10**9) == ts_ns
    # A float holds about 16 digits: at 10**9 seconds that is a quarter of a microsecond.
    return abs(ts - ts_ns / 1e9) <= 1e-6
