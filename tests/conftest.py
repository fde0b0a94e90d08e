"""Test-wide setup: the shared helper modules (``locations``, and the engine's ``naive``,
``capture_craft``) import by name from any test folder, and the project's ``benchmarks``
package (its ``node_world``, real brokers and daemons on loopback, serves tests and
benchmarks alike) imports as ``benchmarks.node_world``."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE / "engine", HERE.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
