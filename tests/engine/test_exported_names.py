"""The engine's public API is what `engine.__all__` says, no more and no less (httpx's
test_exported_members): a re-layout inside the package must not change what users import."""

from __future__ import annotations

import engine

PUBLIC = {
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
}


def test_the_exported_names_are_the_public_api():
    assert set(engine.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(engine, name) is not None, name
    exported = {n for n in dir(engine) if not n.startswith("_")} - {
        "capture",
        "packet",
        "delivery",
        "services",
        "errors",
        "cli",
        "daemon",
        "logs",
    }
    assert exported <= PUBLIC, exported - PUBLIC


def test_the_version_is_the_installed_packages():
    from importlib.metadata import version

    assert engine.__version__ == version("packet-exchange")
    import broker

    assert broker.__version__ == engine.__version__
