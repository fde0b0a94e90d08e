"""Services are found through the ``pktx.services`` entry points: a third party adds one by
installing a package, without touching the engine."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

from engine import services
from engine.services.base import ServiceError


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """A package 'pktx-rot13' installed into a folder on sys.path, with its dist-info."""
    (tmp_path / "pktx_rot13.py").write_text(
        textwrap.dedent("""
        from engine.services.base import Param, Service

        class Rot(Service):
            name = "rot"
            params = (Param("by", int, 13, "how far"),)

            def process(self, batch):
                self.counters["packets"] += len(batch)
                return batch
    """)
    )
    dist = tmp_path / "pktx_rot13-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pktx-rot13\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pktx.services]\nrot = pktx_rot13:Rot\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    services._registry.cache_clear()
    services.service_class.cache_clear()
    yield
    services._registry.cache_clear()
    services.service_class.cache_clear()
    sys.modules.pop("pktx_rot13", None)


def test_an_installed_package_adds_a_service(third_party):
    assert "rot" in services.available()
    chain = services.parse_chain("rot,identity", ["by=3"])
    assert chain == [{"name": "rot", "params": {"by": "3"}}, {"name": "identity", "params": {}}]
    rot, _ = services.build_chain(chain)
    assert rot.config == {"by": 3}


def test_the_builtins_are_all_there():
    for name in (
        "identity",
        "checksum",
        "compress",
        "decompress",
        "encrypt",
        "decrypt",
        "anonymize",
        "inspect",
    ):
        assert issubclass(services.service_class(name), services.Service)


def test_a_bad_parameter_value_names_service_and_parameter(third_party):
    with pytest.raises(ServiceError, match="service 'rot': parameter by"):
        services.parse_chain("rot", ["by=many"])
