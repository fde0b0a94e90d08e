"""The daemon across a network: the broker in one namespace (HTTPS, listening beyond
loopback), the daemon in a second, claiming over the veth between them, and its remote
workers in a third, connecting to the daemon's ``--bind`` over another veth; the daemon runs
no local worker (``--workers 0``). A job is delivered end to end and read back with dpkt.
Skipped where network namespaces cannot be made."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from locations import free_port, need_corpus
from netns_support import NET, inside, namespaces, pktx_in
from tls_support import private_ca

from benchmarks.node_world import BrokerProcess, Daemon, market, read_packets
from engine.daemon.broker_client import trusting

# subnet 21: broker .1 - node .2; 22: node .1 - workers .2; 23: this process .1 - broker .2
BROKER_FOR_NODE, NODE_FOR_WORKERS, BROKER_FOR_US = f"{NET}.21.1", f"{NET}.22.1", f"{NET}.23.2"


@pytest.fixture
def hosts():
    with namespaces(
        ["brk", "node", "wrk"], [("brk", "node", 21), ("node", "wrk", 22), (None, "brk", 23)]
    ) as names:
        yield names


def test_a_job_crosses_three_namespaces(hosts, tmp_path):
    corpus = need_corpus()
    certs = private_ca(tmp_path / "pki", (BROKER_FOR_NODE, BROKER_FOR_US))
    broker = BrokerProcess(
        tmp_path / "broker",
        tls=(str(certs.cert), str(certs.key)),
        host="0.0.0.0",
        reached_at=BROKER_FOR_US,
        prefix=inside(hosts["brk"]),
    )
    broker.start(verify=trusting(str(certs.ca)))
    m = market(
        broker, tmp_path / "files", corpus / "dpkt" / "http.pcap", verify=trusting(str(certs.ca))
    )
    port = free_port()
    workers = [
        subprocess.Popen(
            pktx_in(
                hosts["wrk"],
                "worker",
                "--connect",
                f"tcp://{NODE_FOR_WORKERS}:{port}",
                "--name",
                w,
                "--max-idle",
                120,
                "-q",
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for w in ("w1", "w2")
    ]
    daemon = Daemon(
        m,
        tmp_path / "d1",
        broker_url=f"https://{BROKER_FOR_NODE}:{broker.port}",
        prefix=inside(hosts["node"]),
        extra=(
            "--ca-bundle",
            str(certs.ca),
            "--workers",
            "0",
            "--bind",
            f"tcp://{NODE_FOR_WORKERS}:{port}",
        ),
    )
    try:
        daemon.start()
        request = m.request(sink="out/netns.pcap")
        job = m.wait_job(request["id"], "done", timeout=120)
    finally:
        daemon.signal(signal.SIGTERM)
        code = daemon.wait()
        for w in workers:
            w.kill()
            w.wait()
        m.close()
        broker.stop()
    assert code == 0, daemon.log()
    assert read_packets(m.files / "out" / "netns.pcap") == m.packets
    usage = json.loads(
        (tmp_path / "d1" / "state" / "jobs" / str(job["id"]) / "usage.json").read_text()
    )
    assert usage["packets_out"] == len(m.packets)
    assert set(usage["workers"]) <= {"w1", "w2"} and usage["workers"], usage["workers"]
    assert [e["daemon"] for e in job["events"] if e["event"] == "claim"] == ["node-1"]
