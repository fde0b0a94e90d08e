"""The packet-exchange delivery engine: capture I/O, batches, kernels, dispatch, services.

Layers, each a folder: ``engine.capture`` (batches, pcap/pcapng reading and writing, formats,
timestamps, generated traffic, live capture), ``engine.packet`` (flow keys and hashes,
checksums, segmenting, the numba kernels), ``engine.delivery`` (dispatcher, workers, wire
protocol, sources, sinks, metering, CURVE), ``engine.services`` (what workers run) and
``engine.cli`` (the ``pktx`` command). The names below are the public API.
"""

from engine.errors import CaptureError, EngineError

__all__ = [
    "CaptureError",
    "CaptureReader",
    "CaptureTruncatedWarning",
    "CaptureWriter",
    "EngineError",
    "Interface",
    "PacketBatch",
    "__version__",
    "open_capture",
    "read_capture",
    "write_capture",
]

# Loaded on first use (PEP 562): ``import engine.cli`` for a command that needs no numpy (or
# one that must set numpy up first) does not pay for the capture layer here.
_LAZY = {
    "CaptureReader": "engine.capture",
    "CaptureTruncatedWarning": "engine.capture",
    "CaptureWriter": "engine.capture",
    "open_capture": "engine.capture",
    "read_capture": "engine.capture",
    "write_capture": "engine.capture",
    "Interface": "engine.capture.batch",
    "PacketBatch": "engine.capture.batch",
}


def _version() -> str:
    from importlib import metadata

    try:  # the installed package's version: pyproject.toml says it, nothing here repeats it
        return metadata.version("packet-exchange")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
