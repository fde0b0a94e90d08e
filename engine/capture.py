"""The capture API in one place: read, stream and write pcap/pcapng as PacketBatches."""

from engine.reader import CaptureReader, CaptureTruncatedWarning, open_capture, read_capture
from engine.writer import CaptureWriter, write_capture

__all__ = ["CaptureReader", "CaptureTruncatedWarning", "CaptureWriter", "open_capture",
           "read_capture", "write_capture"]
