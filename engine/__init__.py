"""The packet-exchange delivery engine: capture I/O, batches, kernels, dispatch, services.

Layers, each a folder: ``engine.capture`` (batches, pcap/pcapng reading and writing, formats,
timestamps, generated traffic, live capture), ``engine.packet`` (flow keys and hashes,
checksums, segmenting, the numba kernels), ``engine.delivery`` (dispatcher, workers, wire
protocol, sources, sinks, metering, CURVE), ``engine.services`` (what workers run) and
``engine.cli`` (the ``pktx`` command). The names below are the public API.
"""

from importlib import metadata as _metadata

from engine.capture import (
    CaptureReader,
    CaptureTruncatedWarning,
    CaptureWriter,
    open_capture,
    read_capture,
    write_capture,
)
from engine.capture.batch import Interface, PacketBatch
from engine.errors import CaptureError, EngineError

try:  # the installed package's version: pyproject.toml says it, nothing here repeats it
    __version__ = _metadata.version("packet-exchange")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["CaptureError", "CaptureReader", "CaptureTruncatedWarning", "CaptureWriter",
           "EngineError", "Interface", "PacketBatch", "__version__", "open_capture",
           "read_capture", "write_capture"]
