"""Services that exist only for the delivery tests (loaded through PKTX_EXTRA_SERVICES)."""

import os
import time

import numpy as np

from engine.capture.batch import PacketBatch
from engine.services.base import Param, Service


class Slow(Service):
    """Sleeps per segment, so a stream lasts long enough to kill a worker in it."""

    name = "slow"
    params = (
        Param("ms", float, 20.0, "milliseconds per segment"),
        Param("mark", str, "", "a file created when the first segment starts"),
    )

    def process(self, batch: PacketBatch) -> PacketBatch:
        if self.config["mark"]:
            open(self.config["mark"], "a").close()
        time.sleep(self.config["ms"] / 1000)
        return batch


class Stamp(Service):
    """Writes the worker's pid into the last 4 bytes of each Ethernet source MAC."""

    name = "stamp"

    def process(self, batch: PacketBatch) -> PacketBatch:
        data = batch.data.copy()
        pid = np.frombuffer(os.getpid().to_bytes(4, "big"), np.uint8)
        for off, n in zip(batch.offsets.tolist(), batch.caplen.tolist()):
            if n >= 12:
                data[off + 8 : off + 12] = pid
        return PacketBatch(
            data,
            batch.offsets,
            batch.caplen,
            batch.origlen,
            batch.ts_ns,
            batch.iface,
            batch.interfaces,
            batch.first_seq,
            batch.seq if batch.has_explicit_seq else None,
        )


class DropOdd(Service):
    """Drops every packet at an odd position of the segment it sees."""

    name = "dropodd"

    def process(self, batch: PacketBatch) -> PacketBatch:
        return batch.take(np.arange(0, len(batch), 2))


class Boom(Service):
    """Fails on every segment (a service exception)."""

    name = "boom"

    def process(self, batch: PacketBatch) -> PacketBatch:
        raise RuntimeError("boom: this service always fails")


class FlakyOnce(Service):
    """Fails the first segment a worker process sees, then works."""

    name = "flaky"
    _failed = False

    def process(self, batch: PacketBatch) -> PacketBatch:
        if not FlakyOnce._failed:
            FlakyOnce._failed = True
            raise RuntimeError("flaky: first segment fails")
        return batch


class Poison(Service):
    """Kills its worker process on a batch holding the packet stamped ``ts`` (ns)."""

    name = "poison"
    params = (Param("ts", int, -1, "timestamp (ns) of the packet that kills"),)

    def process(self, batch: PacketBatch) -> PacketBatch:
        if np.any(batch.ts_ns == self.config["ts"]):
            os.kill(os.getpid(), 9)
        return batch


class Counting(Service):
    """Reports whatever counters it is told to (JSON), to test what the dispatcher takes."""

    name = "counting"
    params = (Param("counters", str, "{}", "JSON object of counters to report per batch"),)

    def process(self, batch: PacketBatch) -> PacketBatch:
        import json

        self.counters.update(json.loads(self.config["counters"]))
        return batch

    def take_counters(self):
        out = dict(self.counters)
        self.counters.clear()
        return out


EXTRA = ",".join(
    f"{c.name}=svc_fixtures:{c.__name__}"
    for c in (Slow, Stamp, DropOdd, Boom, FlakyOnce, Poison, Counting)
)
