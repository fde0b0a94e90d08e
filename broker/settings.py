"""The broker's settings in one object: command-line flags over the environment over a file.

`BrokerSettings` reads ``PKTX_BROKER_*`` environment variables (``PKTX_BROKER_DB``,
``PKTX_BROKER_PROCESSES``, ...) and, when ``PKTX_BROKER_CONFIG`` names one, a TOML file whose keys
are the field names (``db = "postgresql+psycopg://..."``). What ``pktx broker serve`` is given
on its command line wins over both. The server processes of ``serve --processes N`` build their app
from the same object: the command exports what it resolved (`BrokerSettings.export`).
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from broker.errors import InvalidInput

PREFIX = "PKTX_BROKER_"
ENV_CONFIG = f"{PREFIX}CONFIG"
# The file `load` was given, for the settings sources below (the environment is left alone).
_config_file: ContextVar[Path | None] = ContextVar("pktx_broker_config_file", default=None)


class BrokerSettings(BaseSettings):
    """How a broker runs: its store, its HTTP server and the market's clocks."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="forbid", frozen=True, populate_by_name=True
    )

    db: str | None = Field(
        None, description="database URL; default: a SQLite file in ~/.local/share/pktx"
    )
    host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    port: int = Field(8040, ge=0, le=65535, description="port the HTTP API listens on")
    # Named `processes`, not `workers`: a pktx worker is a packet-processing process. The old
    # name is still read (file key, PKTX_BROKER_WORKERS, --workers).
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="HTTP server processes",
        validation_alias=AliasChoices(
            "processes", "workers", f"{PREFIX}PROCESSES", f"{PREFIX}WORKERS"
        ),
    )
    reputation_half_life_days: float = Field(
        90.0, gt=0, le=36500, description="age at which a rating counts half"
    )
    expire_every: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="seconds between sweeps that mark overdue negotiations expired (0: never)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    tls_cert: str | None = Field(None, description="PEM certificate (chain) to serve HTTPS with")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file.get() or os.environ.get(ENV_CONFIG)
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)

    @property
    def reputation_half_life(self) -> timedelta:
        return timedelta(days=self.reputation_half_life_days)

    def export(self) -> dict[str, str]:
        """The environment that makes `load()` in another process give these settings."""
        return {
            f"{PREFIX}{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }


def load(config_file: str | os.PathLike | None = None, **overrides) -> BrokerSettings:
    """The settings from ``overrides`` (flags given; None means not given), the environment
    and the TOML file (``config_file``, else ``$PKTX_BROKER_CONFIG``).

    A file that is missing or malformed, or a value out of range, is an `InvalidInput` naming
    the setting and where it came from.
    """
    path = (
        Path(config_file)
        if config_file is not None
        else (Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else None)
    )
    if path is not None and not path.is_file():
        raise InvalidInput(f"no such configuration file: {path}", field="config")
    given = {k: v for k, v in overrides.items() if v is not None}
    token = _config_file.set(path)
    try:
        return BrokerSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise InvalidInput(
            f"{first.get('msg', 'invalid')} (from the command line, "
            f"{PREFIX}{name.upper()} or {path or 'no configuration file'})",
            field=name,
        ) from None
    except (OSError, ValueError) as exc:  # an unreadable or malformed TOML file
        raise InvalidInput(
            f"cannot read the configuration file {path}: {exc}", field="config"
        ) from None
    finally:
        _config_file.reset(token)


def explain(config_file: str | os.PathLike | None = None) -> list[tuple[str, object, str]]:
    """What ``pktx broker serve`` would run with and where each value comes from (no flags
    given): ``(setting, value, source)`` rows, the source ``env PKTX_BROKER_X``, the file, or
    ``default``; a password in the database URL masked. Invalid settings raise as `load`."""
    settings = load(config_file)
    path = (
        Path(config_file)
        if config_file is not None
        else (Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else None)
    )
    table: dict = {}
    if path is not None:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    rows: list[tuple[str, object, str]] = []
    for name, field in BrokerSettings.model_fields.items():
        alias = field.validation_alias
        names = list(alias.choices) if isinstance(alias, AliasChoices) else [name]
        envs = [n for n in names if isinstance(n, str) and n.startswith(PREFIX)] or [
            f"{PREFIX}{name.upper()}"
        ]
        keys = [n for n in names if isinstance(n, str) and not n.startswith(PREFIX)]
        env = next((e for e in envs if e in os.environ), None)
        key = next((k for k in keys if k in table), None)
        source = f"env {env}" if env else (f"{path} {key}" if key else "default")
        value = getattr(settings, name)
        if name == "db" and value:
            value = _masked_url(value)
        rows.append((name, value, source))
    return rows


def _masked_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"
