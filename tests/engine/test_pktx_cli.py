"""The pktx command line, run as a user runs it: a real process, real files."""

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest
from locations import CORPUS


def pktx(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pktx {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"capture corpus not found at {CORPUS} (shared/ beside the project)")
    return path


def test_version_says_which_implementation():
    out = pktx("--version").stdout
    assert out.startswith("pktx ")
    assert ("compiled extensions" in out) or ("pure Python" in out)


def test_info_json_matches_dpkt(tmp_path):
    path = corpus("dpkt/http.pcap")
    info = json.loads(pktx("info", "--json", path).stdout)
    with open(path, "rb") as f:
        records = list(dpkt.pcap.Reader(f))
    assert info["format"] == "pcap"
    assert info["packets"] == len(records)
    assert info["captured_bytes"] == sum(len(buf) for _, buf in records)
    assert info["linktypes"] == {"EN10MB": len(records)}
    first_ts = records[0][0]
    assert abs(info["first_ts_ns"] / 1e9 - first_ts) < 1e-6


def test_info_on_a_refused_file_prints_one_line_and_fails():
    proc = pktx("info", corpus("libpcap/pcap-invalid-version-2.pcap"), check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("pktx: error")]
    assert len(lines) == 1
    assert "unsupported pcap savefile version 2.5" in lines[0]
    assert "Traceback" not in proc.stderr


def test_info_truncate_reports_damage_and_fails():
    proc = pktx(
        "info", "--json", "--errors", "truncate", corpus("dpkt/truncated_dns_2.pcap"), check=False
    )
    assert proc.returncode == 1
    info = json.loads(proc.stdout)
    assert info["packets"] == 1
    assert "cut short" in info["damage"]
    assert info["dropped_bytes"] == 7


def test_convert_round_trip(tmp_path):
    src = corpus("dpkt/http.pcap")
    ng = tmp_path / "h.pcapng"
    back = tmp_path / "h.pcap"
    pktx("convert", src, ng, "-q")
    pktx("convert", ng, back, "-q")
    assert json.loads(pktx("info", "--json", ng).stdout)["format"] == "pcapng"
    # pcap -> pcapng -> pcap at the same (microsecond) resolution is byte-identical apart from
    # the file header's snaplen/version fields, which dpkt does not care about: compare records.
    with open(src, "rb") as a, open(back, "rb") as b:
        assert list(dpkt.pcap.Reader(a)) == list(dpkt.pcap.Reader(b))


def test_convert_bad_input_leaves_no_output(tmp_path):
    out = tmp_path / "out.pcap"
    proc = pktx("convert", corpus("dpkt/truncated_dns_2.pcap"), out, check=False)
    assert proc.returncode == 1
    assert "cut short" in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_generate_then_info(tmp_path):
    out = tmp_path / "g.pcap"
    pktx("generate", out, "--packets", 5000, "--flows", 50, "--seed", 7, "-q")
    info = json.loads(pktx("info", "--json", out).stdout)
    assert info["packets"] == 5000
    with open(out, "rb") as f:
        assert sum(1 for _ in dpkt.pcap.Reader(f)) == 5000


def test_demo_plays_the_round_over_the_network_and_stops_its_processes(tmp_path):
    for _run in range(2):  # a second run in the same folder starts a fresh market
        proc = pktx("demo", "--dir", tmp_path, "--packets", 2000, "--flows", 20)
    out = proc.stdout
    assert "Packets:" in out
    assert "payloads identical to the original" in out
    # Asks are each bidder's reservation price for 1 h at 1,000 Mbit/s: far-a 12.00 EUR per
    # Mbit/s-hour at 80% = 96.00, far-b 10.00 at 90% = 90.00, far-c 15.00 at 70% = 105.00.
    # far-b wins and is paid the runner-up's ask (equal reputations): 96.00 EUR.
    assert "award 1: far-b delivers for 96.00 EUR" in out
    # the home provider checks credit first: alice's is shown; bob's poor history refuses his
    assert "alice's credit at home-isp (prior model v1): score " in out
    assert "bob asks for the same: 409 credit_limit_exceeded" in out
    # far-b's daemon, another process, took the job over HTTP and delivered it
    assert "far-b's node: pktx daemon --broker http://127.0.0.1:" in out
    assert "job 1 claim: queued -> claimed (token 1, daemon far-b-node)" in out
    assert "job 1 complete: running -> done" in out
    assert "through anonymize,encrypt, at most 1,000 Mbit/s" in out
    assert out.index("claim: queued") < out.index("start: claimed") < out.index("complete:")
    url = out.split("the broker answers at ", 1)[1].split(" ", 1)[0]
    with pytest.raises(OSError):  # the broker was stopped with the demo
        socket.create_connection(tuple(url.removeprefix("http://").split(":")), timeout=2)
    db = sqlite3.connect(tmp_path / "broker.sqlite3")
    try:
        assert db.execute(
            "SELECT p.name, a.price_minor, a.currency, a.status FROM awards a "
            "JOIN providers p ON p.id = a.provider_id"
        ).fetchall() == [("far-b", 9600, "EUR", "delivered")]
        assert db.execute("SELECT status FROM delivery_jobs").fetchall() == [("done",)]
        assert db.execute("SELECT event FROM job_events ORDER BY id").fetchall() == [
            ("claim",),
            ("start",),
            ("complete",),
        ]
        assert sorted(db.execute("SELECT direction, score FROM ratings").fetchall()) == [
            ("payment", 100),
            ("service", 95),
        ]
        assert db.execute("SELECT count(*) FROM bids").fetchone() == (3,)
        # Billing: far-b's daemon's usage report rated past the data cap, beside the auction
        # price, on alice's statement for the period under way
        charged = db.execute("SELECT charged_minor FROM usage_reports").fetchall()
        charges = db.execute("SELECT kind, amount_minor FROM charges ORDER BY id").fetchall()
        requests = db.execute(
            "SELECT u.name, count(*) FROM service_requests r JOIN users u "
            "ON u.id = r.user_id GROUP BY u.name"
        ).fetchall()
        cards = db.execute("SELECT count(*) FROM payment_methods").fetchone()
        # The month's end: alice's statement finalized and paid by her card; home-isp settled
        # with far-b, keeping its 5% margin.
        paid = db.execute(
            "SELECT status, number, paid_minor, paid_at IS NOT NULL FROM statements"
        ).fetchall()
        batches = db.execute("SELECT number, line_count, status FROM settlement_batches").fetchall()
    finally:
        db.close()
    [(usage_charge,)] = charged
    assert usage_charge > 0 and charges == [("price", 9600), ("bytes", usage_charge)]
    euros, cents = divmod(9600 + usage_charge, 100)
    assert "alice's statement by her profile 'by-service'" in out
    assert "alice's statement by her profile 'by-recipient'" in out
    assert f"Total          €{euros}.{cents:02d}" in out  # en_US
    assert f"Summe         {euros},{cents:02d}\xa0€" in out  # de_DE
    assert (tmp_path / "statement.pdf").read_bytes().startswith(b"%PDF")
    assert paid == [("finalized", 1, 9600 + usage_charge, 1)]
    assert batches == [(1, 2, "settled")]
    assert "home-isp's books: " in out and "0.00 EUR still owed to far-b" in out
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", str(tmp_path / "statement.pdf"), "-"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        assert "home-isp" in text and f"€{euros}.{cents:02d}" in text
    assert requests == [("alice", 1)]  # bob's refused request left nothing
    assert cards == (1,)

    # Read back by dpkt: the delivered stream is sealed, the recipient's has every packet.
    def frames(path):
        with open(path, "rb") as f:
            return [bytes(buf) for _ts, buf in dpkt.pcapng.Reader(f)]

    sample, sealed = (
        frames(tmp_path / "files" / "sample.pcapng"),
        frames(tmp_path / "files" / "sealed.pcapng"),
    )
    opened = frames(tmp_path / "opened.pcapng")
    assert len(sample) == len(sealed) == len(opened) == 2000
    assert sum(a != b for a, b in zip(sample, sealed, strict=True)) == 2000  # anonymized
    assert [len(f) for f in opened] == [len(f) for f in sample]


@pytest.mark.parametrize(
    ("stop", "status"),
    [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGHUP, 0), (signal.SIGKILL, -9)],
    ids=["ctrl-c", "sigterm", "sighup", "sigkill"],
)
def test_demo_serve_keeps_the_broker_with_a_key_each_until_stopped(tmp_path, stop, status):
    """Ctrl-C, SIGTERM or SIGHUP stop the demo and its broker in order; a SIGKILLed demo's
    broker ends too (the kernel's parent-death signal): nothing is left listening."""
    import time

    import httpx

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "demo",
            "--dir",
            str(tmp_path),
            "--packets",
            "500",
            "--flows",
            "5",
            "--serve",
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("   bob's phone "):
                break
        text = "".join(lines)
        url = text.split("the broker keeps running at ", 1)[1].split(" ", 1)[0]
        keys = dict(
            line.split()[-2:]
            for line in text.split("API keys", 1)[1].splitlines()[1:]
            if line.startswith("   ") and "'" not in line
        )
        assert set(keys) == {"admin", "home-isp", "far-a", "far-b", "far-c", "alice", "bob"}
        me = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {keys['alice']}"})
        assert me.json()["kind"] == "user"
        proc.send_signal(stop)
        assert proc.wait(60) == status
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while True:  # the broker stops (at once, or within its own SIGTERM's grace)
        try:
            httpx.get(f"{url}/healthz", timeout=2)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, f"the broker outlived the demo ({stop!r})"
        time.sleep(0.2)


def test_usage_error_is_not_a_traceback():
    proc = pktx("generate", "x.pcap", "--packets", "-3", check=False)
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path):
    """``pktx ... | head``: the reader goes away; pktx ends with SIGPIPE's status and says
    nothing (no "Broken pipe" error, no traceback)."""
    big = tmp_path / "big.pcap"
    pktx("generate", big, "--packets", "100000", "-q")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "convert", str(big), "/dev/stdout", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(100)[:4] == b"\x4d\x3c\xb2\xa1"  # pcap, nanoseconds, little-endian
    proc.stdout.close()
    assert proc.wait(60) == 128 + signal.SIGPIPE
    assert proc.stderr.read() == b""
