"""`pktx broker serve` as a real process, stopped with SIGTERM while bids pour in: every bid it
acknowledged is in the store, and it exits within seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
from locations import ROOT, free_port
from sqlalchemy import select

from broker.actors import issue_key
from broker.auctions import open_auction
from broker.directory import create_provider
from broker.models import Bid
from broker.requests import submit_request

BIDDERS = 400


def _market(world) -> tuple[int, list[tuple[int, str]]]:
    m = world.m
    now = datetime.now(UTC)
    alice = m.actor("device", world.alice_phone)
    with m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=now + timedelta(hours=2),
            ends_at=now + timedelta(hours=3),
            max_rate_bps=1_000_000,
            now=now,
        )
        auction = open_auction(
            s, alice, r.id, closes_at=now + timedelta(hours=1), reserve_price_minor=10**6, now=now
        ).id
        bidders = []
        for i in range(BIDDERS):
            pid = create_provider(
                s,
                m.admin,
                network_id=world.north_net,
                name=f"b{i}",
                services=["anonymize"],
                capacity_bps=10**9,
                currency="EUR",
                per_gb_minor=100,
                per_mbps_hour_minor=10,
                reservation_ppm=800_000,
                concession_beta_ppm=1_000_000,
                mode="policy",
            ).id
            bidders.append((pid, issue_key(s, m.admin, "provider", pid)[1]))
    return auction, bidders


def test_sigterm_under_load_loses_no_acknowledged_bid(world):
    auction, bidders = _market(world)
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "broker",
            "serve",
            "--db",
            world.m.store.url,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--expire-every",
            "0",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    acked: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited at start"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)

        async def client(http: httpx.AsyncClient, share) -> None:
            for pid, token in share:
                try:
                    r = await http.post(
                        f"/v1/auctions/{auction}/bids",
                        json={"provider_id": pid, "price_minor": 5000},
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Idempotency-Key": f"bid-{pid}",
                        },
                    )
                except httpx.TransportError:
                    return  # the server has gone
                if r.status_code == 201:
                    acked.append(pid)
                else:
                    assert r.status_code >= 500, r.text

        async def load() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                clients = [asyncio.create_task(client(http, bidders[i::8])) for i in range(8)]
                while len(acked) < 50:
                    await asyncio.sleep(0.005)
                proc.send_signal(signal.SIGTERM)
                await asyncio.gather(*clients)

        asyncio.run(load())
        # uvicorn shuts down gracefully, then raises the signal again on its way out, so the
        # exit status says SIGTERM either way; what tells is the store.
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with world.m.store.read() as s:
        stored = set(s.scalars(select(Bid.provider_id).where(Bid.auction_id == auction)))
    assert len(acked) >= 50
    assert set(acked) <= stored, "an acknowledged bid was lost"
