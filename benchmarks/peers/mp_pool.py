"""The peer for `pktx bench deliver`: the same job done the way a Python user would without us.

dpkt reads the capture, a ``multiprocessing.Pool`` of workers applies the service to 256-packet
segments (``imap`` keeps their order), dpkt writes the result.
"""

from __future__ import annotations

from multiprocessing import Pool

import dpkt


def _identity(segment: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    return segment


def _segments(reader, size: int):
    seg = []
    for ts, buf in reader:
        seg.append((ts, buf))
        if len(seg) == size:
            yield seg
            seg = []
    if seg:
        yield seg


def run(src: str, dst: str, *, processes: int = 2, segment: int = 256) -> int:
    """Copy ``src`` to ``dst`` through the pool; returns the packets written."""
    n = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout, Pool(processes) as pool:
        reader = dpkt.pcap.Reader(fin)
        writer = dpkt.pcap.Writer(
            fout, snaplen=reader.snaplen, linktype=reader.datalink(), nano=reader._divisor == 1e9
        )
        for out in pool.imap(_identity, _segments(reader, segment)):
            for ts, buf in out:
                writer.writepkt(buf, ts)
                n += 1
    return n
