"""``pktx completion bash|zsh``: the shell completion script, generated from the parser itself
(shtab), so it never disagrees with the options."""

from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh")
_FILES = {"FILE", "SOURCE", "SINK", "OUT", "IN", "PATH"}
_FOLDERS = {"DIR"}


def add_commands(sub) -> None:
    s = sub.add_parser(
        "completion",
        help="print the shell completion script (bash or zsh)",
        description="bash: pktx completion bash > "
        "~/.local/share/bash-completion/completions/pktx ; zsh: "
        "pktx completion zsh > ~/.zfunc/_pktx (a folder on your "
        "$fpath, before compinit)",
    )
    s.add_argument("shell", choices=SHELLS)
    s.set_defaults(func=cmd_completion)


def _mark_paths(parser: argparse.ArgumentParser, shtab) -> None:
    """Options and arguments that name files or folders complete as such."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _mark_paths(child, shtab)
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else ""
        if metavar in _FILES or action.dest in ("source", "output", "input", "config"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif metavar in _FOLDERS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


def cmd_completion(args) -> int:
    import shtab

    from engine.cli import build_parser

    parser = build_parser()
    _mark_paths(parser, shtab)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0
