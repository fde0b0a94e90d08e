"""Configuration files for the long-running commands: ``deliver``, ``worker`` and ``daemon``
read their options from a TOML file and the environment as well as from the command line.

Each option's value comes from its flag, else ``PKTX_<COMMAND>_<OPTION>`` in the environment
(``PKTX_WORKER_CONNECT``, ``PKTX_DELIVER_SEGMENT_PACKETS``), else the command's table of the
file (``[worker]`` ``connect = "tcp://..."``; keys are the long option names, with dashes or
underscores), else its default. The file is ``--config FILE``, else ``$PKTX_CONFIG``, else
``$XDG_CONFIG_HOME/pktx/pktx.toml`` (``~/.config/pktx/pktx.toml``) when it exists. Every value
goes through the same check as its flag, at start, and a bad one is one line naming the key
and where it came from. ``pktx config show COMMAND`` prints what a command would run with and
where each value came from, secrets masked (``broker serve`` has its own settings:
broker/settings.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError

CONFIGURABLE = ("deliver", "worker", "daemon")
SECRET_SHOWN = "(secret)"
_SKIP = {"help", "config", "quiet", "verbose", "log_format"}


class ConfigError(EngineError):
    """A configuration file or variable that cannot be used (says which key, and where)."""


@dataclass(frozen=True, slots=True)
class Setting:
    option: str  # the long flag, --segment-packets
    dest: str
    value: Any
    source: str  # "flag", "env PKTX_...", "FILE [table]", "default"


def default_path() -> Path | None:
    if os.environ.get("PKTX_CONFIG"):
        return Path(os.environ["PKTX_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "pktx" / "pktx.toml"
    return path if path.is_file() else None


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of this command's options (its [COMMAND] table); "
        "default $PKTX_CONFIG, else ~/.config/pktx/pktx.toml if it exists",
    )


def _given_config(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    return None


def _table(path: Path | None, command: str) -> dict:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no such configuration file: {path}") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file {path}: {exc.strerror or exc}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    unknown = sorted(k for k in doc if k not in (*CONFIGURABLE, "broker"))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(unknown)}; the tables are "
            f"{', '.join(CONFIGURABLE)}"
        )
    table = doc.get(command, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {command} is not a table ([{command}])")
    return table


def _options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The subcommand's configurable options by their long name without dashes."""
    found = {}
    for action in sub._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in _SKIP:
            continue
        found[longs[0][2:]] = action
    return found


def _convert(action: argparse.Action, raw: Any, where: str) -> Any:
    """``raw`` (a TOML value, or an environment variable's text) as the flag would give it."""

    def one(value: Any) -> Any:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a single value, got {value!r}")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        try:
            converted = action.type(text) if callable(action.type) else text
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(
                f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}"
            )
        return converted

    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if isinstance(raw, str):
            low = raw.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ConfigError(f"{where}: {raw!r} is not true or false")
            raw = low in ("1", "true", "yes", "on")
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false, got {raw!r}")
        return raw if isinstance(action, argparse._StoreTrueAction) else not raw
    if isinstance(action, argparse._AppendAction):
        items = raw if isinstance(raw, list) else [raw]
        return [one(item) for item in items]
    return one(raw)


def resolve(parser: argparse.ArgumentParser, command: str, argv: list[str]) -> list[Setting]:
    """Set the defaults of ``command``'s options from the environment and the file, so that
    parsing ``argv`` gives flags over environment over file over defaults; what each option
    then is and where from (a flag's value is filled in after parsing)."""
    sub = _subparser(parser, command)
    given = _given_config(argv)
    path = Path(given) if given else default_path()
    table = _table(path, command)
    options = _options(sub)
    names = {k.replace("_", "-"): k for k in table}
    unknown = sorted(k for k in names if k not in options)
    if unknown:
        raise ConfigError(
            f"{path} [{command}]: unknown key(s) {', '.join(unknown)}; "
            f"pktx {command} --help lists the options"
        )
    settings = []
    for name, action in options.items():
        env = f"PKTX_{command.upper()}_{name.replace('-', '_').upper()}"
        if not isinstance(action, argparse._AppendAction) and os.environ.get(env):
            value, source = _convert(action, os.environ[env], f"environment {env}"), f"env {env}"
        elif name in names:
            key = names[name]
            value = _convert(action, table[key], f"{path} [{command}] {key}")
            source = f"{path} [{command}]"
        else:
            settings.append(Setting("--" + name, action.dest, action.default, "default"))
            continue
        sub.set_defaults(**{action.dest: value})
        action.required = False  # given by the file or the environment
        settings.append(Setting("--" + name, action.dest, value, source))
    return settings


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise ConfigError(f"no command {command!r}")


def command_of(argv: list[str]) -> str | None:
    """The command ``argv`` runs (its first word that is neither an option of pktx's own nor
    the value of one)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log-format":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def masked(setting: Setting) -> Any:
    """What ``config show`` prints of a value: a service key's value hidden (``key=...``);
    the names of files and variables that hold keys are shown."""

    def hide(item: Any) -> Any:
        if isinstance(item, str) and "=" in item:
            name, _, _value = item.partition("=")
            if name.rpartition(".")[2] == "key":
                return f"{name}={SECRET_SHOWN}"
        return item

    if isinstance(setting.value, list):
        return [hide(v) for v in setting.value]
    return hide(setting.value)


def add_commands(sub) -> None:
    s = sub.add_parser(
        "config", help="show the options a command would run with, and where each came from"
    )
    csub = s.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser(
        "show",
        help="each option's value and its source (flag, "
        "environment, file, default); secrets masked",
    )
    show.add_argument(
        "target",
        choices=(*CONFIGURABLE, "broker"),
        metavar="COMMAND",
        help=f"one of {', '.join(CONFIGURABLE)}, or broker (broker serve's settings)",
    )
    show.add_argument("--config", metavar="FILE", help="the file the command would read")
    show.add_argument("--json", action="store_true", help="one JSON document")
    show.set_defaults(func=cmd_show)


def cmd_show(args) -> int:
    from engine.cli import build_parser

    if args.target == "broker":
        rows = _broker_rows(args.config)
    else:
        argv = [args.target, *(["--config", args.config] if args.config else [])]
        settings = resolve(build_parser(argv), args.target, argv)
        rows = [{"option": s.option, "value": masked(s), "source": s.source} for s in settings]
    if args.json:
        json.dump(rows, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    width = max(len(r["option"]) for r in rows)
    for r in rows:
        value = "" if r["value"] is None else r["value"]
        sys.stdout.write(f"{r['option']:<{width}}  {value!s:<30}  {r['source']}\n")
    return 0


def _broker_rows(config_file: str | None) -> list[dict]:
    """``broker serve``'s settings (broker/settings.py: the environment, then its TOML file,
    ``--config`` or ``$PKTX_BROKER_CONFIG``), in the rows ``config show`` prints."""
    try:
        from broker.errors import InvalidInput
        from broker.settings import explain
    except ImportError as exc:
        raise ConfigError(f"the broker is not installed here ({exc})") from None
    try:
        rows = explain(config_file)
    except InvalidInput as exc:
        raise ConfigError(str(exc)) from None
    return [
        {"option": "--" + name.replace("_", "-"), "value": value, "source": source}
        for name, value, source in rows
    ]
