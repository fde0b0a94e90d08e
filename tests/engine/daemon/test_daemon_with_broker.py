"""``pktx daemon`` against ``pktx broker serve``, both real processes on loopback: a job awarded
to the provider is claimed, delivered and reported; the daemon SIGKILLed and restarted again
and again (and the broker restarted too) still delivers every packet once and reports what it
delivered once; SIGTERM drains; a daemon paused past its lease loses the job to another and
its late calls are refused; another provider's key sees nothing; a stream to a ``zmq://``
receiver resumes exactly after SIGKILLs, one to ``udp://`` from the last usage record. The
output is read back with dpkt and compared with the input."""

from __future__ import annotations

import random
import signal
import time
from datetime import datetime

import pytest
from locations import need_corpus

from benchmarks.node_world import BrokerProcess, Daemon, market, read_packets


@pytest.fixture
def world(tmp_path):
    corpus = need_corpus()
    broker = BrokerProcess(tmp_path / "broker").start()
    m = market(broker, tmp_path / "files", corpus / "dpkt" / "http.pcap")
    yield broker, m
    m.close()
    broker.stop()


@pytest.mark.parametrize("standby", [True, False], ids=["spare", "no-standby"])
def test_an_awarded_job_is_claimed_delivered_and_reported_once(world, tmp_path, standby):
    _, m = world
    extra = () if standby else ("--no-standby",)
    daemon = Daemon(m, tmp_path / "d1", extra=extra).start()
    try:
        request = m.request(sink="out/one.pcap")
        job = m.wait_job(request["id"], "done")
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
    # Delivered by the daemon's spare delivery process, or started for it with --no-standby.
    assert ("the spare started ahead" in daemon.log()) == standby, daemon.log()
    assert not (tmp_path / "d1" / "state" / "standby.log").exists() or standby
    assert read_packets(m.files / "out" / "one.pcap") == m.packets
    events = [e["event"] for e in job["events"]]
    assert events[:3] == ["claim", "start", "complete"], job["events"]
    usage = m.usage(job["id"])
    delivered = sum(map(len, m.packets))
    assert usage["bytes_out"] == delivered and usage["packets_out"] == len(m.packets)
    # The final report went in with ``complete``, one call and one transaction: one time.
    assert usage["reports"] == 1
    assert datetime.fromisoformat(usage["usage_at"]) == datetime.fromisoformat(
        job["events"][2]["at"]
    ), (usage, job["events"])
    assert job["measured"]["bytes"] == delivered
    assert "NODE_KEY" not in daemon.log() and m.provider_token not in daemon.log()


def test_sigkill_and_restarts_deliver_every_packet_once_and_bill_it_once(world, tmp_path):
    broker, m = world
    rng = random.Random(20261130)
    # Slow enough that most runs are cut short: about 3 s of shaping for the 25 KB file.
    request = m.request(sink="out/chaos.pcap", max_rate_bps=80_000)
    daemon = Daemon(m, tmp_path / "d1", lease=5).start()
    cycles = 0
    try:
        while cycles < 20:
            time.sleep(rng.uniform(0.2, 2.5))
            assert daemon.proc.poll() is None, daemon.log()[-3000:]  # it never exits by itself
            daemon.kill()
            cycles += 1
            if cycles % 7 == 0:  # the broker goes too, and comes back
                broker.stop(signal.SIGKILL)
                broker.start()
            daemon.start()
        job = m.wait_job(request["id"], "done", timeout=240)
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait()
    assert read_packets(m.files / "out" / "chaos.pcap") == m.packets
    leftovers = [p.name for p in (m.files / "out").iterdir() if p.name != "chaos.pcap"]
    assert leftovers == []
    usage = m.usage(job["id"])
    assert usage["bytes_out"] == sum(map(len, m.packets))
    claims = [e for e in job["events"] if e["event"] == "claim"]
    assert len(claims) >= 1 and job["status"] == "done"


def test_sigterm_hands_back_a_job_that_cannot_finish_in_the_grace(world, tmp_path):
    _, m = world
    request = m.request(sink="out/slow.pcap", max_rate_bps=8_000)  # ~25 s
    daemon = Daemon(m, tmp_path / "d1", grace=1).start()
    m.wait_job(request["id"], "running", timeout=60)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.log()
    job = m.job_of(request["id"])
    assert job["status"] == "queued" and job["events"][-1]["event"] == "handback", job
    assert not (m.files / "out" / "slow.pcap").exists()


def test_a_paused_daemon_loses_its_lease_and_its_late_calls_are_refused(world, tmp_path):
    _, m = world
    request = m.request(sink="out/paused.pcap", max_rate_bps=40_000)  # ~6 s
    first = Daemon(m, tmp_path / "d1", name="node-1", lease=5).start()
    m.wait_job(request["id"], "running", timeout=60)
    first.signal(signal.SIGSTOP)
    second = Daemon(m, tmp_path / "d2", name="node-2", lease=5).start()
    try:
        job = m.wait_job(request["id"], "done", timeout=120)
        first.signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while "lease is lost" not in first.log():
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.2)
    finally:
        for d in (first, second):
            d.signal(signal.SIGCONT)
            d.signal(signal.SIGTERM)
            d.wait()
    claims = [e for e in job["events"] if e["event"] == "claim"]
    assert [c["daemon"] for c in claims][-1] == "node-2"
    assert read_packets(m.files / "out" / "paused.pcap") == m.packets
    assert m.usage(job["id"])["bytes_out"] == sum(map(len, m.packets))


def _block(m, seconds_to_start: float, seconds_long: float, **body) -> dict:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(seconds=seconds_to_start)
    r = m.user.post(
        "/v1/requests",
        json={
            "services": ["identity"],
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(seconds=seconds_long)).isoformat(),
            "max_rate_bps": 100_000_000,
            **body,
        },
    )
    assert r.status_code == 201 and r.json()["status"] == "served", r.text
    return r.json()


def test_a_block_is_delivered_from_its_start_and_a_live_source_stops_at_its_end(world, tmp_path):
    """A job claimed before its block starts waits for ``starts_at`` (its lease renewed
    meanwhile); a live source is stopped at ``ends_at``, what it took delivered and the job
    completed with it."""
    import socket
    from datetime import datetime

    from locations import free_port

    _, m = world
    port = free_port()
    request = _block(m, 4, 5, source=f"udp://127.0.0.1:{port}", sink="out/live.pcap")
    daemon = Daemon(m, tmp_path / "d1", lease=5).start()
    try:
        m.wait_job(request["id"], "claimed", timeout=30)
        job = m.wait_job(request["id"], "running", timeout=30)
        started = next(e["at"] for e in job["events"] if e["event"] == "start")
        assert datetime.fromisoformat(started) >= datetime.fromisoformat(request["starts_at"])
        time.sleep(1)  # the source is bound; the device sends
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for packet in m.packets[:20]:
                tx.sendto(packet, ("127.0.0.1", port))
                time.sleep(0.01)
        job = m.wait_job(request["id"], "done", timeout=60)
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, daemon.log()
    assert "its block ended" in daemon.log()
    received = read_packets(m.files / "out" / "live.pcap")
    assert received == m.packets[:20] and job["measured"]["packets"] == 20
    assert datetime.fromisoformat(job["events"][-1]["at"]) >= datetime.fromisoformat(
        request["ends_at"]
    )


def test_rates_the_broker_lowers_while_a_job_runs_are_applied(world, tmp_path):
    """A bandwidth grant withdrawn lowers the job's max rate in its spec; the daemon reads it
    with its next heartbeat and delivers under it (a file afresh: the output appears once)."""
    import json
    import sqlite3

    broker, m = world
    request = m.request(sink="out/lowered.pcap", max_rate_bps=60_000)  # ~4 s
    daemon = Daemon(m, tmp_path / "d1", lease=5).start()
    try:
        job = m.wait_job(request["id"], "running", timeout=60)
        db = sqlite3.connect(broker.folder / "broker.sqlite3")
        try:  # what broker.bandwidth.withdraw does to a job's spec
            with db:
                db.execute(
                    "UPDATE delivery_jobs SET spec = ? WHERE id = ?",
                    (json.dumps({**job["spec"], "max_rate_bps": 40_000}), job["id"]),
                )
        finally:
            db.close()
        job = m.wait_job(request["id"], "done", timeout=120)
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, daemon.log()
    assert "changed its rates to max_rate_bps 40000" in daemon.log()
    assert daemon.log().count(f"job {job['id']}: delivering") == 2  # again, under 40 kbit/s
    assert read_packets(m.files / "out" / "lowered.pcap") == m.packets
    assert m.usage(job["id"])["bytes_out"] == sum(map(len, m.packets))


def test_sigkills_resume_a_stream_to_a_zmq_receiver_and_bill_it_once(world, tmp_path):
    """A job from a file to a ``zmq://`` receiver (``pktx deliver zmq://...`` writing a file):
    the daemon SIGKILLed mid-stream again and again; each run resumes the stream ``job-ID``
    where the receiver stands, so the receiver writes every packet once, in order, and the
    broker's cumulative usage counts each once."""
    import json
    import subprocess
    import sys

    from locations import ROOT, free_port

    _, m = world
    port = free_port()
    out = tmp_path / "received.pcap"
    receiver_log = tmp_path / "receiver.log"
    with open(receiver_log, "wb") as log:
        receiver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "deliver",
                f"zmq://127.0.0.1:{port}",
                "-o",
                str(out),
                "--workers",
                "1",
                "--idle-timeout",
                "120",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stderr=log,
        )
    rng = random.Random(20261130)
    request = m.request(sink=f"zmq://127.0.0.1:{port}", max_rate_bps=20_000)  # ~10 s
    daemon = Daemon(m, tmp_path / "d1", lease=5).start()
    try:
        job_id = m.wait_job(request["id"], "running", timeout=60)["id"]
        for _ in range(3):  # a restarted daemon takes a second or two to resume the job
            time.sleep(rng.uniform(2.5, 4.0))
            daemon.kill()
            daemon.start()
        job = m.wait_job(request["id"], "done", timeout=120)
        assert receiver.wait(60) == 0, receiver_log.read_text()
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait()
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert read_packets(out) == m.packets
    record = json.loads(
        (tmp_path / "d1" / "state" / "jobs" / str(job_id) / "usage.json").read_text()
    )
    assert 0 < record["resumed_at"]["position"] < len(m.packets), record["resumed_at"]
    usage = m.usage(job["id"])
    assert usage["bytes_out"] == sum(map(len, m.packets))
    assert usage["packets_out"] == len(m.packets)
    assert job["measured"]["bytes"] == sum(map(len, m.packets))


def test_sigkills_resume_a_file_into_udp_from_the_last_record_and_bill_it_once(world, tmp_path):
    """A file into ``udp://``: no receiver can say where it stands, so each run starts where
    the last run's usage record says it stood. Datagrams sent after that record come again
    (a restart goes back a little, never forward), none is lost, and the broker's usage
    counts each packet once."""
    import json
    import socket
    import threading

    _, m = world
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    got: list[bytes] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                got.append(rx.recv(65536))
            except TimeoutError:
                continue

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    rng = random.Random(7)
    # ~14 s after the token bucket's first burst; a run writes its first record a second
    # after it starts delivering, so each run must live a few seconds to leave one.
    request = m.request(sink=f"udp://127.0.0.1:{rx.getsockname()[1]}", max_rate_bps=8_000)
    daemon = Daemon(m, tmp_path / "d1", lease=5).start()
    try:
        job_id = m.wait_job(request["id"], "running", timeout=60)["id"]
        for _ in range(3):
            time.sleep(rng.uniform(4.0, 5.5))
            daemon.kill()
            daemon.start()
        job = m.wait_job(request["id"], "done", timeout=120)
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait()
        time.sleep(0.5)
        done.set()
        reader.join(5)
        rx.close()
    at = 0  # the next packet of the source due; a restart may go back, never forward
    for datagram in got:
        if at < len(m.packets) and datagram == m.packets[at]:
            at += 1
            continue
        back = [i for i in range(at) if m.packets[i] == datagram]
        assert back, f"datagram {len(got)} is not a packet sent before (a gap)"
        at = back[-1] + 1
    assert at == len(m.packets)
    record = json.loads(
        (tmp_path / "d1" / "state" / "jobs" / str(job_id) / "usage.json").read_text()
    )
    assert 0 < record["resumed_at"]["position"] < len(m.packets), record["resumed_at"]
    usage = m.usage(job["id"])
    assert usage["bytes_out"] == sum(map(len, m.packets))
    assert usage["packets_out"] == len(m.packets)
