"""identity: passes every packet through unchanged (the transport's own cost, measured)."""

from engine.capture.batch import PacketBatch
from engine.services.base import Service


class Identity(Service):
    name = "identity"
    summary = "pass packets through unchanged"

    def process(self, batch: PacketBatch) -> PacketBatch:
        self.counters["packets"] += len(batch)
        return batch
