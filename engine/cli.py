"""The ``pktx`` command line: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine import __version__
from engine.errors import EngineError

log = logging.getLogger("pktx")


def _version_text() -> str:
    import numba
    import numpy

    from engine import backend

    return (f"pktx {__version__} ({backend.describe()}; numpy {numpy.__version__}, "
            f"numba {numba.__version__}, Python {sys.version.split()[0]})")


# -- info -------------------------------------------------------------------------------------
def _human_bytes(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _print_info(info) -> None:
    d = info.as_dict()
    dur_s = info.duration_ns / 1e9
    rows = [
        ("File name", d["path"]),
        ("File size", f"{d['file_bytes']} bytes"),
        ("File format", f"{d['format']} (version {d['version']})"),
        ("Byte order", d["byte_order"]),
        ("Timestamp resolution", ", ".join(d["ts_resolution"])),
        ("Sections", str(d["sections"])),
        ("Interfaces", ", ".join(f"{i['linktype_name']} ({i['linktype']}) snaplen "
                                 f"{i['snaplen']}" + (f" '{i['name']}'" if i["name"] else "")
                                 for i in d["interfaces"]) or "none"),
        ("Link types", ", ".join(f"{k}: {v}" for k, v in d["linktypes"].items()) or "none"),
        ("Packets", str(d["packets"])),
        ("Captured bytes", f"{d['captured_bytes']} ({_human_bytes(d['captured_bytes'])})"),
        ("Original bytes", f"{d['original_bytes']} ({_human_bytes(d['original_bytes'])})"),
        ("Truncated records", f"{d['truncated_records']} (captured length < original)"),
        ("First packet", d["first_ts"] or "n/a"),
        ("Last packet", d["last_ts"] or "n/a"),
        ("Duration", f"{dur_s:.9f} s"),
    ]
    if info.packets and info.duration_ns > 0:
        rows.append(("Average rate", f"{info.captured_bytes * 8 / dur_s:,.0f} bit/s, "
                                     f"{info.packets / dur_s:,.1f} packets/s"))
    if d["damage"]:
        rows.append(("Damage", f"{d['damage']} ({d['dropped_bytes']} bytes dropped)"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        sys.stdout.write(f"{k + ':':<{width + 2}}{v}\n")


def cmd_info(args) -> int:
    from engine.capinfo import capture_info

    status = 0
    for path in args.files:
        info = capture_info(path, errors=args.errors)
        if args.json:
            sys.stdout.write(json.dumps(info.as_dict(), indent=2) + "\n")
        else:
            _print_info(info)
        if info.damage:
            status = 1
    return status


# -- convert ----------------------------------------------------------------------------------
def _pick_format(out: str, fmt: str | None, reader) -> str:
    if fmt:
        return fmt
    if out.endswith((".pcapng", ".ntar")):
        return "pcapng"
    if out.endswith((".pcap", ".cap")):
        return "pcap"
    return reader.format


def cmd_convert(args) -> int:
    from engine.reader import CaptureReader
    from engine.writer import CaptureWriter

    reader = CaptureReader(args.input, errors=args.errors)
    fmt = _pick_format(args.output, args.format, reader)
    # Without --ts-resolution each interface keeps its own resolution.
    with CaptureWriter(args.output, format=fmt, ts_resolution=args.ts_resolution) as w:
        for batch in reader:
            w.write(batch)
    if not args.quiet:
        res = ", ".join(w.resolutions) or "no packets"
        sys.stderr.write(f"wrote {w.packets} packets to {args.output} ({fmt}, {res})\n")
    return 1 if reader.damage else 0


# -- generate ---------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from engine.generate import generate_capture

    fmt = args.format or ("pcapng" if args.output.endswith(".pcapng") else "pcap")
    n = generate_capture(args.output, packets=args.packets, flows=args.flows, seed=args.seed,
                         format=fmt, ts_resolution=args.ts_resolution)
    if not args.quiet:
        flows = min(args.flows, n)
        sys.stderr.write(f"wrote {n} packets in {flows} flows to {args.output}\n")
    return 0


# -- demo -------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from engine.capinfo import capture_info
    from engine.deliver import deliver
    from engine.flowhash import flow_hash
    from engine.generate import generate_capture
    from engine.reader import read_capture

    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pktx-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample.pcapng"
    sealed = workdir / "sealed.pcapng"
    opened = workdir / "opened.pcapng"
    out = sys.stdout.write
    out(f"{_version_text()}\n\n")
    out(f"1. generating {args.packets:,} packets in {args.flows} flows -> {sample}\n")
    generate_capture(sample, packets=args.packets, flows=args.flows, seed=args.seed,
                     format="pcapng", ts_resolution="ns")
    batch = read_capture(sample)
    out(f"   read back: {len(batch):,} packets, {batch.nbytes:,} bytes, "
        f"{len(set(flow_hash(batch).tolist())):,} flows by the symmetric 5-tuple hash\n\n")
    _print_info(capture_info(sample))
    from broker.demo_market import broker_a_request, settle_delivery

    market_db = workdir / "broker.sqlite3"
    for stale in workdir.glob("broker.sqlite3*"):  # a fresh market each run
        stale.unlink()
    out(f"\n2. the market (a SQLite store, {market_db.name}; the market's clock is simulated)\n")
    market = broker_a_request(market_db, ["anonymize", "encrypt"], 1_000_000_000, out)
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
    from engine.flowkeys import flow_keys

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
    out(f"   files kept in {workdir}\n")
    same_len = payloads_equal
    return 0 if same_len else 1


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pktx", description="packet-exchange: a market for packet-processing services "
                                 "and the engine that delivers them.")
    p.add_argument("--version", action=_VersionAction, nargs=0,
                   help="show the version and whether compiled extensions are in use")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="describe capture files (what capinfos tells)")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--errors", choices=("strict", "truncate"), default="strict",
                   help="on damage: fail (strict) or report what was readable (truncate)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("convert", help="convert between pcap and pcapng")
    s.add_argument("input", metavar="IN")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--format", choices=("pcap", "pcapng"),
                   help="output format (default: from OUT's extension, else the input's)")
    s.add_argument("--ts-resolution", choices=("us", "ns"),
                   help="output timestamp resolution (default: the input's)")
    s.add_argument("--errors", choices=("strict", "truncate"), default="strict")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("generate", help="write synthetic, valid TCP/UDP traffic")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--packets", type=_positive_int, required=True)
    s.add_argument("--flows", type=_positive_int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=("pcap", "pcapng"))
    s.add_argument("--ts-resolution", choices=("us", "ns"), default="ns")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("demo", help="run the main job end to end on generated traffic")
    s.add_argument("--dir", help="where to keep the demo's files (default: a temporary folder)")
    s.add_argument("--packets", type=_positive_int, default=100_000)
    s.add_argument("--flows", type=_positive_int, default=500)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--workers", type=_positive_int, default=2)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("deliver", help="run a packet stream through services on workers")
    s.add_argument("source", metavar="SOURCE",
                   help="capture file, udp://HOST:PORT, iface:NAME or zmq://HOST:PORT (upstream)")
    s.add_argument("-o", "--output", required=True, metavar="SINK",
                   help="capture file, udp://HOST:PORT or zmq://HOST:PORT (downstream)")
    s.add_argument("--service", default="identity", metavar="NAME[,NAME...]",
                   help="the service chain, applied in order (default: identity)")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a service parameter (SERVICE.KEY=VALUE for one service); give a key "
                        "as key_file=PATH or key_env=VARIABLE to keep it off the command line")
    s.add_argument("--workers", type=_nonneg_int, default=None, metavar="N",
                   help="local worker processes to start (default: one per core; 0: serve "
                        "workers that connect to --bind)")
    s.add_argument("--bind", metavar="ENDPOINT",
                   help="where workers connect (default: a random loopback TCP port)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--segment-packets", type=_positive_int, metavar="K")
    g.add_argument("--segment-bytes", type=_positive_int, metavar="B")
    s.add_argument("--segment-ms", type=float, metavar="T",
                   help="time window: a segment is flushed when full or T ms old")
    s.add_argument("--flow-affinity", action="store_true",
                   help="both directions of a flow go to the same worker")
    s.add_argument("--max-rate", type=_rate, metavar="RATE", help="shape output (bit/s, 400M)")
    s.add_argument("--min-rate", type=_rate, metavar="RATE",
                   help="service level: report per second whether it was met")
    s.add_argument("--usage-json", metavar="FILE", help="write the usage record here")
    s.add_argument("--max-auth-failures", type=_nonneg_int, default=0, metavar="N",
                   help="fail the run once more than N packets fail authentication in decrypt "
                        "(default 0)")
    s.add_argument("--credit", type=_positive_int, default=4,
                   help="segments each local worker holds at once")
    s.add_argument("--curve", metavar="DIR", help="CURVE key folder (pktx keys generate)")
    s.add_argument("--format", choices=("pcap", "pcapng"), help="output file format")
    s.add_argument("--ts-resolution", choices=("us", "ns"),
                   help="timestamp resolution of every output interface (default: each keeps "
                        "the input's)")
    s.add_argument("--udp-linktype", type=int, default=1,
                   help="link type of udp:// source packets (default 1, Ethernet)")
    s.add_argument("--count", type=_positive_int, help="a live source ends after N packets")
    s.add_argument("--idle-timeout", type=float, metavar="S",
                   help="a live source ends after S seconds without a packet")
    s.add_argument("--wait-workers", type=float, default=60.0, metavar="S",
                   help="how long to wait for workers to join")
    s.add_argument("--min-workers", type=_positive_int, metavar="N",
                   help="with --workers 0: start once N workers have joined (default 1)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.set_defaults(func=cmd_deliver)

    s = sub.add_parser("worker", help="a worker node: connect to a dispatcher, run services")
    s.add_argument("--connect", required=True, metavar="ENDPOINT")
    s.add_argument("--services", metavar="NAME[,NAME...]",
                   help="services this node offers (default: all installed)")
    s.add_argument("--credit", type=_positive_int, default=4,
                   help="segments held at once (default 4)")
    s.add_argument("--name", help="how the node is named in logs and usage records")
    s.add_argument("--curve", metavar="DIR", help="CURVE key folder")
    s.add_argument("--curve-name", default="worker", help="key pair name in the folder")
    s.add_argument("--exit-on-disconnect", action="store_true",
                   help="leave when the dispatcher says goodbye (instead of waiting for "
                        "the next)")
    s.add_argument("--max-idle", type=float, metavar="S",
                   help="give up after S seconds without a dispatcher")
    s.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("keys", help="CURVE keys for dispatchers and workers")
    ksub = s.add_subparsers(dest="keys", metavar="ACTION", required=True)
    k = ksub.add_parser("generate", help="create a key folder")
    k.add_argument("dir", metavar="DIR")
    k.add_argument("--worker-name", default="worker")
    k.set_defaults(func=cmd_keys_generate)

    s = sub.add_parser("bench", help="side-by-side throughput tables against peers")
    bsub = s.add_subparsers(dest="bench", metavar="WHAT", required=True)
    def bench_table(name, help_text, table, repeat, stream_help=None):
        b = bsub.add_parser(name, help=help_text)
        b.add_argument("--repeat", type=_positive_int, default=repeat)
        if stream_help is None:
            b.set_defaults(func=_cmd_bench, table=table, packets=0, stream_gb=0.0)
            return b
        b.add_argument("--packets", type=_positive_int, default=200_000)
        b.add_argument("--stream-gb", type=float, default=2.0, help=stream_help)
        b.set_defaults(func=_cmd_bench, table=table)
        return b

    bench_table("capture", "capture reading, flow hashing and writing", "capture_table", 5,
                "size of the file streamed through open_capture for peak RSS (0: skip)")
    bench_table("deliver", "delivery throughput against multiprocessing and pyzmq",
                "deliver_table", 3,
                "size of the capture delivered for the dispatcher's peak RSS (0: skip)")
    bench_table("rating", "rating 1,000,000 usage reports under a tariff", "rating_table", 5)
    bench_table("services", "encrypt, decrypt, compress, decompress against the bare library "
                "loop", "services_table", 5, "not used by this table")
    b = bench_table("broker", "auction close, bids over HTTP, reputation lookups",
                    "broker_table", 5)
    # Options of one table only travel as opt_<name> and reach its run() as <name>=.
    b.add_argument("--server-workers", dest="opt_workers", metavar="N", type=_positive_int,
                   default=1,
                   help="uvicorn worker processes of the server under test (default 1)")
    b.add_argument("--clients", dest="opt_http_clients", metavar="N", type=_positive_int,
                   default=16,
                   help="concurrent HTTP clients posting bids (default 16)")
    b.add_argument("--seconds", dest="opt_http_seconds", metavar="S", type=float,
                   default=10.0,
                   help="how long the clients post bids (default 10)")

    try:
        from broker.cli import add_broker_commands
    except ImportError:
        pass
    else:
        add_broker_commands(sub)
    return p


def _cmd_bench(args) -> int:
    # The tables and their peers live in the source tree's benchmarks/, beside engine/.
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / f"{args.table}.py").exists():
        raise EngineError("pktx bench runs from a source checkout: benchmarks/ was not found "
                          f"beside {root / 'engine'}")
    sys.path.insert(0, str(root))
    import importlib

    table = importlib.import_module(f"benchmarks.{args.table}")
    extra = {k.removeprefix("opt_"): v for k, v in vars(args).items() if k.startswith("opt_")}
    return table.run(packets=args.packets, repeat=args.repeat, stream_gb=args.stream_gb,
                     **extra)


class _VersionAction(argparse.Action):
    """--version, computed only when asked for (it imports numba)."""

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(_version_text() + "\n")
        parser.exit()


def cmd_deliver(args) -> int:
    from engine.deliver import Delivery, DeliveryOptions

    opts = DeliveryOptions(
        services=args.service, params=args.param, workers=args.workers, bind=args.bind,
        segment_packets=args.segment_packets, segment_bytes=args.segment_bytes,
        segment_ms=args.segment_ms, flow_affinity=args.flow_affinity,
        max_rate_bps=args.max_rate, min_rate_bps=args.min_rate, usage_json=args.usage_json,
        max_auth_failures=args.max_auth_failures,
        curve_dir=args.curve, credit=args.credit, format=args.format,
        ts_resolution=args.ts_resolution, udp_linktype=args.udp_linktype, count=args.count,
        idle_timeout=args.idle_timeout, wait_workers_s=args.wait_workers,
        min_workers=args.min_workers)
    delivery = Delivery(args.source, args.output, opts)
    show = not args.quiet and sys.stderr.isatty()
    if show:
        from engine.progress import DeliveryProgress

        with DeliveryProgress(delivery.meter):
            usage = delivery.run()
    else:
        usage = delivery.run()
    if not args.quiet:
        sys.stderr.write(
            f"delivered {usage['packets_out']} of {usage['packets_in']} packets "
            f"({usage['bytes_out']} bytes) in {usage['duration_ns'] / 1e9:.3f} s, "
            f"mean {usage['mean_rate_bps'] / 1e6:.1f} Mbit/s, {usage['segments']} segments, "
            f"{len(usage['workers'])} workers, {usage['retries']} retries"
            + (f", {usage['auth_failures']} failed authentication" if usage["auth_failures"]
               else "") + "\n")
    return 0


def cmd_worker(args) -> int:
    from engine.worker import Worker

    services = [s.strip() for s in args.services.split(",")] if args.services else None
    w = Worker(args.connect, services=services, credit=args.credit, name=args.name,
               curve_dir=args.curve, curve_name=args.curve_name,
               exit_on_disconnect=args.exit_on_disconnect, max_idle_s=args.max_idle)
    w.install_signal_handlers()
    if not args.quiet:
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    return w.run()


def cmd_keys_generate(args) -> int:
    from engine.curve import generate_keys

    paths = generate_keys(args.dir, worker_name=args.worker_name)
    for name, path in paths.items():
        sys.stdout.write(f"{name}: {path}\n")
    return 0


def _rate(text: str) -> int:
    from engine.meter import parse_rate

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="pktx: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        sys.stderr.write(f"pktx: error: {exc}\n")
        return 1
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"pktx: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("pktx: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
