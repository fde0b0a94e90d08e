"""``pktx completion`` (issue 12): the bash script, sourced in a real bash, completes commands,
subcommands, options and choices as the parser has them; the zsh script is valid zsh."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


def script(shell: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "engine.cli", "completion", shell],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def complete(bash_script: str, line: str) -> list[str]:
    """What bash offers for ``line`` (completing its last word), through the script's own
    completion function."""
    words = line.split(" ")
    probe = (
        f"{bash_script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\nCOMP_LINE={line!r}\nCOMP_POINT=${{#COMP_LINE}}\n"
        f'_shtab_pktx\nprintf "%s\\n" "${{COMPREPLY[@]}}"\n'
    )
    run = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return sorted(w for w in run.stdout.split() if w)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_what_the_parser_has():
    bash = script("bash")
    assert complete(bash, "pktx del") == ["deliver"]
    assert "services" in complete(bash, "pktx ") and "broker" in complete(bash, "pktx ")
    assert complete(bash, "pktx deliver in.pcap --seg") == [
        "--segment-bytes",
        "--segment-ms",
        "--segment-packets",
    ]
    assert complete(bash, "pktx deliver in.pcap --on-poison ") == ["fail", "skip"]
    assert complete(bash, "pktx broker ad") == ["admin"]
    assert complete(bash, "pktx --log-format ") == ["json", "text"]
    assert "--processes" in complete(bash, "pktx broker serve --p")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_the_zsh_script_is_valid_zsh_and_knows_the_commands(tmp_path):
    zsh = script("zsh")
    path = tmp_path / "_pktx"
    path.write_text(zsh)
    run = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert zsh.startswith("#compdef pktx") and "deliver" in zsh and "--segment-packets" in zsh
