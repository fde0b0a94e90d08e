"""``pktx bench``: the side-by-side tables of ``benchmarks/`` (from a source checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.cli import arguments as A
from engine.errors import EngineError

_JSON_HELP = "each table's rows as objects with their units, the targets and the machine"


def add_commands(sub) -> None:
    """Add bench and its tables to the subparsers."""
    s = sub.add_parser("bench", help="side-by-side throughput tables against peers")
    bsub = s.add_subparsers(dest="bench", metavar="WHAT", required=True)

    def bench_table(name, help_text, table, repeat, stream_help=None):
        b = bsub.add_parser(name, help=help_text)
        b.add_argument("--repeat", type=A.positive_int, default=repeat)
        A.json_option(b, _JSON_HELP)
        if stream_help is None:
            b.set_defaults(func=_cmd_bench, table=table, packets=0, stream_gb=0.0)
            return b
        b.add_argument("--packets", type=A.positive_int, default=200_000)
        b.add_argument("--stream-gb", type=float, default=2.0, help=stream_help)
        b.set_defaults(func=_cmd_bench, table=table)
        return b

    bench_table(
        "capture",
        "capture reading, flow hashing and writing",
        "capture_table",
        5,
        "size of the file streamed through open_capture for peak RSS (0: skip)",
    )
    d = bench_table(
        "deliver",
        "delivery throughput against multiprocessing and pyzmq",
        "deliver_table",
        3,
        "size of the capture delivered for the dispatcher's peak RSS (0: skip)",
    )
    d.add_argument(
        "--process-gb",
        dest="opt_process_gb",
        metavar="G",
        type=float,
        default=0.0,
        help="run the whole-process rows (the peer, pktx deliver, raw pyzmq) on a "
        "capture of G GB made by repeating the generated one (issue 8 measures "
        "on 1 GB); 0, the default: on the generated capture itself",
    )
    bench_table("rating", "rating 1,000,000 usage reports under a tariff", "rating_table", 5)
    s = bench_table(
        "services",
        "encrypt, decrypt, compress, decompress against the bare library loop",
        "services_table",
        5,
    )
    s.add_argument("--packets", type=A.positive_int, default=200_000)
    d = bench_table(
        "daemon",
        "award to first packet, and pktx daemon against pktx deliver on the same job",
        "daemon_table",
        5,
    )
    d.add_argument(
        "--packets",
        type=A.positive_int,
        action="append",
        default=None,  # not the tables' 0: a list of sizes, given one by one
        metavar="N",
        help="packets of a generated capture delivered both ways; repeated, one "
        "job size each (default 200,000 and 2,000,000: the daemon's fixed "
        "cost a job, and its overhead once that is small)",
    )
    c = bsub.add_parser(
        "chaos",
        help="pktx daemon SIGKILLed and restarted at random moments "
        "(the broker too) while it delivers jobs; every packet, report and "
        "charge checked once and in order (exit 1 on any violation)",
    )
    c.add_argument(
        "--cycles",
        dest="opt_cycles",
        metavar="N",
        type=A.positive_int,
        default=100,
        help="SIGKILLs of the daemon, each followed by a restart (default 100)",
    )
    c.add_argument(
        "--seed",
        dest="opt_seed",
        metavar="S",
        type=int,
        default=20261130,
        help="seed of the kill moments and the generated source",
    )
    c.add_argument(
        "--broker-every",
        dest="opt_broker_every",
        metavar="K",
        type=A.nonneg_int,
        default=7,
        help="SIGKILL and restart the broker every K cycles (0: never; default 7)",
    )
    c.add_argument(
        "--packets",
        type=A.positive_int,
        default=3000,
        metavar="P",
        help="packets of each job's source, 64 flows (default 3,000)",
    )
    c.add_argument(
        "--job-seconds",
        dest="opt_job_seconds",
        metavar="S",
        type=float,
        default=1.0,
        help="how long a job's delivery lasts undisturbed, by its max rate (default 1.0)",
    )
    A.json_option(c, _JSON_HELP)
    c.set_defaults(func=_cmd_bench, table="daemon_chaos", repeat=1, stream_gb=0.0)
    b = bench_table(
        "broker", "auction close, bids over HTTP, reputation lookups", "broker_table", 5
    )
    # Options of one table only travel as opt_<name> and reach its run() as <name>=.
    b.add_argument(
        "--server-workers",
        dest="opt_workers",
        metavar="N",
        type=A.positive_int,
        default=1,
        help="uvicorn worker processes of the server under test (default 1)",
    )
    b.add_argument(
        "--clients",
        dest="opt_http_clients",
        metavar="N",
        type=A.positive_int,
        default=16,
        help="concurrent HTTP clients posting bids (default 16)",
    )
    b.add_argument(
        "--seconds",
        dest="opt_http_seconds",
        metavar="S",
        type=float,
        default=10.0,
        help="how long the clients post bids (default 10)",
    )


def _cmd_bench(args) -> int:
    # The tables and their peers live in the source tree's benchmarks/, beside engine/.
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / f"{args.table}.py").exists():
        raise EngineError(
            "pktx bench runs from a source checkout: benchmarks/ was not found "
            f"beside {root / 'engine'}"
        )
    sys.path.insert(0, str(root))
    import importlib

    from benchmarks.report import Report, run_table
    from engine.cli.progress_bars import wanted

    table = importlib.import_module(f"benchmarks.{args.table}")
    extra = {k.removeprefix("opt_"): v for k, v in vars(args).items() if k.startswith("opt_")}
    options = dict(packets=args.packets, repeat=args.repeat, stream_gb=args.stream_gb, **extra)
    report = Report(
        args.bench,
        as_json=args.json,
        progress=wanted(args),
        parameters={k: v for k, v in options.items() if k != "workdir"},
    )
    return run_table(table.run, report, **options)
