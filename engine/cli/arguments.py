"""Argument types the ``pktx`` subcommands share (argparse ``type=`` callables), and the options
of the commands that call the broker's HTTP API."""

from __future__ import annotations

import argparse
import json
import sys


def share(text: str) -> tuple[int, int]:
    """``I/K`` -> (I, K), share I of K (argparse type)."""
    index, _, of = text.partition("/")
    try:
        i, k = int(index), int(of)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/K (e.g. 0/3)") from None
    if not 1 <= k <= 1000 or not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"{text!r}: K is 1..1000 and I is 0..K-1")
    return i, k


def rate(text: str) -> int:
    from engine.delivery.meter import parse_rate

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return v


def json_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: the command's report as one JSON document on stdout, for scripts."""
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print one JSON document on stdout ({what}) instead of the human summary",
    )


def print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def address(text: str) -> str:
    """``HOST:PORT`` (argparse type of --metrics)."""
    from engine.telemetry import parse_address

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def metrics_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        type=address,
        metavar="ADDR:PORT",
        help="serve Prometheus metrics on /metrics, and /healthz and /readyz, "
        "at this address while running (e.g. 127.0.0.1:9400)",
    )


def broker_options(parser, whose: str) -> None:
    """``--broker``, ``--key-file``/``--key-env`` (``whose`` API key) and ``--ca-bundle``: how a
    client of the broker's HTTP API reaches it (`engine.daemon.broker_client`)."""
    parser.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="the broker: https://HOST[:PORT] (plain http only on loopback)",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--key-file", metavar="FILE", help=f"{whose} API key, the file's first line")
    key.add_argument(
        "--key-env",
        metavar="VARIABLE",
        help="the environment variable holding the key (default PKTX_BROKER_KEY)",
    )
    parser.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="CA certificates to verify the broker's with (a private CA)",
    )
