"""A provider's daemons share its jobs, and no other provider's daemon sees them: two daemons
of provider A (one job at a time each) deliver a burst of A's jobs between them, each job
claimed, delivered and completed exactly once, every output read back with dpkt equal to the
input; a daemon running with provider B's key meanwhile claims B's job and nothing of A's, and
B's key is refused A's claim outright (403); a user's key as a daemon's key is a clear error."""

from __future__ import annotations

import signal
from collections import Counter

import httpx
import pytest
from locations import need_corpus

from benchmarks.node_world import BrokerProcess, Daemon, market, provider_market, read_packets

JOBS = 8


@pytest.fixture
def two_providers(tmp_path):
    corpus = need_corpus()
    capture = corpus / "dpkt" / "http.pcap"
    broker = BrokerProcess(tmp_path / "broker").start()
    a = market(broker, tmp_path / "files-a", capture)
    b = provider_market(broker.url, a.admin, "other", tmp_path / "files-b", capture)
    yield broker, a, b
    b.user.close()
    a.close()
    broker.stop()


def _events(job: dict, event: str) -> list[dict]:
    return [e for e in job["events"] if e["event"] == event]


def test_two_daemons_share_a_providers_jobs_and_another_provider_sees_none(two_providers, tmp_path):
    _, a, b = two_providers
    daemons = [
        Daemon(a, tmp_path / f"a{i}", name=f"a-node-{i}", extra=("--max-jobs", "1")) for i in (1, 2)
    ]
    other = Daemon(b, tmp_path / "b1", name="b-node-1", extra=("--max-jobs", "1"))
    for d in (*daemons, other):
        d.start()
    try:
        # ~1 s of shaping each, so a job is still running when the next is claimed.
        requests = [a.request(sink=f"out/a{i}.pcap", max_rate_bps=200_000) for i in range(JOBS)]
        theirs = b.request(sink="out/b.pcap")
        jobs = [a.wait_job(r["id"], "done", timeout=180) for r in requests]
        their_job = b.wait_job(theirs["id"], "done", timeout=60)
    finally:
        for d in (*daemons, other):
            d.signal(signal.SIGTERM)
        for d in (*daemons, other):
            assert d.wait() == 0, d.log()[-3000:]
    delivered = sum(map(len, a.packets))
    by = Counter()
    for i, job in enumerate(jobs):
        claims, completes = _events(job, "claim"), _events(job, "complete")
        assert len(claims) == 1 and len(completes) == 1, job["events"]  # exactly once
        assert not _events(job, "lapse") and not _events(job, "handback"), job["events"]
        by[claims[0]["daemon"]] += 1
        assert read_packets(a.files / "out" / f"a{i}.pcap") == a.packets
        assert a.usage(job["id"])["bytes_out"] == delivered
    assert set(by) == {"a-node-1", "a-node-2"}, by  # both took some, only A's
    assert sum(by.values()) == JOBS
    assert [e["daemon"] for e in _events(their_job, "claim")] == ["b-node-1"]
    assert read_packets(b.files / "out" / "b.pcap") == b.packets
    assert not (b.files / "out" / "a0.pcap").exists()


def test_another_providers_key_is_refused_a_providers_claim(two_providers):
    _, a, b = two_providers
    with httpx.Client(
        base_url=a.url, timeout=30, headers={"Authorization": f"Bearer {b.provider_token}"}
    ) as as_b:
        r = as_b.post(
            f"/v1/providers/{a.provider_id}/jobs/claim",
            json={"daemon": "b-node", "wait_s": 0, "lease_s": 5},
        )
    assert r.status_code == 403, r.text


def test_another_providers_id_with_its_key_is_a_clear_error(two_providers, tmp_path):
    _, a, b = two_providers
    d = Daemon(b, tmp_path / "b1", extra=("--provider", str(a.provider_id))).start()
    code = d.wait(60)
    assert code == 1, d.log()
    assert f"--provider {a.provider_id}" in d.log() and "Traceback" not in d.log(), d.log()


def test_a_users_key_as_a_daemons_key_is_a_clear_error(two_providers, tmp_path):
    _, a, _ = two_providers
    user_key = a.user.headers["Authorization"].removeprefix("Bearer ")
    d = Daemon(a, tmp_path / "u1", env={"NODE_KEY": user_key}).start()
    try:
        code = d.wait(60)
    finally:
        d.kill()
    log = d.log()
    assert code == 1, log
    assert "pktx: error:" in log and "not a provider's key" in log, log
    assert "Traceback" not in log and user_key not in log
