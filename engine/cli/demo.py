"""``pktx demo``: the whole cycle on generated traffic, as separate processes on loopback: a
broker server, the winning provider's delivery daemon, and this process playing the users and
providers over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from engine.cli import arguments as A

SERVICES = ["anonymize", "encrypt"]
RATE_BPS = 1_000_000_000
# Anonymized addresses are not the ones the recipient sees: authenticate without them.
NODE_PARAMS = ["encrypt.bind=none"]


def add_commands(sub) -> None:
    """Add demo to the subparsers."""
    s = sub.add_parser(
        "demo",
        help="run the main job end to end on generated traffic",
        description="Starts a broker server and a delivery daemon on loopback "
        "and plays a market round against them over HTTP: the "
        "request, the auction, the award, the delivery, the usage "
        "billed, the ratings. Every process it starts is stopped "
        "when it ends (or on Ctrl-C).",
    )
    s.add_argument("--dir", help="where to keep the demo's files (default: a temporary folder)")
    s.add_argument("--packets", type=A.positive_int, default=100_000)
    s.add_argument("--flows", type=A.positive_int, default=500)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--workers", type=A.positive_int, default=2)
    s.add_argument(
        "--serve",
        action="store_true",
        help="after the round, keep the broker running and print its URL and a key "
        "for each principal, until Ctrl-C",
    )
    s.set_defaults(func=cmd_demo)


def _fresh(workdir: Path) -> Path:
    """A fresh market each run: the last run's store, daemon state, outputs and logs go."""
    for stale in [
        *workdir.glob("broker.sqlite3*"),
        *workdir.glob("*.log"),
        workdir / "opened.pcapng",
        workdir / "statement.pdf",
    ]:
        stale.unlink(missing_ok=True)
    shutil.rmtree(workdir / "daemon", ignore_errors=True)
    shutil.rmtree(workdir / "files", ignore_errors=True)
    files = workdir / "files"  # the daemon's --files folder: the job's source and sink
    files.mkdir()
    return files


def cmd_demo(args) -> int:
    import httpx

    from engine.capture.capinfo import capture_info
    from engine.capture.generate import generate_capture
    from engine.capture.reader import read_capture
    from engine.cli import version_text
    from engine.cli.capture_commands import print_info
    from engine.cli.demo_stage import DemoFailed, Stage, stop_on_signals
    from engine.packet.flowhash import flow_hash

    started = time.monotonic()
    stop_on_signals()
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pktx-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = _fresh(workdir)
    sample, sealed = files / "sample.pcapng", files / "sealed.pcapng"
    opened = workdir / "opened.pcapng"  # on the recipient's side
    out = _printer()
    out(f"{version_text()}\n\n")
    out(f"1. generating {args.packets:,} packets in {args.flows} flows -> {sample}\n")
    generate_capture(
        sample,
        packets=args.packets,
        flows=args.flows,
        seed=args.seed,
        format="pcapng",
        ts_resolution="ns",
    )
    batch = read_capture(sample)
    out(
        f"   read back: {len(batch):,} packets, {batch.nbytes:,} bytes, "
        f"{len(set(flow_hash(batch).tolist())):,} flows by the symmetric 5-tuple hash\n\n"
    )
    print_info(capture_info(sample))
    # The recipient's keys: given to the delivering node out of band (its daemon's
    # environment), never to the broker.
    secrets = {"anonymize.key": os.urandom(32).hex(), "encrypt.key": os.urandom(32).hex()}
    try:
        with Stage(workdir) as stage:
            market = _market_round(stage, args, files, sample, batch.nbytes, secrets, out)
            ok = _open_and_compare(args, sample, sealed, opened, secrets["encrypt.key"], out)
            if ok:
                from engine.cli.demo_market import bill_the_round, rate_the_round

                out("\n6. the ratings\n")
                card = rate_the_round(market, out)
                out("\n7. billing: the usage rated, alice's statement for the period under way\n")
                draft = bill_the_round(market, workdir, out)
                if not args.serve:  # (--serve leaves the period open to look at)
                    from engine.cli.demo_market import close_the_month

                    out(
                        "\n8. the month ends: the period closed, the statement paid by card, "
                        "the providers settled\n"
                    )
                    close_the_month(market, stage.db, draft, out)
                _summary(market, card, draft, stage, workdir, started, out)
            if args.serve:
                stage.stop("daemon")
                _serve(market, stage, out)
            market.close()
            return 0 if ok else 1
    except DemoFailed as failed:
        print(f"pktx demo: {failed}", file=sys.stderr)
        return 1
    except httpx.TransportError as away:  # the broker went away mid-round
        print(
            f"pktx demo: the broker did not answer ({away!r}); its log is {workdir / 'broker.log'}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as stopped:
        print("\npktx demo: interrupted; its processes are stopped", file=sys.stderr)
        return 128 + getattr(stopped, "signum", signal.SIGINT)


def _printer():
    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()  # each step as it happens, also into a pipe

    return out


def _market_round(stage, args, files: Path, sample: Path, nbytes: int, secrets: dict, out):
    from engine.cli.demo_market import auction_the_request, follow_the_job, set_up, show_delivery
    from engine.cli.demo_stage import DemoFailed

    out(f"\n2. the market: pktx broker serve --db {stage.db} on a free loopback port\n")
    t = time.monotonic()
    url = stage.start_broker()
    token = stage.admin_token()
    out(
        f"   the broker answers at {url} after {time.monotonic() - t:.1f} s; pktx broker "
        f"admin init made its first admin's key\n"
    )
    market = set_up(url, token, SERVICES, out)
    auction_the_request(market, SERVICES, RATE_BPS, nbytes // 2, sample.name, "sealed.pcapng", out)
    out(
        f"\n3. {market.winner}'s node: pktx daemon --broker {url} --files {files} --workers "
        f"{args.workers} (its API key and the recipient's service keys in its environment)\n"
    )
    stage.start_daemon(
        f"{market.winner}-node",
        market.keys[market.winner],
        files,
        args.workers,
        NODE_PARAMS,
        secrets,
    )
    job = follow_the_job(market, lambda: stage.check_alive("daemon"), out)
    show_delivery(market, job, out)
    if job["job"]["status"] != "done":
        error = (job["measured"] or {}).get("error") or "no error given"
        raise DemoFailed(
            f"job {job['job']['id']} failed: {error}; the end of the daemon's "
            f"log ({stage.folder / 'daemon.log'}):\n{stage.log_tail('daemon')}"
        )
    return market


def _open_and_compare(args, sample: Path, sealed: Path, opened: Path, key: str, out) -> bool:
    """The recipient opens the delivered capture on its own machine and checks it."""
    import numpy as np

    from engine.capture.reader import read_capture
    from engine.delivery.deliver import deliver
    from engine.packet.flowkeys import flow_keys

    out(
        f"\n4. the recipient opens it: pktx deliver {sealed.name} -> {opened.name} through "
        f"decrypt,checksum on {args.workers} local workers\n"
    )
    usage = deliver(
        str(sealed),
        str(opened),
        services="decrypt,checksum",
        params=[f"key={key}", "bind=none"],
        workers=args.workers,
        flow_affinity=True,
    )
    out(
        f"   {usage['packets_out']:,} of {usage['packets_in']:,} packets, "
        f"{usage['bytes_out']:,} bytes in {usage['duration_ns'] / 1e9:.3f} s\n"
    )
    for service, counters in usage["services"].items():
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items())[:6])
        out(f"   {service}: {shown}\n")
    a, b = read_capture(sample), read_capture(opened)
    ka, kb = flow_keys(a), flow_keys(b)
    same = len(a) == len(b) and bool((a.caplen == b.caplen).all())
    payloads_equal = same and all(
        bytes(a.packet(i)[int(ka.payload_off[i]) :]) == bytes(b.packet(i)[int(kb.payload_off[i]) :])
        for i in range(len(a))
        if ka.payload_off[i] >= 0
    )
    moved = int(np.count_nonzero((ka.src != kb.src).any(axis=1))) if same else 0
    out(
        f"\n5. round trip: {len(b):,} packets back; payloads "
        f"{'identical to the original' if payloads_equal else 'DIFFERENT'}; "
        f"{moved:,} source addresses anonymized\n"
    )
    return payloads_equal


def _summary(market, card: dict, draft: dict, stage, workdir: Path, started: float, out) -> None:
    from engine.cli.demo_market import money

    award = market.award
    totals = ", ".join(money(v, c) for c, v in draft["totals"].items())
    out(
        f"\nsummary: request {market.request['id']} -> auction {market.auction['id']} "
        f"({len(market.auction['bids'])} bids) -> award {award['id']} to {market.winner} for "
        f"{money(award['price_minor'], award['currency'])} -> job {award['job']['id']} "
        f"delivered by its daemon -> rated ({card['reputation']['count']} rating(s)) -> "
        f"{len(draft['lines'])} charge(s) on alice's statement, {totals}; "
        f"{len(stage.procs) + 1} processes (broker, daemon, this one), "
        f"{time.monotonic() - started:.1f} s in all\n"
    )
    out(f"   files kept in {workdir} (the broker's store, the daemon's state, the logs)\n")


def _serve(market, stage, out) -> None:
    """Keep the broker up for a console or curl, with a key for each principal."""
    out(
        f"\nthe broker keeps running at {stage.url} (Ctrl-C stops it); its web console is "
        f"at {stage.url}/ (sign in with a key). API keys (Authorization: Bearer KEY):\n"
    )
    width = max(map(len, market.keys))
    for principal, key in market.keys.items():
        out(f"   {principal:{width}}  {key}\n")
    try:
        while True:
            stage.check_alive("broker")
            time.sleep(0.5)
    except KeyboardInterrupt:
        out("\nstopping the broker\n")
