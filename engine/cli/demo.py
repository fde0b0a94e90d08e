"""``pktx demo``: the main job end to end on generated traffic."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from engine.cli import arguments as A


def add_commands(sub) -> None:
    """Add demo to the subparsers."""
    s = sub.add_parser("demo", help="run the main job end to end on generated traffic")
    s.add_argument("--dir", help="where to keep the demo's files (default: a temporary folder)")
    s.add_argument("--packets", type=A.positive_int, default=100_000)
    s.add_argument("--flows", type=A.positive_int, default=500)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--workers", type=A.positive_int, default=2)
    s.set_defaults(func=cmd_demo)


# -- demo -------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    import numpy as np

    from engine.capture.capinfo import capture_info
    from engine.capture.generate import generate_capture
    from engine.capture.reader import read_capture
    from engine.cli import version_text
    from engine.cli.capture_commands import print_info
    from engine.delivery.deliver import deliver
    from engine.packet.flowhash import flow_hash

    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pktx-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample.pcapng"
    sealed = workdir / "sealed.pcapng"
    opened = workdir / "opened.pcapng"
    out = sys.stdout.write
    out(f"{version_text()}\n\n")
    out(f"1. generating {args.packets:,} packets in {args.flows} flows -> {sample}\n")
    generate_capture(sample, packets=args.packets, flows=args.flows, seed=args.seed,
                     format="pcapng", ts_resolution="ns")
    batch = read_capture(sample)
    out(f"   read back: {len(batch):,} packets, {batch.nbytes:,} bytes, "
        f"{len(set(flow_hash(batch).tolist())):,} flows by the symmetric 5-tuple hash\n\n")
    print_info(capture_info(sample))
    from broker.demo_market import bill_the_round, broker_a_request, settle_delivery

    market_db = workdir / "broker.sqlite3"
    for stale in workdir.glob("broker.sqlite3*"):  # a fresh market each run
        stale.unlink()
    out(f"\n2. the market (a SQLite store, {market_db.name}; the market's clock is simulated)\n")
    market = broker_a_request(market_db, ["anonymize", "encrypt"], 1_000_000_000,
                              batch.nbytes // 2, out)
    spec = market.spec
    key = os.urandom(32).hex()
    steps = [("3.", f"job {market.job_id}: {market.winner_name} delivers", sample, sealed,
              ",".join(spec["services"]),
              [f"anonymize.key={os.urandom(32).hex()}", f"encrypt.key={key}", "bind=none"],
              spec["max_rate_bps"]),
             ("4.", "the recipient opens it", sealed, opened, "decrypt,checksum",
              [f"key={key}", "bind=none"], None)]
    usages = []
    for label, who, src, dst, chain, params, rate in steps:
        limit = f", at most {rate / 1e6:,.0f} Mbit/s" if rate else ""
        out(f"\n{label} {who}: pktx deliver {src.name} -> {dst.name} through {chain} on "
            f"{args.workers} local workers{limit}\n")
        usage = deliver(str(src), str(dst), services=chain, params=params,
                        workers=args.workers, flow_affinity=True, max_rate_bps=rate)
        usages.append(usage)
        out(f"   {usage['packets_out']:,} of {usage['packets_in']:,} packets, "
            f"{usage['bytes_out']:,} bytes in {usage['duration_ns'] / 1e9:.3f} s "
            f"({usage['mean_rate_bps'] / 1e6:,.0f} Mbit/s), {usage['segments']} segments, "
            f"workers {dict((k, v['packets']) for k, v in usage['workers'].items())}\n")
        for service, counters in usage["services"].items():
            shown = ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items())[:6])
            out(f"   {service}: {shown}\n")
    a, b = read_capture(sample), read_capture(opened)
    from engine.packet.flowkeys import flow_keys

    ka, kb = flow_keys(a), flow_keys(b)
    same = len(a) == len(b) and bool((a.caplen == b.caplen).all())
    payloads_equal = same and all(
        bytes(a.packet(i)[int(ka.payload_off[i]):]) == bytes(b.packet(i)[int(kb.payload_off[i]):])
        for i in range(len(a)) if ka.payload_off[i] >= 0)
    moved = int(np.count_nonzero((ka.src != kb.src).any(axis=1))) if same else 0
    out(f"\n5. round trip: {len(b):,} packets back; payloads "
        f"{'identical to the original' if payloads_equal else 'DIFFERENT'}; "
        f"{moved:,} source addresses anonymized\n")
    if payloads_equal:
        out("\n6. settling the award\n")
        settle_delivery(market, usages[0], out)
        out("\n7. billing: the usage record rated, the statement from alice's home provider\n")
        bill_the_round(market, workdir, out)
    out(f"   files kept in {workdir}\n")
    same_len = payloads_equal
    return 0 if same_len else 1
