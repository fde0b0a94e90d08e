"""The README's Quick start is what CI runs: keep the two in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", section, re.S)
    assert block, "README's Quick start has no fenced code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_has_exactly_two_commands():
    cmds = _quick_start_commands()
    assert len(cmds) == 2, cmds
    assert "pktx demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _quick_start_commands()[1] in ci.splitlines()


def test_the_deployment_commands_are_ones_pktx_accepts():
    """Each command of the README's Deployment section parses with pktx's own parser."""
    import shlex

    from engine.cli import build_parser

    text = (ROOT / "README.md").read_text()
    section = text.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [
        ["pktx", "broker"],
        ["pktx", "daemon"],
        ["pktx", "worker"],
        ["pktx", "worker"],
    ]
    for argv in commands:
        args = build_parser(argv[1:]).parse_args(argv[1:])
        assert args.func is not None
