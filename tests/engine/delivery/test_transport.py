"""Transport: CURVE admission, UDP in and out, two chained nodes, rate shaping and metering."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time

import pytest
from delivery_support import free_port, pktx_cmd, run_in_thread, start_worker, stop, wait_for

from engine.capture.reader import read_capture
from engine.delivery.curve import generate_keys
from engine.delivery.deliver import Delivery, DeliveryOptions, deliver


def test_curve_admits_the_right_key_and_refuses_a_wrong_one(sample_pcap, tmp_path, caplog):
    good, bad = tmp_path / "keys", tmp_path / "other"
    generate_keys(good)
    generate_keys(bad)
    # The impostor trusts the right server key but holds a key pair nobody authorised.
    (bad / "server.key").write_bytes((good / "server.key").read_bytes())
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "o.pcap"
    opts = DeliveryOptions(
        workers=0,
        bind=endpoint,
        curve_dir=str(good),
        services="slow",
        params=["ms=5"],
        segment_packets=1000,
    )
    delivery = Delivery(str(sample_pcap), str(out), opts)
    log_path = tmp_path / "impostor.log"
    impostor_log = open(log_path, "wb")  # noqa: SIM115 - the child writes it
    honest = None
    with caplog.at_level(logging.WARNING, logger="engine.delivery.curve"):
        runner, box = run_in_thread(delivery)  # the dispatcher waits for a worker it admits
        impostor = start_worker(endpoint, "--curve", bad, "--name", "impostor", stderr=impostor_log)
        try:
            wait_for(
                lambda: b"CURVE authentication failed" in log_path.read_bytes(),
                60,
                "the impostor to report its refusal",
            )
            honest = start_worker(endpoint, "--curve", good, "--name", "honest")
            runner.join(120)
            assert "error" not in box, box.get("error")
            assert set(box["usage"]["workers"]) == {"honest"}
            assert out.read_bytes() == sample_pcap.read_bytes()
            assert any("not authorised" in r.getMessage() for r in caplog.records)
        finally:
            stop(impostor)
            impostor_log.close()
            if honest is not None:
                stop(honest)


def test_curve_without_keys_is_refused(sample_pcap, tmp_path):
    keys = tmp_path / "keys"
    generate_keys(keys)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    plain = start_worker(endpoint, "--name", "plain")
    try:
        opts = DeliveryOptions(workers=0, bind=endpoint, curve_dir=str(keys), wait_workers_s=3)
        with pytest.raises(Exception, match="0 of 1 workers joined"):
            Delivery(str(sample_pcap), str(tmp_path / "o.pcap"), opts).run()
    finally:
        stop(plain)


def test_udp_in_and_out(tmp_path):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    in_port = free_port()
    n = 1500
    payloads = [bytes([i % 251]) * (60 + i % 900) + i.to_bytes(4, "big") for i in range(n)]
    opts = DeliveryOptions(workers=1, count=n, segment_ms=5.0, idle_timeout=20)
    delivery = Delivery(
        f"udp://127.0.0.1:{in_port}", f"udp://127.0.0.1:{rx.getsockname()[1]}", opts
    )
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("usage", delivery.run()), daemon=True)
    t.start()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wait_for(
        lambda: delivery.dispatcher is not None and delivery.dispatcher.workers,
        60,
        "the worker to join",
    )
    for i, p in enumerate(payloads):
        tx.sendto(p, ("127.0.0.1", in_port))
        if i % 100 == 99:
            time.sleep(0.002)  # loopback UDP drops what a full socket buffer cannot hold
    got = [rx.recv(65536) for _ in range(n)]
    t.join(60)
    assert got == payloads
    assert box["usage"]["packets_out"] == n


def test_two_chained_nodes(sample_pcap, tmp_path):
    port = free_port()
    out = tmp_path / "o.pcap"
    downstream = subprocess.Popen(
        pktx_cmd(
            "deliver",
            f"zmq://127.0.0.1:{port}",
            "-o",
            out,
            "--workers",
            1,
            "--idle-timeout",
            60,
            "--format",
            "pcap",
            "--ts-resolution",
            "ns",
            "-q",
        ),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        usage = deliver(str(sample_pcap), f"zmq://127.0.0.1:{port}", workers=1)
        assert usage["packets_out"] == 20_000
        assert downstream.wait(60) == 0, downstream.stderr.read().decode()
        assert out.read_bytes() == sample_pcap.read_bytes()
    finally:
        stop(downstream)


def test_max_rate_shapes_the_output(sample_pcap, tmp_path):
    total_bits = read_capture(sample_pcap).nbytes * 8
    rate = total_bits // 2  # the stream must take about two seconds
    usage = deliver(
        str(sample_pcap),
        str(tmp_path / "o.pcap"),
        workers=1,
        max_rate_bps=rate,
        min_rate_bps=rate // 4,
    )
    assert usage["duration_ns"] >= 1.7e9
    # No second carried more than the rate (plus one burst of slack).
    assert max(usage["rate_series_bps"]) <= rate * 1.1
    assert usage["min_rate_windows_met"] >= 1


def test_min_rate_misses_are_reported(sample_pcap, tmp_path):
    usage = deliver(str(sample_pcap), str(tmp_path / "o.pcap"), workers=1, min_rate_bps=10**15)
    assert usage["min_rate_windows_missed"] >= 1
    assert usage["min_rate_windows_met"] == 0


def test_a_live_source_flushes_a_part_segment_when_its_time_is_up(tmp_path):
    # Five datagrams, then silence: with a 50 ms window they must come out while the stream is
    # still open (they would otherwise wait for a full segment that never comes).
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(20)
    in_port = free_port()
    opts = DeliveryOptions(workers=1, segment_ms=50.0, segment_packets=1000, count=10**6)
    delivery = Delivery(
        f"udp://127.0.0.1:{in_port}", f"udp://127.0.0.1:{rx.getsockname()[1]}", opts
    )
    t = threading.Thread(target=lambda: delivery.run(), daemon=True)
    t.start()
    try:
        wait_for(
            lambda: delivery.dispatcher is not None and delivery.dispatcher.workers,
            60,
            "the worker to join",
        )
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = [b"tick %d" % i for i in range(5)]
        for p in sent:
            tx.sendto(p, ("127.0.0.1", in_port))
        assert [rx.recv(100) for _ in sent] == sent
        assert t.is_alive(), "the stream ended instead of flushing on time"
    finally:
        delivery.source.stop()
        t.join(30)


def test_a_zmq_sink_with_no_receiver_fails_and_bills_nothing(sample_pcap, tmp_path):
    port = free_port()
    usage_path = tmp_path / "usage.json"
    proc = subprocess.run(
        pktx_cmd(
            "deliver",
            sample_pcap,
            "-o",
            f"zmq://127.0.0.1:{port}",
            "--workers",
            1,
            "--downstream-timeout",
            2,
            "--usage-json",
            usage_path,
            "-q",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    assert "acknowledged 0 of" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not usage_path.exists()


def test_a_late_receiver_gets_everything_and_only_acknowledged_packets_are_billed(
    sample_pcap, tmp_path
):
    port = free_port()
    out = tmp_path / "o.pcap"
    opts = DeliveryOptions(workers=1, downstream_timeout_s=60)
    upstream = Delivery(str(sample_pcap), f"zmq://127.0.0.1:{port}", opts)
    t, box = run_in_thread(upstream)
    downstream = None
    try:
        # The upstream is sending into the void: nothing may be counted as delivered yet.
        wait_for(lambda: upstream.meter.segments >= 2, 60, "the upstream to send")
        assert upstream.meter.packets_out == 0
        downstream = subprocess.Popen(
            pktx_cmd(
                "deliver",
                f"zmq://127.0.0.1:{port}",
                "-o",
                out,
                "--workers",
                1,
                "--idle-timeout",
                60,
                "--format",
                "pcap",
                "--ts-resolution",
                "ns",
                "-q",
            ),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        t.join(120)
        assert "error" not in box, box.get("error")
        assert box["usage"]["packets_out"] == 20_000
        assert downstream.wait(60) == 0, downstream.stderr.read().decode()
        assert out.read_bytes() == sample_pcap.read_bytes()
    finally:
        if downstream is not None:
            stop(downstream)
