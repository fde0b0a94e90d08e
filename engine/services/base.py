"""The processing-service interface: a name, declared parameters, ``process(batch) -> batch``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.batch import PacketBatch
from engine.errors import EngineError

_REQUIRED = object()


class ServiceError(EngineError):
    """A service was misconfigured, or failed on a batch (the message names the service)."""


@dataclass(frozen=True)
class Param:
    """A declared service parameter: how to parse it from ``--param KEY=VALUE`` text."""

    name: str
    parse: Callable[[str], Any] = str
    default: Any = _REQUIRED
    help: str = ""
    choices: tuple | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def hex_key(*sizes: int) -> Callable[[str], bytes]:
    """A parser for a hex-encoded key of one of ``sizes`` bytes."""

    def parse(text: str) -> bytes:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError("not a hex string") from None
        if len(key) not in sizes:
            want = " or ".join(str(s) for s in sizes)
            raise ValueError(f"{len(key)} bytes, expected {want} (hex: {2 * sizes[0]} digits)")
        return key

    return parse


class Service:
    """Base class of processing services.

    A subclass sets ``name`` and ``params`` and implements ``process``. ``process`` returns the
    batch to pass on: the same packets changed, or fewer (a dropping service returns
    ``batch.take(kept)``, whose explicit ``seq`` tells the engine which survived). Packets must
    stay in input order. ``counters`` accumulate what the service wants metered.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **config: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ServiceError(f"service {self.name!r}: unknown parameter(s) {unknown}; "
                               f"it takes {sorted(known) or 'none'}")
        self.config: dict[str, Any] = {}
        for p in self.params:
            if p.name in config:
                value = config[p.name]
                if isinstance(value, str) and p.parse is not str:
                    try:
                        value = p.parse(value)
                    except ValueError as exc:
                        raise ServiceError(f"service {self.name!r}: parameter {p.name}: "
                                           f"{exc}") from None
            elif p.required:
                raise ServiceError(f"service {self.name!r}: parameter {p.name} is required "
                                   f"({p.help})")
            else:
                value = p.default
            if p.choices is not None and value not in p.choices:
                raise ServiceError(f"service {self.name!r}: parameter {p.name} must be one of "
                                   f"{list(p.choices)}, not {value!r}")
            self.config[p.name] = value
        self.counters: Counter[str] = Counter()
        self.setup()

    def setup(self) -> None:
        """Prepare state from ``self.config`` (keys, tables); called once per instance."""

    def process(self, batch: PacketBatch) -> PacketBatch:
        raise NotImplementedError

    def take_counters(self) -> dict[str, int]:
        """The counters since the last call, and reset them."""
        out = {k: int(v) for k, v in self.counters.items() if v}
        self.counters.clear()
        return out
