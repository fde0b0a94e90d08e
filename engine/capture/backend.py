"""Pick the compiled (Cython) backend or its pure-Python twin, once, at import time.

``PKTX_NO_EXTENSIONS=1`` forces the pure-Python path. Each backend module exposes the names in
its ``PUBLIC`` list; ``capture`` and ``flowkeys`` and ``checksum`` below are the chosen ones.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

# role -> (compiled module, pure-Python module, the names both must provide)
_PAIRS = {
    "capture": (
        "ext._capture",
        "engine.capture.capture_py",
        ("walk_pcap", "walk_pcapng", "gather", "pack_pcap", "pack_pcapng"),
    ),
    "flowkeys": ("ext._flowkeys", "engine.packet.flowkeys_py", ("extract_flow_keys",)),
    "checksum": (
        "ext._checksum",
        "engine.packet.checksum_py",
        ("ones_complement_sum", "internet_checksum", "checksum_packets"),
    ),
}

DISABLED = os.environ.get("PKTX_NO_EXTENSIONS", "").strip().lower() not in ("", "0", "false", "no")
_missing: list[str] = []
_chosen: dict[str, ModuleType] = {}


def load(role: str, *, pure: bool = False) -> ModuleType:
    """The module implementing ``role``: compiled unless ``pure`` or extensions are off.

    A compiled module that cannot be imported, or that lacks a name the role needs (a stale
    build), gives way to the pure twin; ``describe()`` and one warning at import say so.
    """
    if not pure and role in _chosen:
        return _chosen[role]
    compiled, python, names = _PAIRS[role]
    mod = None
    if not (pure or DISABLED):
        try:
            mod = importlib.import_module(compiled)
        except ImportError:
            _missing.append(compiled)
        else:
            stale = [n for n in names if not hasattr(mod, n)]
            if stale:
                _missing.append(f"{compiled} (stale build, lacks {', '.join(stale)})")
                mod = None
    if mod is None:
        mod = importlib.import_module(python)
        absent = [n for n in names if not hasattr(mod, n)]
        if absent:
            raise ImportError(f"{python} lacks {', '.join(absent)}")
    if not pure:
        _chosen[role] = mod
    return mod


def variants(role: str) -> list[ModuleType]:
    """Every implementation of ``role`` available here (pure first): what tests run against."""
    compiled, python, _ = _PAIRS[role]
    mods = [importlib.import_module(python)]
    with contextlib.suppress(ImportError):
        mods.append(importlib.import_module(compiled))
    return mods


def describe() -> str:
    """One line for ``pktx --version``: which implementation is in use."""
    if DISABLED:
        return "pure Python (PKTX_NO_EXTENSIONS set)"
    if _missing:
        return f"pure Python where not built: {', '.join(sorted(set(_missing)))}"
    return "compiled extensions (Cython)"


capture = load("capture")
flowkeys = load("flowkeys")
checksum = load("checksum")
if _missing and not DISABLED:
    log.warning(
        "packet-exchange: compiled extensions not usable (%s); using the pure-Python "
        "path, which is much slower",
        ", ".join(_missing),
    )
