"""The market for packet-processing services: requests, negotiation, auctions, ratings, money."""

from importlib import metadata

try:
    __version__ = metadata.version("packet-exchange")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
