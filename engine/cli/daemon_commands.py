"""``pktx daemon``: a provider's node takes its awarded jobs from the broker and delivers them
(docs/daemon.md)."""

from __future__ import annotations

from engine.cli import arguments as A


def add_commands(sub) -> None:
    s = sub.add_parser(
        "daemon",
        help="take the provider's awarded jobs from the broker and deliver them",
        description="Connects out to the broker (so it works behind NAT), claims "
        "the jobs awarded to the key's provider, delivers each with "
        "the engine, reports usage exactly once, and drains on "
        "SIGTERM.",
    )
    A.broker_options(s, "the provider's")
    s.add_argument(
        "--provider",
        type=A.positive_int,
        metavar="ID",
        help="the provider to claim for, when the key speaks for several",
    )
    s.add_argument(
        "--name", default="", help="this daemon's name at the broker (default: host-pid)"
    )
    s.add_argument(
        "--state",
        default="pktx-daemon",
        metavar="DIR",
        help="where the daemon keeps its state (default ./pktx-daemon)",
    )
    s.add_argument(
        "--files",
        metavar="DIR",
        help="the folder capture files named by jobs are read from and written to "
        "(default: no file jobs)",
    )
    s.add_argument(
        "--workers",
        type=A.nonneg_int,
        default=None,
        metavar="N",
        help="local worker processes per delivery (default: one per core; 0: only "
        "remote workers on --bind)",
    )
    s.add_argument("--bind", metavar="ENDPOINT", help="where remote workers connect")
    s.add_argument("--curve", metavar="DIR", help="CURVE key folder (pktx keys generate)")
    s.add_argument(
        "--param",
        action="append",
        default=[],
        type=_node_param,
        metavar="SERVICE.KEY=VALUE",
        help="a service parameter of this node, given to every job whose chain has "
        "the service; a key as SERVICE.key_env=VARIABLE or "
        "SERVICE.key_file=PATH, so that it never travels through the broker "
        "(repeatable)",
    )
    s.add_argument(
        "--sealing-key",
        metavar="FILE",
        help="the provider's X25519 sealing key (PEM, mode 0600), shared by its "
        "daemons like its API key: jobs' sealed parameters open with it; made "
        "when missing and published to the broker (default STATE/sealing.key)",
    )
    s.add_argument(
        "--replace-sealing-key",
        action="store_true",
        help="publish this node's sealing key over another one the provider had "
        "(a rotation: parameters sealed to the old key reach no daemon)",
    )
    s.add_argument(
        "--max-jobs",
        type=A.positive_int,
        default=1,
        metavar="N",
        help="jobs delivered at once (default 1)",
    )
    s.add_argument(
        "--no-standby",
        dest="standby",
        action="store_false",
        help="start each delivery when its job comes, instead of keeping a spare delivery "
        "process started while the node is idle (its start-up then counts in each job)",
    )
    s.add_argument(
        "--lease",
        type=_lease,
        default=30,
        metavar="S",
        help="lease asked for each job in whole seconds, 5..300, renewed every "
        "third of it (default 30)",
    )
    s.add_argument(
        "--grace",
        type=A.positive_float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, how long running jobs may take before they are handed back (default 30)",
    )
    s.add_argument(
        "--report-every",
        type=A.positive_float,
        default=2.0,
        metavar="S",
        help="usage report interval of a streaming job (default 2)",
    )
    A.metrics_option(s)
    A.json_option(s, "at exit: its name, provider, jobs finished, and what happened to them")
    s.set_defaults(func=cmd_daemon)


def _lease(text: str) -> int:
    value = A.positive_int(text)
    if not 5 <= value <= 300:
        import argparse

        raise argparse.ArgumentTypeError(f"{value} is not 5..300 seconds")
    return value


def _node_param(text: str) -> str:
    name, sep, _value = text.partition("=")
    service, dot, key = name.rpartition(".")
    if not (sep and dot and service and key):
        import argparse

        # Not repeated: a key pasted without its name would end up in a log.
        raise argparse.ArgumentTypeError(
            "a parameter is not SERVICE.KEY=VALUE (its text is not shown, in case it is a key)"
        )
    return text


def cmd_daemon(args) -> int:
    import signal

    from engine.cli import EARLY_SIGNALS

    # SIGTERM during start-up drains too (the handlers proper come with the daemon): kept
    # since the command line was read (engine.cli), or from here when started otherwise.
    early = EARLY_SIGNALS
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    from engine.daemon.broker_client import read_key
    from engine.daemon.node import Daemon, DaemonOptions
    from engine.daemon.runs import NodeOptions

    key = read_key(args.key_file, args.key_env)
    node = NodeOptions(
        workers=args.workers,
        bind=args.bind,
        curve_dir=args.curve,
        files=args.files,
        params=tuple(args.param),
    )
    daemon = Daemon(
        args.broker,
        key,
        args.state,
        node,
        DaemonOptions(
            name=args.name,
            provider_id=args.provider,
            max_jobs=args.max_jobs,
            lease_s=args.lease,
            grace_s=args.grace,
            report_every_s=args.report_every,
            sealing_key_path=args.sealing_key,
            replace_sealing_key=args.replace_sealing_key,
            standby=args.standby,
        ),
        ca_bundle=args.ca_bundle,
    )
    daemon.install_signal_handlers()
    if args.metrics:
        from engine.telemetry import DaemonCollector, TelemetryServer, daemon_ready

        TelemetryServer(args.metrics, [DaemonCollector(daemon)], daemon_ready(daemon)).start()
    if early:
        daemon.draining.set()
    status = daemon.run()
    if args.json:
        A.print_json(
            {
                "name": daemon.name,
                "provider_id": daemon.provider_id,
                "jobs_finished": daemon.finished,
                "events": dict(daemon.events),
                "exit_status": status,
            }
        )
    return status
