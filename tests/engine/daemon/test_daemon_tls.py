"""The daemon and the broker over HTTPS with a private CA: ``pktx broker serve --tls-cert
--tls-key`` and ``pktx daemon --ca-bundle`` deliver a job; a daemon that does not trust the
broker's certificate stops at once with a message naming it (exit 1, no traceback, no retry
loop); a broker asked to listen beyond loopback without TLS refuses to start."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from locations import ROOT, need_corpus
from tls_support import private_ca

from benchmarks.node_world import BrokerProcess, Daemon, market, pktx, read_packets
from engine.daemon.broker_client import trusting


@pytest.fixture
def tls_world(tmp_path):
    corpus = need_corpus()
    certs = private_ca(tmp_path / "pki")
    broker = BrokerProcess(tmp_path / "broker", tls=(str(certs.cert), str(certs.key)))
    broker.start(verify=trusting(str(certs.ca)))
    m = market(
        broker, tmp_path / "files", corpus / "dpkt" / "http.pcap", verify=trusting(str(certs.ca))
    )
    assert m.url.startswith("https://127.0.0.1:")
    yield broker, m, certs
    m.close()
    broker.stop()


def test_a_job_is_delivered_over_https_with_a_private_ca(tls_world, tmp_path):
    _, m, certs = tls_world
    daemon = Daemon(m, tmp_path / "d1", extra=("--ca-bundle", str(certs.ca))).start()
    try:
        request = m.request(sink="out/tls.pcap")
        job = m.wait_job(request["id"], "done")
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
    assert read_packets(m.files / "out" / "tls.pcap") == m.packets
    assert m.usage(job["id"])["bytes_out"] == sum(map(len, m.packets))


def test_a_daemon_that_does_not_trust_the_certificate_exits_with_a_clear_error(tls_world, tmp_path):
    _, m, _ = tls_world
    daemon = Daemon(m, tmp_path / "d1").start()  # the system's CAs only
    try:
        code = daemon.wait(60)  # it must not retry for ever
    finally:
        daemon.kill()
    log = daemon.log()
    assert code == 1, log
    assert "Traceback" not in log, log
    assert "pktx: error:" in log and "certificate" in log and m.url in log, log
    assert "--ca-bundle" in log, log
    assert m.provider_token not in log


@pytest.mark.parametrize("bundle", ["nope.pem", "garbage.pem"])
def test_a_ca_bundle_that_is_missing_or_not_pem_is_named(tls_world, tmp_path, bundle):
    _, m, _ = tls_world
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    daemon = Daemon(m, tmp_path / "d1", extra=("--ca-bundle", str(tmp_path / bundle)))
    code = daemon.start().wait(60)
    log = daemon.log()
    assert code == 1 and "--ca-bundle" in log and bundle in log, log
    assert "Traceback" not in log


def test_the_broker_refuses_plain_http_beyond_loopback(tmp_path):
    done = pktx(
        "broker",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 'b.sqlite3'}",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
    )
    assert done.returncode in (1, 2), done
    assert "0.0.0.0" in done.stderr and "--tls-cert" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_daemon_refuses_plain_http_beyond_loopback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "daemon",
            "--broker",
            "http://192.0.2.1:8040",
            "--key-env",
            "NODE_KEY",
            "--state",
            str(tmp_path / "st"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"NODE_KEY": "pktx_not_sent", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done
    assert "plain HTTP" in done.stderr and "https://" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "pktx_not_sent" not in done.stderr


def test_https_to_a_plain_http_broker_is_a_clear_error_not_a_retry_for_ever(tmp_path):
    """It used to be taken for a broker away (a TLS handshake answered in plain HTTP) and
    retried with back-off for ever, a warning now and then."""
    broker = BrokerProcess(tmp_path / "broker").start()
    try:
        m = market(broker, tmp_path / "files", need_corpus() / "dpkt" / "http.pcap")
        https = m.url.replace("http://", "https://")
        daemon = Daemon(m, tmp_path / "d1", broker_url=https).start()
        try:
            code = daemon.wait(60)
        finally:
            daemon.kill()
            m.close()
    finally:
        broker.stop()
    log = daemon.log()
    assert code == 1, log
    assert "pktx: error:" in log and "does not speak TLS" in log and https in log, log
    assert "Traceback" not in log and "away" not in log, log
