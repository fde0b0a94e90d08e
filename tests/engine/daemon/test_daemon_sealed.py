"""Sealed service parameters end to end, all real processes on loopback: ``pktx daemon``
publishes its provider's sealing key; a user's request names ``encrypt.key``; its job waits
until the user seals the key with ``pktx broker seal-params``; the daemon opens it and delivers
through ``encrypt``; the output decrypts with the user's key (the engine's ``decrypt`` as the
oracle). The key is on no command line and in no starting environment (the delivery's
/proc/PID/cmdline and environ read while it runs; nor is the daemon's API key),
in no log (broker at debug, daemons), in no answer for anyone, in the daemon's state only as
ciphertext; another provider's key is refused (403). A tampered box, and a box sealed for
another award, fail their jobs with a clear reason; a daemon of the provider holding another
key takes no sealed job, one given the provider's key file does."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import time

import httpx
import pytest
from locations import need_corpus

from benchmarks.node_world import (
    BrokerProcess,
    Daemon,
    market,
    pktx,
    provider_market,
    read_packets,
)
from engine.daemon.sealing import binding, seal

KEY_HEX = "c0ffee" * 10 + "f00d"  # the user's AES-256 key: 32 bytes
KEY_B64 = base64.b64encode(bytes.fromhex(KEY_HEX)).decode()


@pytest.fixture
def world(tmp_path):
    corpus = need_corpus()
    capture = corpus / "dpkt" / "http.pcap"
    broker = BrokerProcess(tmp_path / "broker", log_level="debug").start()
    m = market(broker, tmp_path / "files", capture, services=("identity", "encrypt"))
    other = provider_market(
        m.url, m.admin, "other", tmp_path / "files-b", capture, services=("identity", "encrypt")
    )
    yield broker, m, other
    other.user.close()
    m.close()
    broker.stop()


def _token(client: httpx.Client) -> str:
    return client.headers["Authorization"].split(" ", 1)[1]


def _published(m, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        r = m.user.get(f"/v1/providers/{m.provider_id}/sealing-key")
        if r.status_code == 200:
            return r.json()["public_key"]
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)


def _sealed_request(m, sink: str, **extra) -> tuple[dict, int]:
    request = m.request(sink=sink, services=("encrypt",), sealed_params=["encrypt.key"], **extra)
    award = next(
        a for a in m.user.get("/v1/awards").json()["items"] if a["request_id"] == request["id"]
    )
    return request, award["id"]


def _seal_cli(m, award_id: int, *argv: str, env: dict | None = None):
    return pktx(
        "broker",
        "seal-params",
        "--broker",
        m.url,
        "--key-env",
        "USER_KEY",
        "--award",
        str(award_id),
        *argv,
        env={**os.environ, "USER_KEY": _token(m.user), **(env or {})},
    )


def _delivery_pid(daemon: Daemon, job_id: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(rf"job {job_id}: delivering .* \(pid (\d+)[,)]", daemon.log())
        if found:
            return int(found.group(1))
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.05)


def _stop(*daemons: Daemon) -> None:
    for d in daemons:
        d.signal(signal.SIGTERM)
    for d in daemons:
        assert d.wait(60) == 0, d.log()[-3000:]


def test_a_key_sealed_by_the_user_encrypts_the_delivery_and_no_one_else_sees_it(world, tmp_path):
    broker, m, other = world
    daemon = Daemon(m, tmp_path / "d1").start()
    theirs = Daemon(other, tmp_path / "d2", name="other-node").start()
    try:
        _published(m)
        # ~3 s of shaping for the 25 KB file: the delivery is looked at while it runs.
        request, award_id = _sealed_request(m, "out/enc.pcap", max_rate_bps=80_000)
        job_id = m.job_of(request["id"])["id"]
        time.sleep(1.5)
        assert m.job_of(request["id"])["status"] == "queued"  # waiting for its key

        pinned = _seal_cli(
            m,
            award_id,
            "--param",
            "encrypt.key_env=SECRET",
            "--expect-fingerprint",
            "0" * 16,
            env={"SECRET": KEY_HEX},
        )
        assert pinned.returncode == 1 and "nothing was sealed" in pinned.stderr
        sealed = _seal_cli(
            m, award_id, "--param", "encrypt.key_env=SECRET", env={"SECRET": KEY_HEX}
        )
        assert sealed.returncode == 0, sealed.stderr
        assert json.loads(sealed.stdout)["sealed"] is True
        assert KEY_HEX not in sealed.stdout + sealed.stderr

        pid = _delivery_pid(daemon, job_id)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except FileNotFoundError:
            pytest.fail("the delivery ended before its command line was read")
        # The daemon's spare delivery process took the job (started before it, with no
        # secret): the key came down its pipe, so it is in neither its command line nor the
        # environment it started with; the daemon's own API key is not there either.
        assert f"job {job_id}: delivering" in daemon.log()
        assert "the spare started ahead" in daemon.log(), daemon.log()[-3000:]
        assert b"engine.daemon.standby" in cmdline
        for secret in (KEY_HEX, KEY_B64, m.provider_token):
            assert secret.encode() not in cmdline and secret.encode() not in environ
        assert b"NODE_KEY=" not in environ
        job = m.wait_job(request["id"], "done", timeout=120)
    finally:
        _stop(daemon, theirs)

    # The output is the input encrypted under the user's key: decrypt gives the input back.
    encrypted = read_packets(m.files / "out" / "enc.pcap")
    assert len(encrypted) == len(m.packets) and encrypted != m.packets
    done = pktx(
        "deliver",
        str(m.files / "out" / "enc.pcap"),
        "-o",
        str(tmp_path / "dec.pcap"),
        "--service",
        "decrypt",
        "--param",
        "decrypt.key_env=SECRET",
        "--workers",
        "1",
        "-q",
        env={**os.environ, "SECRET": KEY_HEX},
    )
    assert done.returncode == 0, done.stderr
    assert read_packets(tmp_path / "dec.pcap") == m.packets
    assert job["events"][0]["event"] == "claim"

    # Another provider's key: refused the claim, the job and the award's sealing.
    outsider = httpx.Client(
        base_url=m.url, timeout=30, headers={"Authorization": f"Bearer {other.provider_token}"}
    )
    with outsider:
        assert (
            outsider.post(
                f"/v1/providers/{m.provider_id}/jobs/claim",
                json={"daemon": "x", "wait_s": 0, "lease_s": 30},
            ).status_code
            == 403
        )
        assert outsider.get(f"/v1/jobs/{job_id}").status_code == 403
        assert outsider.get(f"/v1/awards/{award_id}/sealed-params").status_code == 403
    assert other.user.get(f"/v1/awards/{award_id}/sealed-params").status_code == 403

    # The key in no log, no answer; the box (ciphertext) in no answer either.
    db = sqlite3.connect(broker.folder / "broker.sqlite3")
    try:
        box = base64.b64encode(db.execute("SELECT box FROM sealed_params").fetchone()[0]).decode()
    finally:
        db.close()
    secrets = (KEY_HEX, KEY_HEX.upper(), KEY_B64, box)
    logs = {
        "broker": (broker.folder / "broker.log").read_text(errors="replace"),
        "daemon": daemon.log(),
        "other daemon": theirs.log(),
    }
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"in the {name}'s log"
    assert f"job {job_id}" not in theirs.log()
    for client in (m.admin, m.user):
        for path in (
            f"/v1/jobs/{job_id}",
            f"/v1/awards/{award_id}",
            "/v1/awards",
            f"/v1/requests/{request['id']}",
            f"/v1/awards/{award_id}/sealed-params",
            f"/v1/providers/{m.provider_id}/jobs",
        ):
            text = client.get(path).text
            assert not any(secret in text for secret in secrets), path
    # The daemon's state holds the box, never what is in it.
    for path in (tmp_path / "d1" / "state").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert bytes.fromhex(KEY_HEX) not in data and KEY_HEX.encode() not in data, path
    key_file = tmp_path / "d1" / "state" / "sealing.key"
    assert key_file.stat().st_mode & 0o077 == 0


def test_a_tampered_box_or_one_sealed_for_another_award_fails_its_job_cleanly(world, tmp_path):
    """Three daemons of the provider: the first publishes its key; the second holds another
    key and takes no sealed job; the third shares the first's key file and may."""
    _, m, _ = world
    first = Daemon(m, tmp_path / "d1", name="node-1").start()
    daemons = [first]
    try:
        public = _published(m)
        daemons.append(Daemon(m, tmp_path / "d2", name="node-2").start())
        daemons.append(
            Daemon(
                m,
                tmp_path / "d3",
                name="node-3",
                extra=("--sealing-key", str(tmp_path / "d1" / "state" / "sealing.key")),
            ).start()
        )
        for d, says in (
            (daemons[1], "takes no jobs with sealed parameters"),
            (daemons[2], "published for provider"),
        ):
            deadline = time.monotonic() + 60
            while says not in d.log():
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.1)
        tampered_request, tampered_award = _sealed_request(m, "out/t.pcap")
        moved_request, moved_award = _sealed_request(m, "out/m.pcap")
        box = bytearray(
            seal(public, {"encrypt.key": KEY_HEX}, binding(tampered_award, m.provider_id))
        )
        intact = bytes(box)
        box[-1] ^= 0x01
        for award_id, b in ((tampered_award, bytes(box)), (moved_award, intact)):
            r = m.user.put(
                f"/v1/awards/{award_id}/sealed-params",
                json={"sealed_to": public, "box": base64.b64encode(b).decode()},
            )
            assert r.status_code == 200, r.text
        jobs = [
            m.wait_job(r["id"], "failed", timeout=60) for r in (tampered_request, moved_request)
        ]
    finally:
        _stop(*daemons)
    for job in jobs:
        fail = next(e for e in job["events"] if e["event"] == "fail")
        assert "do not open with this provider's sealing key for this award" in fail["detail"]
        assert fail["daemon"] in ("node-1", "node-3")
    for d in daemons:
        assert "Traceback" not in d.log() and KEY_HEX not in d.log()
    assert not (m.files / "out" / "t.pcap").exists() and not (m.files / "out" / "m.pcap").exists()
