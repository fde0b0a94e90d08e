"""The processing-service interface: a name, declared parameters, ``process(batch) -> batch``."""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.capture.batch import PacketBatch
from engine.errors import EngineError
from engine.logs import register_secret

_REQUIRED = object()
# A secret parameter NAME may also be given as NAME_file=PATH (the file's text) or NAME_env=VAR
# (an environment variable), so it need not appear on a command line.
SECRET_SOURCES = ("file", "env")
SECRET_SHOWN = "(secret)"

log = logging.getLogger(__name__)


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
    secret: bool = False  # never shown: not in logs, errors or usage records

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    @property
    def sources(self) -> tuple[str, ...]:
        """The names this parameter may be given under (``key``, ``key_file``, ``key_env``)."""
        if not self.secret:
            return (self.name,)
        return (self.name, *(f"{self.name}_{s}" for s in SECRET_SOURCES))


_KINDS: dict[Callable[[str], Any], str] = {str: "text", int: "integer", float: "number"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def boolean(text: str) -> bool:
    """A yes/no parameter: 1/0, true/false, yes/no, on/off (any case); empty is no."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a yes/no value (1/0, true/false, yes/no, on/off)")


boolean.kind = "boolean"  # type: ignore[attr-defined]


def kind_of(param: Param) -> str:
    """What a parameter's value is, in words: ``integer``, ``text``, ``hex key, 32 bytes``..."""
    parse = param.parse
    return _KINDS.get(parse) or getattr(parse, "kind", None) or parse.__name__.strip("_")


def accepted_names(params: tuple[Param, ...]) -> set[str]:
    """Every name a service's parameters may be given under."""
    return {name for p in params for name in p.sources}


def resolve_secrets(service: str, params: tuple[Param, ...], config: dict) -> dict:
    """``config`` with each secret given as ``NAME_file=PATH`` or ``NAME_env=VAR`` replaced by
    ``NAME=`` its text (surrounding whitespace dropped). Errors name the file or variable,
    never what it holds."""
    out = dict(config)
    for p in params:
        if not p.secret:
            continue
        given = [n for n in p.sources if n in out]
        if len(given) > 1:
            raise ServiceError(
                f"service {service!r}: give parameter {p.name} once, not as {' and '.join(given)}"
            )
        if not given or given[0] == p.name:
            continue
        where = out.pop(given[0])
        if given[0].endswith("_file"):
            out[p.name] = _read_secret_file(service, given[0], str(where))
        else:
            value = os.environ.get(str(where))
            if value is None or not value.strip():
                state = "not set" if value is None else "empty"
                raise ServiceError(
                    f"service {service!r}: parameter {given[0]}: environment "
                    f"variable {where} is {state}"
                )
            out[p.name] = value.strip()
        try:
            p.parse(out[p.name])
        except ValueError as exc:
            raise ServiceError(
                f"service {service!r}: parameter {given[0]}={where}: {exc}"
            ) from None
    return out


def _read_secret_file(service: str, param: str, path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read(4096)
    except OSError as exc:
        raise ServiceError(
            f"service {service!r}: parameter {param}: cannot read {path}: {exc.strerror or exc}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "service %s: key file %s can be read by other users (mode %04o); chmod 600 it",
            service,
            path,
            stat.S_IMODE(mode),
        )
    if not text.strip():
        raise ServiceError(f"service {service!r}: parameter {param}: {path} is empty")
    return text.strip()


def hex_key(*sizes: int) -> Callable[[str], bytes]:
    """A parser for a hex-encoded key of one of ``sizes`` bytes (its errors never hold the
    text)."""

    def parse(text: str) -> bytes:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError("not a hex string") from None
        if len(key) not in sizes:
            want = " or ".join(str(s) for s in sizes)
            raise ValueError(f"{len(key)} bytes, expected {want} (hex: {2 * sizes[0]} digits)")
        return key

    parse.kind = f"hex key, {' or '.join(str(s) for s in sizes)} bytes"  # type: ignore[attr-defined]
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
        unknown = sorted(set(config) - accepted_names(self.params))
        if unknown:
            raise ServiceError(
                f"service {self.name!r}: unknown parameter(s) {unknown}; "
                f"it takes {sorted(accepted_names(self.params)) or 'none'}"
            )
        config = resolve_secrets(self.name, self.params, config)
        self.config: dict[str, Any] = {}
        for p in self.params:
            if p.name in config:
                value = config[p.name]
                if isinstance(value, str) and p.parse is not str:
                    try:
                        value = p.parse(value)
                    except ValueError as exc:
                        raise ServiceError(
                            f"service {self.name!r}: parameter {p.name}: {exc}"
                        ) from None
            elif p.required and p.secret:
                raise ServiceError(
                    f"service {self.name!r}: parameter {p.name} is required "
                    f"({p.help}), as {p.name}=, {p.name}_file=PATH or "
                    f"{p.name}_env=VARIABLE"
                )
            elif p.required:
                raise ServiceError(
                    f"service {self.name!r}: parameter {p.name} is required ({p.help})"
                )
            else:
                value = p.default
            if p.secret:  # whatever logs later in this process (dispatcher, worker), not this
                register_secret(value)
            if p.choices is not None and value not in p.choices:
                raise ServiceError(
                    f"service {self.name!r}: parameter {p.name} must be one of "
                    f"{list(p.choices)}, not {value!r}"
                )
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
