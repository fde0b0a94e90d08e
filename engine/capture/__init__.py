"""The capture API in one place: read, stream and write pcap/pcapng as PacketBatches."""

from engine.capture.reader import CaptureReader, CaptureTruncatedWarning, open_capture, read_capture
from engine.capture.writer import CaptureWriter, write_capture

__all__ = [
    "CaptureReader",
    "CaptureTruncatedWarning",
    "CaptureWriter",
    "open_capture",
    "read_capture",
    "write_capture",
]
