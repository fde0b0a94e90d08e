"""What ``pktx info`` tells about a capture: the facts capinfos gives, computed in one pass."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from engine.capture.batch import linktype_name
from engine.capture.reader import CaptureReader


@dataclass
class CaptureInfo:
    path: str
    file_bytes: int
    format: str
    version: str
    byte_order: str
    ts_resolution: list[str]
    sections: int
    interfaces: list[dict]
    linktypes: dict[str, int]
    packets: int = 0
    captured_bytes: int = 0
    original_bytes: int = 0
    truncated_records: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    damage: str | None = None
    dropped_bytes: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return 0
        return self.last_ts_ns - self.first_ts_ns

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["duration_ns"] = self.duration_ns
        d["first_ts"] = _iso(self.first_ts_ns)
        d["last_ts"] = _iso(self.last_ts_ns)
        return d


def _iso(ns: int | None) -> str | None:
    """An ISO 8601 UTC time with all nine nanosecond digits (datetime alone stops at us)."""
    if ns is None:
        return None
    sec, frac = divmod(ns, 1_000_000_000)
    try:
        base = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None
    return f"{base}.{frac:09d}Z"


def capture_info(path, *, errors: str = "strict", batch_packets: int = 1 << 16) -> CaptureInfo:
    """Walk ``path`` once and summarise it (memory bounded, the file is memory-mapped)."""
    reader = CaptureReader(path, errors=errors, batch_packets=batch_packets)
    counts: dict[int, int] = {}
    packets = captured = original = truncated = 0
    first = last = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damage is reported in the result instead
        for batch in reader:
            n = len(batch)
            packets += n
            captured += int(batch.caplen.sum(dtype=np.int64))
            original += int(batch.origlen.sum(dtype=np.int64))
            truncated += int(np.count_nonzero(batch.caplen < batch.origlen))
            if first is None:
                first = int(batch.ts_ns[0])
            last = int(batch.ts_ns[-1])
            lt, c = np.unique(batch.linktypes, return_counts=True)
            for k, v in zip(lt.tolist(), c.tolist()):
                counts[k] = counts.get(k, 0) + v
    if reader.format == "pcap":
        version = "{}.{}".format(*reader.version)
    else:
        version = ", ".join(sorted({"{}.{}".format(*s.version) for s in reader.sections}))
    return CaptureInfo(
        path=os.fspath(path),
        file_bytes=reader.size,
        format=reader.format,
        version=version,
        byte_order=reader.byte_order,
        ts_resolution=reader.ts_resolutions,
        sections=max(1, len(reader.sections)),
        interfaces=[
            {
                "linktype": i.linktype,
                "linktype_name": linktype_name(i.linktype),
                "snaplen": i.snaplen,
                "name": i.name,
            }
            for i in reader.interfaces
        ],
        linktypes={linktype_name(k): v for k, v in sorted(counts.items())},
        packets=packets,
        captured_bytes=captured,
        original_bytes=original,
        truncated_records=truncated,
        first_ts_ns=first,
        last_ts_ns=last,
        damage=str(reader.damage) if reader.damage else None,
        dropped_bytes=reader.dropped_bytes,
    )
