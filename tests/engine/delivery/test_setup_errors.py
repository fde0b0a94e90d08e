"""Setup errors of pktx deliver: one clear line naming what and where, and nothing left behind."""

from __future__ import annotations

import logging
import subprocess

import pytest
import zmq
from delivery_support import free_port, pktx_cmd

from engine.delivery.deliver import Delivery, DeliveryOptions


def _deliver(*args, timeout=120):
    return subprocess.run(
        pktx_cmd("deliver", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _clean(proc, folder, *expected):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert ".part" not in proc.stderr, proc.stderr
    left = sorted(p.name for p in folder.iterdir())
    assert left == [], f"left behind: {left}"


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_bind_address_in_use(sample_pcap, out_dir):
    port = free_port()
    holder = zmq.Context.instance().socket(zmq.ROUTER)
    holder.linger = 0
    holder.bind(f"tcp://127.0.0.1:{port}")
    try:
        proc = _deliver(
            sample_pcap,
            "-o",
            out_dir / "o.pcap",
            "--workers",
            0,
            "--bind",
            f"tcp://127.0.0.1:{port}",
            "--wait-workers",
            5,
        )
    finally:
        holder.close(0)
    _clean(proc, out_dir, f"cannot bind tcp://127.0.0.1:{port}", "Address already in use")


def test_bind_with_a_bad_scheme(sample_pcap, out_dir):
    proc = _deliver(
        sample_pcap, "-o", out_dir / "o.pcap", "--workers", 0, "--bind", "http://127.0.0.1:80"
    )
    _clean(proc, out_dir, "cannot bind http://127.0.0.1:80")


def test_a_missing_curve_folder_leaves_no_partial_output(sample_pcap, out_dir, tmp_path):
    proc = _deliver(
        sample_pcap, "-o", out_dir / "o.pcap", "--workers", 1, "--curve", tmp_path / "no-keys"
    )
    _clean(proc, out_dir, "no-keys")


def test_usage_json_in_a_missing_folder_fails_before_any_output(sample_pcap, out_dir, tmp_path):
    proc = _deliver(
        sample_pcap,
        "-o",
        out_dir / "o.pcap",
        "--workers",
        1,
        "--usage-json",
        tmp_path / "nowhere" / "usage.json",
    )
    _clean(proc, out_dir, "--usage-json", "nowhere", "does not exist")


def test_an_output_folder_that_does_not_exist_is_named(sample_pcap, out_dir):
    target = out_dir / "missing" / "o.pcap"
    proc = _deliver(sample_pcap, "-o", target, "--workers", 1)
    _clean(proc, out_dir, str(target), "No such file or directory")


def test_a_device_is_not_called_an_empty_capture(out_dir):
    proc = _deliver("/dev/zero", "-o", out_dir / "o.pcap", "--workers", 1)
    _clean(proc, out_dir, "/dev/zero: not a regular file")
    assert "empty" not in proc.stderr


def test_a_patterns_file_that_never_ends_is_refused(sample_pcap, out_dir):
    proc = _deliver(
        sample_pcap,
        "-o",
        out_dir / "o.pcap",
        "--workers",
        1,
        "--service",
        "inspect",
        "--param",
        "patterns_file=/dev/zero",
    )
    _clean(proc, out_dir, "patterns_file", "/dev/zero", "not a regular file")


def test_local_workers_are_capped(sample_pcap, tmp_path, caplog):
    import os

    cap = max(8, 4 * (os.cpu_count() or 1))
    d = Delivery(str(sample_pcap), str(tmp_path / "o.pcap"), DeliveryOptions(workers=100_000))
    with caplog.at_level(logging.WARNING, logger="engine.delivery.deliver"):
        assert d._local_workers() == cap
    assert f"starting {cap}" in caplog.text


def test_a_worker_with_a_bad_endpoint_says_so():
    proc = subprocess.run(
        pktx_cmd("worker", "--connect", "http://127.0.0.1:80", "--max-idle", 1),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "cannot connect to http://127.0.0.1:80" in proc.stderr, proc.stderr
