"""encrypt and decrypt as a user runs them: failures end the run, nothing is lost in silence."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from delivery_support import pktx_cmd

from engine.capture.batch import PacketBatch
from engine.capture.reader import read_capture
from engine.capture.writer import write_capture
from engine.delivery.deliver import deliver
from engine.services.payload import select

KEY = "7e" * 32
WRONG = "81" * 32


def _pktx(*args, env=None):
    return subprocess.run(
        pktx_cmd(*args),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _no_leftovers(folder, *kept) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


@pytest.fixture(scope="module")
def sealed(sample_pcap, tmp_path_factory):
    """The sample capture encrypted, and how many of its packets were encrypted."""
    path = tmp_path_factory.mktemp("auth") / "sealed.pcap"
    usage = deliver(
        str(sample_pcap), str(path), services="encrypt", params=[f"key={KEY}"], workers=1
    )
    encrypted = usage["services"]["encrypt"]["packets_encrypted"]
    assert encrypted == len(select(read_capture(sample_pcap)))
    return path, encrypted


def test_decrypt_with_the_wrong_key_fails_the_run_naming_the_count(sealed, tmp_path):
    path, encrypted = sealed
    out, usage = tmp_path / "opened.pcap", tmp_path / "usage.json"
    proc = _pktx(
        "deliver",
        path,
        "-o",
        out,
        "--service",
        "decrypt",
        "--param",
        "key_env=PKTX_TEST_KEY",
        "--workers",
        1,
        "--usage-json",
        usage,
        env={"PKTX_TEST_KEY": WRONG},
    )
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("pktx: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    record = json.loads(usage.read_text())
    count = record["auth_failures"]
    assert 0 < count <= encrypted
    assert record["services"]["decrypt"]["auth_failures"] == count
    assert errors[0] == (
        f"pktx: error: {count:,} packets failed authentication (decrypt "
        f"{count:,}), more than --max-auth-failures 0: a wrong key, or packets "
        f"changed on the way; stopped, and {out} was not completed"
    )
    assert record["failed"] in errors[0]
    _no_leftovers(tmp_path, "usage.json")  # no output, not even a temporary one


def test_a_threshold_lets_a_run_with_failures_finish_and_count_them_all(
    sealed, sample_pcap, tmp_path
):
    path, encrypted = sealed
    out, usage = tmp_path / "opened.pcap", tmp_path / "usage.json"
    proc = _pktx(
        "deliver",
        path,
        "-o",
        out,
        "--service",
        "decrypt",
        "--param",
        f"key={WRONG}",
        "--workers",
        1,
        "--usage-json",
        usage,
        "--max-auth-failures",
        encrypted,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{encrypted} failed authentication" in proc.stderr
    record = json.loads(usage.read_text())
    assert record["auth_failures"] == record["services"]["decrypt"]["auth_failures"] == encrypted
    assert record["max_auth_failures"] == encrypted and "failed" not in record
    # What is left: the packets decrypt does not take, as they were.
    assert record["packets_out"] == len(read_capture(sample_pcap)) - encrypted
    proc = _pktx(
        "deliver",
        path,
        "-o",
        tmp_path / "again.pcap",
        "--service",
        "decrypt",
        "--param",
        f"key={WRONG}",
        "--workers",
        1,
        "--max-auth-failures",
        encrypted - 1,
    )
    assert proc.returncode == 1 and "failed authentication" in proc.stderr


def test_the_right_key_gives_back_the_input(sealed, sample_pcap, tmp_path):
    path, _ = sealed
    out, usage = tmp_path / "opened.pcap", tmp_path / "usage.json"
    proc = _pktx(
        "deliver",
        path,
        "-o",
        out,
        "--service",
        "decrypt",
        "--param",
        f"key={KEY}",
        "--workers",
        1,
        "--usage-json",
        usage,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == sample_pcap.read_bytes()
    assert json.loads(usage.read_text())["auth_failures"] == 0


def _with_largest_packets(tmp_path):
    """A capture of small UDP packets and 65,535-byte IP packets (scapy builds them)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    def udp(total):
        # Fixed MAC addresses: scapy would otherwise look for them on the network.
        return bytes(
            Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="192.0.2.1", dst="192.0.2.2")
            / UDP(sport=9, dport=9)
            / Raw(os.urandom(total - 28))
        )

    pkts = [udp(65535) if i % 10 == 3 else udp(100 + i) for i in range(40)]
    path = tmp_path / "largest.pcap"
    write_capture(path, PacketBatch.from_packets(pkts, [10**18 + i * 1000 for i in range(40)]))
    return path, sum(len(p) == 65535 + 14 for p in pkts)


def test_packets_too_large_to_encrypt_fail_the_run_or_pass_in_clear_when_asked(tmp_path):
    src, large = _with_largest_packets(tmp_path)
    sealed = tmp_path / "sealed.pcap"
    proc = _pktx(
        "deliver",
        src,
        "-o",
        sealed,
        "--service",
        "encrypt",
        "--param",
        f"key={KEY}",
        "--workers",
        1,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is too large to encrypt" in proc.stderr and "too_large=clear" in proc.stderr
    assert not sealed.exists()
    usage = [tmp_path / "seal.json", tmp_path / "open.json"]
    proc = _pktx(
        "deliver",
        src,
        "-o",
        sealed,
        "--service",
        "encrypt",
        "--param",
        f"key={KEY}",
        "--param",
        "too_large=clear",
        "--workers",
        1,
        "--usage-json",
        usage[0],
    )
    assert proc.returncode == 0, proc.stderr
    opened = tmp_path / "opened.pcap"
    proc = _pktx(
        "deliver",
        sealed,
        "-o",
        opened,
        "--service",
        "decrypt",
        "--param",
        f"key={KEY}",
        "--param",
        "too_large=clear",
        "--workers",
        1,
        "--usage-json",
        usage[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert read_capture(opened).same_packets(read_capture(src))
    seal, unseal = (json.loads(u.read_text()) for u in usage)
    assert seal["services"]["encrypt"]["passed_clear"] == large == 4
    assert unseal["services"]["decrypt"]["passed_clear"] == large
    assert unseal["auth_failures"] == 0
    # Opened without the option, the clear packets are authentication failures: the run fails.
    proc = _pktx(
        "deliver",
        sealed,
        "-o",
        tmp_path / "strict.pcap",
        "--service",
        "decrypt",
        "--param",
        f"key={KEY}",
        "--workers",
        1,
    )
    assert proc.returncode == 1
    assert f"{large} packets failed authentication (decrypt {large})" in proc.stderr
