"""The market for packet-processing services: requests, negotiation, auctions, ratings, money."""

from functools import cache


@cache
def _version() -> str:
    from importlib import metadata

    try:  # the installed package's version: pyproject.toml says it, nothing here repeats it
        return metadata.version("packet-exchange")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    # Read on first use (PEP 562): `pktx --help` builds the broker's parsers without paying
    # for importlib.metadata.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'broker' has no attribute {name!r}")
