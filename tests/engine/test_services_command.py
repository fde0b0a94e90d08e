"""``pktx services`` as a user runs it: every installed service with its parameters, read back
from the JSON and compared with the service classes themselves; a service registered from
outside is listed as such, and one that cannot be loaded is described by its error, not a
traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from locations import ROOT

from engine.services import BUILTINS, service_class
from engine.services.base import boolean


def services(*args: str, extra: str = "") -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PKTX_EXTRA_SERVICES=extra,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "services", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_every_builtin_is_listed_with_its_declared_parameters():
    listed = {s["name"]: s for s in json.loads(services("--json").stdout)}
    assert set(BUILTINS) <= set(listed)
    for name in BUILTINS:
        cls = service_class(name)
        shown = listed[name]
        assert (shown["origin"], shown["summary"], shown["error"]) == (
            "built-in",
            cls.summary,
            None,
        )
        assert [p["name"] for p in shown["params"]] == [p.name for p in cls.params]
        for p, q in zip(cls.params, shown["params"], strict=True):
            assert q["required"] == p.required and q["secret"] == p.secret
            if not p.required:
                assert q["default"] == p.default
            if p.parse is int:
                assert q["type"] == "integer"
            if p.parse is boolean:
                assert q["type"] == "boolean"
    key = next(p for p in listed["encrypt"]["params"] if p["name"] == "key")
    assert key == {
        **key,
        "type": "hex key, 32 bytes",
        "required": True,
        "secret": True,
        "also_as": ["key_file", "key_env"],
    }


def test_registered_and_broken_services_and_names():
    extra = "twice=engine.services.identity:Identity,broken=no.such.module:Thing"
    shown = json.loads(services("--json", "twice", "broken", extra=extra).stdout)
    assert [(s["name"], s["origin"]) for s in shown] == [
        ("twice", "registered"),
        ("broken", "registered"),
    ]
    assert shown[1]["error"].startswith("service 'broken' (no.such.module:Thing) cannot be loaded")
    human = services("broken", extra=extra)
    assert human.returncode == 0 and "cannot be loaded" in human.stdout
    unknown = services("nope")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("pktx: error: unknown service(s) nope; available: ")
