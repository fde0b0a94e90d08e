"""The processing services a provider can offer, as the engine names them, and chain parsing."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from broker.errors import InvalidInput
from engine.services import BUILTINS, available

# The engine's built-in services, as the engine names them (engine.services.BUILTINS). A provider
# offers a subset; a request asks for a chain of them, applied in order.
SERVICE_NAMES: tuple[str, ...] = tuple(BUILTINS)


@cache
def known_services() -> tuple[str, ...]:
    """The built-ins plus any service the engine finds through its entry points."""
    return SERVICE_NAMES + tuple(n for n in available() if n not in SERVICE_NAMES)


def parse_chain(chain: str | Iterable[str], *, field: str = "services") -> tuple[str, ...]:
    """``"anonymize,checksum"`` or ``["anonymize", "checksum"]`` -> a validated tuple, in order."""
    names = chain.split(",") if isinstance(chain, str) else list(chain)
    names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    if not names:
        raise InvalidInput("name at least one service, e.g. 'anonymize,checksum'", field=field)
    known = known_services()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(
            f"unknown service(s) {', '.join(unknown)}; known: {', '.join(known)}", field=field
        )
    return tuple(names)


def format_chain(names: Iterable[str]) -> str:
    return ",".join(names)
