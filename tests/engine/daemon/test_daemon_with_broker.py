"""``pktx daemon`` against ``pktx broker serve``, both real processes on loopback: a job awarded
to the provider is claimed, delivered and reported; the daemon SIGKILLed and restarted again
and again (and the broker restarted too) still delivers every packet once and reports what it
delivered once; SIGTERM drains; a daemon paused past its lease loses the job to another and
its late calls are refused; another provider's key sees nothing. The output is read back with
dpkt and compared with the input."""

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


def test_an_awarded_job_is_claimed_delivered_and_reported_once(world, tmp_path):
    _, m = world
    daemon = Daemon(m, tmp_path / "d1").start()
    try:
        request = m.request(sink="out/one.pcap")
        job = m.wait_job(request["id"], "done")
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()
    assert read_packets(m.files / "out" / "one.pcap") == m.packets
    events = [e["event"] for e in job["events"]]
    assert events[:3] == ["claim", "start", "complete"], job["events"]
    usage = m.usage(job["id"])
    delivered = sum(map(len, m.packets))
    assert usage["bytes_out"] == delivered and \
        usage["packets_out"] == len(m.packets)
    # The final report went in with ``complete``, one call and one transaction: one time.
    assert usage["reports"] == 1
    assert datetime.fromisoformat(usage["usage_at"]) == datetime.fromisoformat(
        job["events"][2]["at"]), (usage, job["events"])
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
            assert daemon.proc.poll() is None, daemon.log()[-3000:]   # it never exits by itself
            daemon.kill()
            cycles += 1
            if cycles % 7 == 0:            # the broker goes too, and comes back
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
    request = m.request(sink="out/slow.pcap", max_rate_bps=8_000)   # ~25 s
    daemon = Daemon(m, tmp_path / "d1", grace=1).start()
    m.wait_job(request["id"], "running", timeout=60)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0, daemon.log()
    job = m.job_of(request["id"])
    assert job["status"] == "queued" and job["events"][-1]["event"] == "handback", job
    assert not (m.files / "out" / "slow.pcap").exists()


def test_a_paused_daemon_loses_its_lease_and_its_late_calls_are_refused(world, tmp_path):
    _, m = world
    request = m.request(sink="out/paused.pcap", max_rate_bps=40_000)   # ~6 s
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
    r = m.user.post("/v1/requests", json={
        "services": ["identity"], "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(seconds=seconds_long)).isoformat(),
        "max_rate_bps": 100_000_000, **body})
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
        time.sleep(1)                           # the source is bound; the device sends
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
        request["ends_at"])


def test_rates_the_broker_lowers_while_a_job_runs_are_applied(world, tmp_path):
    """A bandwidth grant withdrawn lowers the job's max rate in its spec; the daemon reads it
    with its next heartbeat and delivers under it (a file afresh: the output appears once)."""
    import json
    import sqlite3

    broker, m = world
    request = m.request(sink="out/lowered.pcap", max_rate_bps=60_000)   # ~4 s
    daemon = Daemon(m, tmp_path / "d1", lease=5).start()
    try:
        job = m.wait_job(request["id"], "running", timeout=60)
        db = sqlite3.connect(broker.folder / "broker.sqlite3")
        try:  # what broker.bandwidth.withdraw does to a job's spec
            with db:
                db.execute("UPDATE delivery_jobs SET spec = ? WHERE id = ?",
                           (json.dumps({**job["spec"], "max_rate_bps": 40_000}), job["id"]))
        finally:
            db.close()
        job = m.wait_job(request["id"], "done", timeout=120)
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, daemon.log()
    assert "changed its rates to max_rate_bps 40000" in daemon.log()
    assert daemon.log().count(f"job {job['id']}: delivering") == 2   # again, under 40 kbit/s
    assert read_packets(m.files / "out" / "lowered.pcap") == m.packets
    assert m.usage(job["id"])["bytes_out"] == sum(map(len, m.packets))
