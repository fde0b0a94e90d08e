"""``pktx info``, ``pktx convert``, ``pktx generate``: capture files."""

from __future__ import annotations

import json
import sys

from engine.cli import arguments as A


def add_commands(sub) -> None:
    """Add info, convert and generate to the subparsers."""
    s = sub.add_parser("info", help="describe capture files (what capinfos tells)")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument(
        "--errors",
        choices=("strict", "truncate"),
        default="strict",
        help="on damage: fail (strict) or report what was readable (truncate)",
    )
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("convert", help="convert between pcap and pcapng")
    s.add_argument("input", metavar="IN")
    s.add_argument("output", metavar="OUT")
    s.add_argument(
        "--format",
        choices=("pcap", "pcapng"),
        help="output format (default: from OUT's extension, else the input's)",
    )
    s.add_argument(
        "--ts-resolution",
        choices=("us", "ns"),
        help="output timestamp resolution (default: the input's)",
    )
    s.add_argument("--errors", choices=("strict", "truncate"), default="strict")
    A.json_option(s, "what was written: packets, format, resolutions, damage")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("generate", help="write synthetic, valid TCP/UDP traffic")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--packets", type=A.positive_int, required=True)
    s.add_argument("--flows", type=A.positive_int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=("pcap", "pcapng"))
    s.add_argument("--ts-resolution", choices=("us", "ns"), default="ns")
    A.json_option(s, "what was written: packets, flows, format")
    s.set_defaults(func=cmd_generate)


# -- info -------------------------------------------------------------------------------------
def _human_bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def print_info(info) -> None:
    d = info.as_dict()
    dur_s = info.duration_ns / 1e9
    rows = [
        ("File name", d["path"]),
        ("File size", f"{d['file_bytes']} bytes"),
        ("File format", f"{d['format']} (version {d['version']})"),
        ("Byte order", d["byte_order"]),
        ("Timestamp resolution", ", ".join(d["ts_resolution"])),
        ("Sections", str(d["sections"])),
        (
            "Interfaces",
            ", ".join(
                f"{i['linktype_name']} ({i['linktype']}) snaplen "
                f"{i['snaplen']}" + (f" '{i['name']}'" if i["name"] else "")
                for i in d["interfaces"]
            )
            or "none",
        ),
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
        rows.append(
            (
                "Average rate",
                f"{info.captured_bytes * 8 / dur_s:,.0f} bit/s, "
                f"{info.packets / dur_s:,.1f} packets/s",
            )
        )
    if d["damage"]:
        rows.append(("Damage", f"{d['damage']} ({d['dropped_bytes']} bytes dropped)"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        sys.stdout.write(f"{k + ':':<{width + 2}}{v}\n")


def cmd_info(args) -> int:
    from engine.capture.capinfo import capture_info

    status = 0
    for path in args.files:
        info = capture_info(path, errors=args.errors)
        if args.json:
            sys.stdout.write(json.dumps(info.as_dict(), indent=2) + "\n")
        else:
            print_info(info)
        if info.damage:
            status = 1
    return status


# -- convert ----------------------------------------------------------------------------------
def _pick_format(out: str, fmt: str | None, reader) -> str:
    from engine.capture.pcapformat import format_for_path

    return fmt or format_for_path(out, reader.format)


def cmd_convert(args) -> int:
    from engine.capture.reader import CaptureReader
    from engine.capture.writer import CaptureWriter
    from engine.cli.progress_bars import progress_bar, wanted

    reader = CaptureReader(args.input, errors=args.errors)
    fmt = _pick_format(args.output, args.format, reader)
    # Without --ts-resolution each interface keeps its own resolution.
    with (
        CaptureWriter(args.output, format=fmt, ts_resolution=args.ts_resolution) as w,
        progress_bar(
            reader.size, f"converting {args.input}", unit="bytes", enabled=wanted(args)
        ) as update,
    ):
        for batch in reader:
            w.write(batch)
            update(reader.file_end(batch) or 0)
    if args.json:
        A.print_json(
            {
                "output": args.output,
                "packets": w.packets,
                "format": fmt,
                "resolutions": list(w.resolutions),
                "damage": bool(reader.damage),
            }
        )
    elif not args.quiet:
        res = ", ".join(w.resolutions) or "no packets"
        sys.stderr.write(f"wrote {w.packets} packets to {args.output} ({fmt}, {res})\n")
    return 1 if reader.damage else 0


# -- generate ---------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from engine.capture.generate import generate_capture
    from engine.capture.pcapformat import format_for_path
    from engine.cli.progress_bars import progress_bar, wanted

    fmt = args.format or format_for_path(args.output, "pcap")
    with progress_bar(
        args.packets, f"generating {args.output}", unit="packets", enabled=wanted(args)
    ) as update:
        n = generate_capture(
            args.output,
            packets=args.packets,
            flows=args.flows,
            seed=args.seed,
            format=fmt,
            ts_resolution=args.ts_resolution,
            progress=update,
        )
    flows = min(args.flows, n)
    if args.json:
        A.print_json(
            {"output": args.output, "packets": n, "flows": flows, "format": fmt, "seed": args.seed}
        )
    elif not args.quiet:
        sys.stderr.write(f"wrote {n} packets in {flows} flows to {args.output}\n")
    return 0
