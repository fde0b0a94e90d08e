"""Warming a chain's compiled code in the dispatcher before local workers are forked from it.

A worker's first segment through a payload service initialises numba's typing context and
loads the service's kernels from numba's cache: about half a second of CPU per worker process
on the machine of the README's tables, spent again by every worker. Run once in the dispatcher
before the fork, every forked worker starts with it done.
"""

from __future__ import annotations

import logging
import struct

from engine.capture.batch import PacketBatch

log = logging.getLogger(__name__)

_ETH_V4 = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00"
_ETH_V6 = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x86\xdd"


def _transport(proto: int, payload: bytes) -> bytes:
    if proto == 6:  # TCP: ports, seq, ack, offset 5, ACK|PSH, window, checksum, urgent
        return struct.pack("!HHIIBBHHH", 40000, 80, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    return struct.pack("!HHHH", 40000, 53, 8 + len(payload), 0) + payload


def _packet(v6: bool, proto: int, payload: bytes) -> bytes:
    l4 = _transport(proto, payload)
    if v6:
        ip = (
            struct.pack("!IHBB", 6 << 28, len(l4), proto, 64)
            + bytes(15)
            + b"\1"
            + bytes(15)
            + b"\2"
        )
        return _ETH_V6 + ip + l4
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, b"\x0a\0\0\1", b"\x0a\0\0\2"
    )
    return _ETH_V4 + ip + l4


def sample_batch() -> PacketBatch:
    """A few TCP and UDP packets over IPv4 and IPv6, as a worker receives a segment (arrays
    that are read-only views of message frames: numba compiles for that kind of array)."""
    payload = bytes(range(48))
    packets = [_packet(v6, proto, payload) for v6 in (False, True) for proto in (6, 17)]
    batch = PacketBatch.from_packets(packets, [i * 1000 for i in range(len(packets))])
    return PacketBatch.from_frames([bytes(f) for f in batch.to_frames()])


def warm_chain(chain: list[dict]) -> None:
    """Run the engine's own services of ``chain`` once over :func:`sample_batch` (a fresh
    instance each, thrown away). Other packages' services are left alone: running them on
    made-up packets might have effects. Nothing here can fail the run: a service that fails
    on these packets fails, if it must, on the real ones in the workers."""
    from engine.services import build_chain, service_class

    batch = None
    for spec in chain:
        try:
            if not service_class(spec["name"]).__module__.startswith("engine.services."):
                continue
            batch = batch or sample_batch()
            build_chain([spec])[0].process(batch)
        except Exception as exc:  # any: see the docstring
            log.debug("warming %s: %s", spec.get("name"), exc)
