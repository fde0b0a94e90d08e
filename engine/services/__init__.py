"""Processing services: the built-ins and any a third party registers.

Services are found through the entry-point group ``pktx.services`` (``name = "module:Class"``),
so a package adds one without touching the engine;
``PKTX_EXTRA_SERVICES="name=module:Class,..."`` adds some without packaging (for trying one out,
and for tests). ``parse_chain`` turns ``"a,b"`` plus
``KEY=VALUE`` parameters into the chain spec that travels to workers; ``build_chain`` makes the
service instances from it. A secret parameter (a key) may be given as ``key_file=PATH`` or
``key_env=VARIABLE`` instead: ``parse_chain`` reads it there, so the spec carries the key to the
workers (use CURVE between hosts) and the command line never holds it; ``public_chain`` is
the spec with secrets hidden, for anything shown or recorded.
"""

from __future__ import annotations

import importlib
import logging
import os
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from engine.services.base import (
    SECRET_SHOWN,
    Param,
    Service,
    ServiceError,
    accepted_names,
    kind_of,
    resolve_secrets,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pktx.services"

# The built-in services: the one list of their names (the broker's catalogue reads it too).
# Other packages add theirs through the entry-point group.
BUILTINS = {
    "identity": "engine.services.identity:Identity",
    "checksum": "engine.services.checksum:Checksum",
    "compress": "engine.services.compression:Compress",
    "decompress": "engine.services.compression:Decompress",
    "encrypt": "engine.services.encryption:Encrypt",
    "decrypt": "engine.services.encryption:Decrypt",
    "anonymize": "engine.services.anonymize:Anonymize",
    "inspect": "engine.services.inspect:Inspect",
}

__all__ = [
    "BUILTINS",
    "Param",
    "Service",
    "ServiceError",
    "available",
    "build_chain",
    "describe",
    "parse_chain",
    "public_chain",
    "service_class",
]


@cache
def _registry() -> dict[str, str]:
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    for item in os.environ.get("PKTX_EXTRA_SERVICES", "").split(","):
        name, sep, target = item.strip().partition("=")
        if sep and name and ":" in target:
            found[name.strip()] = target.strip()
        elif item.strip():
            log.warning("PKTX_EXTRA_SERVICES entry %r is not name=module:Class", item)
    return found


def available() -> list[str]:
    """Names of every service this installation can run."""
    return sorted(_registry())


@cache
def service_class(name: str) -> type[Service]:
    target = _registry().get(name)
    if target is None:
        raise ServiceError(f"unknown service {name!r}; available: {', '.join(available())}")
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ServiceError(f"service {name!r} ({target}) cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ServiceError(f"service {name!r} ({target}) is not a Service subclass")
    return cls


def describe(name: str) -> dict:
    """What ``pktx services`` shows of one service: where it comes from, what it does and each
    parameter with its type, default, choices and help (a secret's other names too). A
    service that cannot be loaded is described by its error."""
    target = _registry()[name]
    origin = "built-in" if BUILTINS.get(name) == target else "registered"
    try:
        cls = service_class(name)
    except ServiceError as exc:
        return {
            "name": name,
            "target": target,
            "origin": origin,
            "summary": "",
            "error": str(exc),
            "params": [],
        }
    return {
        "name": name,
        "target": target,
        "origin": origin,
        "summary": cls.summary,
        "error": None,
        "params": [
            {
                "name": p.name,
                "type": kind_of(p),
                "required": p.required,
                "default": None if p.required else _shown(p.default),
                "choices": list(p.choices) if p.choices is not None else None,
                "secret": p.secret,
                "also_as": list(p.sources[1:]),
                "help": p.help,
            }
            for p in cls.params
        ],
    }


def _shown(value):
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def parse_chain(names: str | list[str], params: list[str] | dict | None = None) -> list[dict]:
    """The chain spec for ``names`` ("a,b" or a list) with ``KEY=VALUE`` parameters.

    A parameter applies to every service in the chain that declares it; ``SERVICE.KEY=VALUE``
    applies to one. Unknown keys are an error. Values stay text (workers parse them), so the
    spec is plain JSON.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ServiceError("empty service chain")
    pairs: list[tuple[str | None, str, str]] = []
    if isinstance(params, dict):
        pairs = [(None, k, str(v)) for k, v in params.items()]
    else:
        items = params or []
        for n, item in enumerate(items, 1):
            key, sep, value = item.partition("=")
            if not sep:
                # Not repeated: a key pasted without its name would end up in a log.
                raise ServiceError(
                    f"parameter {n} of {len(items)} is not KEY=VALUE (its text "
                    "is not shown, in case it is a key)"
                )
            scope, dot, bare = key.rpartition(".")
            pairs.append((scope if dot else None, bare if dot else key, value))
    chain: list[dict[str, Any]] = [{"name": n, "params": {}} for n in names]
    for svc, key, value in pairs:
        used = False
        for spec in chain:
            if svc not in (None, spec["name"]):
                continue
            declared = accepted_names(service_class(spec["name"]).params)
            if key in declared:
                spec["params"][key] = value
                used = True
        if not used:
            where = f"service {svc!r}" if svc else f"the chain {','.join(names)}"
            raise ServiceError(f"parameter {key!r} is not taken by {where}")
    for spec in chain:  # secrets read here, where the user put them, not on every worker
        spec["params"] = resolve_secrets(
            spec["name"], service_class(spec["name"]).params, spec["params"]
        )
    build_chain(chain)  # validate now, before any worker sees it
    return chain


def public_chain(chain: list[dict]) -> list[dict]:
    """The chain spec with every secret parameter's value hidden (for usage records, logs)."""
    out = []
    for spec in chain:
        try:
            secret = {p.name for p in service_class(spec["name"]).params if p.secret}
        except ServiceError:
            secret = set()
        out.append(
            {
                "name": spec["name"],
                "params": {
                    k: SECRET_SHOWN if k in secret or k == "key" else v
                    for k, v in spec.get("params", {}).items()
                },
            }
        )
    return out


def build_chain(chain: list[dict]) -> list[Service]:
    """Service instances for a chain spec."""
    return [service_class(spec["name"])(**spec.get("params", {})) for spec in chain]
