"""The packet-exchange delivery engine: capture I/O, batches, kernels, dispatch, services."""

from engine.batch import Interface, PacketBatch
from engine.capture import (
    CaptureReader,
    CaptureTruncatedWarning,
    CaptureWriter,
    open_capture,
    read_capture,
    write_capture,
)
from engine.errors import CaptureError, EngineError

__version__ = "0.1.0"

__all__ = ["CaptureError", "CaptureReader", "CaptureTruncatedWarning", "CaptureWriter",
           "EngineError", "Interface", "PacketBatch", "__version__", "open_capture",
           "read_capture", "write_capture"]
