"""Keys reach pktx deliver by file or environment, never by the command line, and never show."""

from __future__ import annotations

import json
import os
import subprocess

from delivery_support import free_port, pktx_cmd, stop

from engine.capture.reader import read_capture


def test_keys_from_a_file_and_the_environment_round_trip_and_never_show(sample_pcap, tmp_path):
    key = os.urandom(32).hex()
    key_file = tmp_path / "aes.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    sealed, opened = tmp_path / "sealed.pcap", tmp_path / "opened.pcap"
    usage = [tmp_path / "seal.json", tmp_path / "open.json"]
    seal = subprocess.run(
        pktx_cmd(
            "-vv",
            "deliver",
            sample_pcap,
            "-o",
            sealed,
            "--service",
            "encrypt",
            "--param",
            f"key_file={key_file}",
            "--workers",
            1,
            "--usage-json",
            usage[0],
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seal.returncode == 0, seal.stderr
    # Opened by a worker that logs everything, on a dispatcher given the key by environment.
    port = free_port()
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "w") as log:
        worker = subprocess.Popen(
            pktx_cmd(
                "-vv",
                "worker",
                "--connect",
                f"tcp://127.0.0.1:{port}",
                "--max-idle",
                60,
                "--exit-on-disconnect",
            ),
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            env = {**os.environ, "PKTX_TEST_SECRET": key}
            unseal = subprocess.run(
                pktx_cmd(
                    "-vv",
                    "deliver",
                    sealed,
                    "-o",
                    opened,
                    "--service",
                    "decrypt",
                    "--param",
                    "key_env=PKTX_TEST_SECRET",
                    "--workers",
                    0,
                    "--bind",
                    f"tcp://127.0.0.1:{port}",
                    "--usage-json",
                    usage[1],
                ),
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            assert unseal.returncode == 0, unseal.stderr
            worker.wait(30)
        finally:
            stop(worker)
    assert read_capture(opened).same_packets(read_capture(sample_pcap))
    records = [json.loads(u.read_text()) for u in usage]
    assert records[0]["service_chain"] == [{"name": "encrypt", "params": {"key": "(secret)"}}]
    assert records[1]["services"]["decrypt"]["packets_decrypted"] > 0
    shown = {
        "seal stderr": seal.stderr,
        "open stderr": unseal.stderr,
        "worker log": worker_log.read_text(),
        **{u.name: u.read_text() for u in usage},
    }
    assert "joined" in shown["worker log"]  # the worker did log at debug level
    for where, text in shown.items():
        assert key not in text.lower(), where


def test_a_bad_key_file_is_one_line_naming_the_file(sample_pcap, tmp_path):
    key_file = tmp_path / "short.key"
    key_file.write_text("ab" * 16)
    key_file.chmod(0o600)
    out = tmp_path / "o.pcap"
    proc = subprocess.run(
        pktx_cmd(
            "deliver",
            sample_pcap,
            "-o",
            out,
            "--service",
            "encrypt",
            "--param",
            f"key_file={key_file}",
            "--workers",
            1,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"pktx: error: service 'encrypt': parameter "
        f"key_file={key_file}: 16 bytes, expected 32 (hex: 64 digits)"
    )
    assert not out.exists()
