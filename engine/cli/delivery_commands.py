"""``pktx deliver``, ``pktx worker``, ``pktx keys``: the delivery engine's processes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from engine.cli import arguments as A
from engine.errors import EngineError


def add_commands(sub) -> None:
    """Add deliver, worker and keys to the subparsers."""
    s = sub.add_parser("deliver", help="run a packet stream through services on workers")
    s.add_argument(
        "source",
        metavar="SOURCE",
        help="capture file, udp://HOST:PORT, iface:NAME (live capture; options "
        "as iface:NAME?snaplen=N&ring_mb=M&promisc=0) or zmq://HOST:PORT "
        "(upstream)",
    )
    s.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="SINK",
        help="capture file, udp://HOST:PORT or zmq://HOST:PORT (downstream)",
    )
    s.add_argument(
        "--service",
        default="identity",
        metavar="NAME[,NAME...]",
        help="the service chain, applied in order (default: identity)",
    )
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a service parameter (SERVICE.KEY=VALUE for one service); give a key "
        "as key_file=PATH or key_env=VARIABLE to keep it off the command line",
    )
    s.add_argument(
        "--workers",
        type=A.nonneg_int,
        default=None,
        metavar="N",
        help="local worker processes to start (default: one per core; 0: serve "
        "workers that connect to --bind)",
    )
    s.add_argument(
        "--bind",
        metavar="ENDPOINT",
        help="where workers connect (default: a random loopback TCP port)",
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument("--segment-packets", type=A.positive_int, metavar="K")
    g.add_argument("--segment-bytes", type=A.positive_int, metavar="B")
    s.add_argument(
        "--segment-ms",
        type=float,
        metavar="T",
        help="time window: a segment is flushed when full or T ms old",
    )
    s.add_argument(
        "--flow-affinity",
        action="store_true",
        help="both directions of a flow go to the same worker",
    )
    s.add_argument(
        "--share",
        type=A.share,
        metavar="I/K",
        help="deliver only share I of K of the stream (0 <= I < K): the flows the "
        "symmetric flow hash puts there, both directions together; the K "
        "shares of an auction's awards together deliver every packet once",
    )
    s.add_argument("--max-rate", type=A.rate, metavar="RATE", help="shape output (bit/s, 400M)")
    s.add_argument(
        "--min-rate",
        type=A.rate,
        metavar="RATE",
        help="service level: report per second whether it was met",
    )
    s.add_argument("--usage-json", metavar="FILE", help="write the usage record here")
    s.add_argument(
        "--usage-every",
        type=A.positive_float,
        metavar="S",
        help="with --usage-json: also write the usage so far every S seconds while "
        'running (marked "partial": true)',
    )
    s.add_argument(
        "--max-auth-failures",
        type=A.nonneg_int,
        default=0,
        metavar="N",
        help="fail the run once more than N packets fail authentication in decrypt (default 0)",
    )
    s.add_argument(
        "--credit", type=A.positive_int, default=4, help="segments each local worker holds at once"
    )
    s.add_argument("--curve", metavar="DIR", help="CURVE key folder (pktx keys generate)")
    s.add_argument(
        "--worker-start",
        choices=("fork", "spawn"),
        default=None,
        help="how local workers start: fork (from this process, nothing imported "
        "twice; the default on Linux) or spawn (a pktx worker process each)",
    )
    s.add_argument("--format", choices=("pcap", "pcapng"), help="output file format")
    s.add_argument(
        "--ts-resolution",
        choices=("us", "ns"),
        help="timestamp resolution of every output interface (default: each keeps the input's)",
    )
    s.add_argument(
        "--udp-linktype",
        type=int,
        default=1,
        help="link type of udp:// source packets (default 1, Ethernet)",
    )
    s.add_argument("--count", type=A.positive_int, help="a live source ends after N packets")
    s.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="a live source ends after S seconds without a packet",
    )
    s.add_argument(
        "--wait-workers",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for workers to join",
    )
    s.add_argument(
        "--min-workers",
        type=A.positive_int,
        metavar="N",
        help="with --workers 0: start once N workers have joined (default 1)",
    )
    _timing_options(s)
    s.add_argument(
        "--task-timeout",
        type=A.positive_float,
        default=60.0,
        metavar="S",
        help="a worker holding a task longer is disconnected and the task resent (default 60)",
    )
    s.add_argument(
        "--max-attempts",
        type=A.positive_int,
        default=3,
        metavar="N",
        help="a segment that killed or failed on N workers is poison (default 3)",
    )
    s.add_argument(
        "--on-poison",
        choices=("fail", "skip"),
        default="fail",
        help="fail the run on a poison segment (default), or drop it and count it "
        "in the usage record",
    )
    s.add_argument(
        "--downstream-timeout",
        type=A.positive_float,
        default=30.0,
        metavar="S",
        help="zmq:// sink: fail when the downstream node confirms nothing for S "
        "seconds (default 30)",
    )
    s.add_argument(
        "--stream-id",
        metavar="ID",
        help="zmq:// sink: a resumable stream named ID (PKTX-STREAM/2): run again "
        "with the same ID after a stop or a crash, it goes on where the "
        "receiver stands (a capture file source skips what it took)",
    )
    s.add_argument(
        "--resume-from",
        metavar="USAGE_JSON",
        help="udp:// sink: start where an earlier run's usage record "
        "(--usage-json) says the stream stood; packets sent after that record "
        "are sent again",
    )
    s.add_argument(
        "--lease-file",
        metavar="FILE",
        help="stop (as on SIGTERM) when FILE was not touched for --lease-timeout "
        "seconds: a delivery daemon touches it while it holds the job's lease",
    )
    s.add_argument(
        "--lease-timeout",
        type=A.positive_float,
        default=30.0,
        metavar="S",
        help="with --lease-file (default 30)",
    )
    A.json_option(s, "the usage record, as --usage-json writes it")
    A.metrics_option(s)
    s.add_argument(
        "--die-with-parent",
        type=A.positive_int,
        metavar="PID",
        help="end at once (SIGKILL) when process PID, the parent that started this "
        "delivery, ends (Linux's parent-death signal); a delivery daemon gives "
        "its own pid, so a daemon killed with SIGKILL leaves no delivery behind",
    )
    s.set_defaults(func=cmd_deliver)

    s = sub.add_parser("worker", help="a worker node: connect to a dispatcher, run services")
    s.add_argument("--connect", required=True, metavar="ENDPOINT")
    s.add_argument(
        "--service",
        "--services",
        dest="services",
        metavar="NAME[,NAME...]",
        help="services this node offers (default: all installed; --services is the old name)",
    )
    s.add_argument(
        "--credit", type=A.positive_int, default=4, help="segments held at once (default 4)"
    )
    s.add_argument("--name", help="how the node is named in logs and usage records")
    s.add_argument("--curve", metavar="DIR", help="CURVE key folder")
    s.add_argument("--curve-name", default="worker", help="key pair name in the folder")
    s.add_argument(
        "--exit-on-disconnect",
        action="store_true",
        help="leave when the dispatcher says goodbye (instead of waiting for the next)",
    )
    s.add_argument(
        "--max-idle", type=float, metavar="S", help="give up after S seconds without a dispatcher"
    )
    _timing_options(s)
    A.json_option(s, "at exit: the node's name, services, tasks done and failed")
    A.metrics_option(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("keys", help="CURVE keys for dispatchers and workers")
    ksub = s.add_subparsers(dest="keys", metavar="ACTION", required=True)
    k = ksub.add_parser("generate", help="create a key folder")
    k.add_argument("dir", metavar="DIR")
    k.add_argument("--worker-name", default="worker")
    A.json_option(k, "each key file written, by name")
    k.set_defaults(func=cmd_keys_generate)


def _timing_options(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--heartbeat-ms",
        type=A.positive_int,
        default=500,
        metavar="MS",
        help="heartbeat interval (default 500; a dispatcher's WELCOME sets its workers')",
    )
    s.add_argument(
        "--liveness",
        type=A.positive_int,
        default=6,
        metavar="N",
        help="heartbeats missed before a peer is declared dead (default 6)",
    )


def cmd_deliver(args) -> int:
    if args.die_with_parent:  # first: before the engine's imports, the longest part of start-up
        _die_with_parent(args.die_with_parent)
    from engine.delivery.deliver import Delivery, DeliveryOptions

    opts = DeliveryOptions(
        services=args.service,
        params=args.param,
        workers=args.workers,
        bind=args.bind,
        segment_packets=args.segment_packets,
        segment_bytes=args.segment_bytes,
        segment_ms=args.segment_ms,
        flow_affinity=args.flow_affinity,
        share=args.share,
        max_rate_bps=args.max_rate,
        min_rate_bps=args.min_rate,
        usage_json=args.usage_json,
        usage_every_s=args.usage_every,
        max_auth_failures=args.max_auth_failures,
        curve_dir=args.curve,
        credit=args.credit,
        format=args.format,
        ts_resolution=args.ts_resolution,
        udp_linktype=args.udp_linktype,
        count=args.count,
        idle_timeout=args.idle_timeout,
        wait_workers_s=args.wait_workers,
        min_workers=args.min_workers,
        heartbeat_ms=args.heartbeat_ms,
        liveness=args.liveness,
        task_timeout_s=args.task_timeout,
        max_attempts=args.max_attempts,
        on_poison=args.on_poison,
        downstream_timeout_s=args.downstream_timeout,
        stream_id=args.stream_id,
        resume_from=args.resume_from,
        worker_start=args.worker_start,
    )
    delivery = Delivery(args.source, args.output, opts)
    if delivery.source.live:
        _stop_on_signal(delivery.source)
    else:
        # A daemon stops us with SIGTERM: the same clean exit as Ctrl-C (no partial output,
        # local workers stopped), through the KeyboardInterrupt path of Delivery.run.
        signal.signal(signal.SIGTERM, _terminate)
    if args.lease_file:
        _watch_lease(args.lease_file, args.lease_timeout)
    if args.metrics:
        from engine.telemetry import DeliveryCollector, TelemetryServer, delivery_ready

        TelemetryServer(
            args.metrics, [DeliveryCollector(delivery)], delivery_ready(delivery)
        ).start()
    from engine.cli.progress_bars import wanted

    if wanted(args):  # a terminal, without -q or --json
        from engine.delivery.progress import DeliveryProgress

        # A file: a bar of its bytes read; a stream of unknown size: a live line.
        with DeliveryProgress(delivery.meter, read=delivery.source.progress):
            usage = delivery.run()
    else:
        usage = delivery.run()
    if args.json:
        A.print_json(usage)
    elif not args.quiet:
        sys.stderr.write(
            f"delivered {usage['packets_out']} of {usage['packets_in']} packets "
            f"({usage['bytes_out']} bytes) in {usage['duration_ns'] / 1e9:.3f} s, "
            f"mean {usage['mean_rate_bps'] / 1e6:.1f} Mbit/s, {usage['segments']} segments, "
            f"{len(usage['workers'])} workers, {usage['retries']} retries"
            + (
                f", {usage['auth_failures']} failed authentication"
                if usage["auth_failures"]
                else ""
            )
            + (
                f", kernel dropped {usage['source_stats']['kernel_drops']}"
                if "kernel_drops" in usage.get("source_stats", {})
                else ""
            )
            + "\n"
        )
    return 0


def _die_with_parent(pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent ends, and end now if the parent is
    not ``pid`` (any more): it ended between our fork and this call, and we were adopted.

    Done here rather than between fork and exec in the parent (``preexec_fn``): a
    ``preexec_fn`` makes ``subprocess`` fork the whole daemon and run Python in the child, about
    5 ms a delivery; without one it uses vfork. The check of the parent after the call closes
    the window that leaves open."""
    import contextlib
    import ctypes

    pr_set_pdeathsig = 1
    # Not Linux: no such call, and the lease file still stops the delivery.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != pid:
        raise EngineError(
            f"--die-with-parent {pid}: that process has ended (the parent is now {os.getppid()})"
        )


def _watch_lease(path: str, timeout_s: float) -> None:
    """SIGTERM ourselves once ``path`` is older than ``timeout_s``: the daemon that runs this
    delivery can no longer renew the job's lease (it is paused, or cut off), so the broker may
    give the job to another node; this one must not go on delivering beside it."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(min(0.5, timeout_s / 4))
            try:
                age = time.time() - os.stat(path).st_mtime
            except OSError:
                age = timeout_s + 1
            if age > timeout_s:
                logging.getLogger("pktx").error(
                    "--lease-file %s not renewed for %.1f s: stopping", path, age
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="pktx-lease", daemon=True).start()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like SIGINT's KeyboardInterrupt."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated()


def _stop_on_signal(source) -> None:
    """SIGINT or SIGTERM ends a live source's stream: what it captured is delivered and the
    output completed. A second one interrupts (as Ctrl-C or SIGTERM does any other run)."""

    def stop(signum, frame):
        source.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def cmd_worker(args) -> int:
    from engine.delivery.worker import Worker

    services = [s.strip() for s in args.services.split(",")] if args.services else None
    w = Worker(
        args.connect,
        services=services,
        credit=args.credit,
        name=args.name,
        curve_dir=args.curve,
        curve_name=args.curve_name,
        exit_on_disconnect=args.exit_on_disconnect,
        max_idle_s=args.max_idle,
        heartbeat_ms=args.heartbeat_ms,
        liveness=args.liveness,
    )
    w.install_signal_handlers()
    if args.metrics:
        from engine.telemetry import TelemetryServer, WorkerCollector, worker_ready

        TelemetryServer(args.metrics, [WorkerCollector(w)], worker_ready(w)).start()
    status = w.run()
    if args.json:
        A.print_json(
            {
                "name": w.name,
                "connect": args.connect,
                "services": w.services,
                "tasks_done": w.tasks_done,
                "tasks_failed": w.tasks_failed,
                "exit_status": status,
            }
        )
    return status


def cmd_keys_generate(args) -> int:
    from engine.delivery.curve import generate_keys

    paths = generate_keys(args.dir, worker_name=args.worker_name)
    if args.json:
        A.print_json({name: str(path) for name, path in paths.items()})
        return 0
    for name, path in paths.items():
        sys.stdout.write(f"{name}: {path}\n")
    return 0
