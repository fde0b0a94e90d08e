"""Packet kernels: flow keys and hashes, checksums, segmenting, header and payload scans over
PacketBatches."""
