"""The processing services a provider can offer, as the engine names them, and chain parsing."""

from __future__ import annotations

from collections.abc import Iterable

from broker.errors import InvalidInput

# The engine's built-in services (engine/services/). A provider offers a subset; a request asks
# for a chain of them, applied in order.
SERVICE_NAMES: tuple[str, ...] = (
    "identity", "checksum", "compress", "decompress", "encrypt", "decrypt", "anonymize", "inspect",
)


def parse_chain(chain: str | Iterable[str], *, field: str = "services") -> tuple[str, ...]:
    """``"anonymize,checksum"`` or ``["anonymize", "checksum"]`` -> a validated tuple, in order."""
    names = chain.split(",") if isinstance(chain, str) else list(chain)
    names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    if not names:
        raise InvalidInput("name at least one service, e.g. 'anonymize,checksum'", field=field)
    unknown = [n for n in names if n not in SERVICE_NAMES]
    if unknown:
        raise InvalidInput(f"unknown service(s) {', '.join(unknown)}; known: "
                           f"{', '.join(SERVICE_NAMES)}", field=field)
    return tuple(names)


def format_chain(names: Iterable[str]) -> str:
    return ",".join(names)
