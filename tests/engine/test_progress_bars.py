"""Progress bars (issue 12) as a user sees them: on a terminal (a real pseudo-terminal) the
long commands of known size draw one (``deliver`` from a file: of the file's bytes; from a
stream of unknown size, a live line); into a pipe, or with -q or --json, nothing but the
summary is written."""

from __future__ import annotations

import re
import socket
import threading

import dpkt
import pytest
from locations import free_port
from terminal import on_a_terminal, piped


def generated(tmp_path, packets: int):
    """A generated capture of ``packets`` packets."""
    src = tmp_path / "in.pcap"
    assert piped("generate", src, "--packets", packets, "-q").returncode == 0
    return src


def no_bar_elsewhere(args: list, summary: str) -> None:
    """Into a pipe only the summary line; on a terminal with -q, nothing."""
    into_a_pipe = piped(*args)
    assert into_a_pipe.returncode == 0
    assert "━" not in into_a_pipe.stderr and "%" not in into_a_pipe.stderr
    assert into_a_pipe.stderr.startswith(summary)
    assert on_a_terminal(*args, "-q").strip() == ""


@pytest.mark.parametrize("command", ["generate", "convert"])
def test_a_bar_on_a_terminal_and_none_elsewhere(tmp_path, command):
    src = generated(tmp_path, 400_000)
    args = (
        ["generate", tmp_path / "g.pcap", "--packets", 400_000]
        if command == "generate"
        else ["convert", src, tmp_path / "c.pcapng"]
    )
    shown = on_a_terminal(*args)
    assert "━" in shown and "%" in shown  # rich's bar and its percentage
    assert "wrote 400000 packets" in shown
    no_bar_elsewhere(args, "wrote 400000 packets")


def plain(shown: str) -> str:
    """What a terminal shows, without its colours and cursor moves."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)


def test_deliver_from_a_file_draws_a_bar_of_the_files_bytes(tmp_path):
    src = generated(tmp_path, 20_000)
    args = ["deliver", src, "-o", tmp_path / "out.pcap", "--workers", 1]
    shown = plain(on_a_terminal(*args))
    # the bar's total is the file's size, in rich's decimal MB
    assert f"/{src.stat().st_size / 1e6:.1f} MB" in shown
    assert "━" in shown and "%" in shown and "packets out" in shown
    assert "delivered 20000 of 20000 packets" in shown
    no_bar_elsewhere(args, "delivered 20000 of 20000 packets")
    assert on_a_terminal(*args, "--json").strip() == ""


def test_deliver_from_a_stream_of_unknown_size_shows_a_live_line(tmp_path):
    src = generated(tmp_path, 10)
    with open(src, "rb") as f:
        frame = next(iter(dpkt.pcap.Reader(f)))[1]
    port = free_port()
    stop = threading.Event()

    def send():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            while not stop.wait(0.005):
                tx.sendto(frame, ("127.0.0.1", port))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        shown = plain(
            on_a_terminal(
                "deliver",
                f"udp://127.0.0.1:{port}",
                "-o",
                tmp_path / "out.pcap",
                "--workers",
                1,
                "--count",
                300,
            )
        )
    finally:
        stop.set()
        sender.join()
    assert "delivering: " in shown and " packets, " in shown and "Mbit/s" in shown
    assert "%" not in shown and "━" not in shown  # no size, no bar
    assert "delivered 300 of 300 packets" in shown
