"""``pktx broker seal-params``: a requester seals an award's secret service parameters to the
delivering provider's key, on its own machine, and posts the box (docs/daemon.md, "Sealed
service parameters").

A client of the broker's HTTP API with the user's (or device's) key, like a device: the values
are read from a file or an environment variable (or, at the price of ``ps`` showing them, the
command line), sealed here, and only the box leaves. Output is the award's sealing status as
JSON, never a value.
"""

from __future__ import annotations

import os

from broker.command_line import print_json


def add_seal_commands(sub) -> None:
    p = sub.add_parser(
        "seal-params",
        help="seal an award's secret service parameters to its provider",
        description="Reads the award's sealed parameters and its provider's sealing key from "
        "the broker, seals the values to the key here (X25519, HKDF-SHA256, "
        "ChaCha20-Poly1305, bound to the award and the provider) and posts the "
        "box. Only the delivering provider's daemon can open it.",
    )
    from engine.cli.arguments import broker_options

    broker_options(p, "your (or your device's)")
    p.add_argument("--award", type=int, required=True, metavar="ID")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        required=True,
        metavar="SERVICE.PARAM=VALUE",
        help="a secret parameter the request declared; SERVICE.PARAM_file=PATH or "
        "SERVICE.PARAM_env=VARIABLE keep the value off the command line "
        "(repeatable)",
    )
    p.add_argument(
        "--expect-fingerprint",
        metavar="HEX",
        help="refuse unless the provider's key has this fingerprint (learnt from "
        "the provider out of band: the broker is then not trusted with it)",
    )
    p.set_defaults(func=_seal)


def values(params: list[str]) -> dict[str, str]:
    """``SERVICE.PARAM`` -> value, from ``=VALUE``, ``_file=PATH`` or ``_env=VARIABLE``; errors
    name the parameter, the file or the variable, never the value."""
    from engine.errors import EngineError

    out: dict[str, str] = {}
    for n, item in enumerate(params, 1):
        name, sep, given = item.partition("=")
        if not sep or "." not in name:
            raise EngineError(
                f"--param {n}: not SERVICE.PARAM=VALUE (its text is not shown, in case it is a key)"
            )
        if name.endswith("_file"):
            name = name[: -len("_file")]
            try:
                with open(given, encoding="utf-8") as f:
                    value = f.read(4096).strip()
            except OSError as exc:
                raise EngineError(f"--param {name}_file: {given}: {exc.strerror or exc}") from None
        elif name.endswith("_env"):
            name = name[: -len("_env")]
            value = os.environ.get(given, "").strip()
        else:
            value = given.strip()
        if not value:
            raise EngineError(f"--param {name}: empty")
        out[name] = value
    return out


def _check(name: str, value: str) -> None:
    """The value parses as the service's parameter (a key of the right length): the mistake
    is caught here, not by the provider's daemon mid-delivery."""
    from engine.errors import EngineError
    from engine.services import ServiceError, service_class

    service, _, param = name.partition(".")
    try:
        declared = {p.name: p for p in service_class(service).params}
    except ServiceError as exc:
        raise EngineError(str(exc)) from None
    if param not in declared:
        raise EngineError(f"--param {name}: {service} has no parameter {param!r}")
    try:
        declared[param].parse(value)
    except ValueError as exc:
        raise EngineError(f"--param {name}: {exc}") from None


def _seal(args) -> int:
    import base64

    import httpx

    from engine.daemon.broker_client import check_url, read_key, trusting
    from engine.daemon.sealing import binding, fingerprint, seal
    from engine.errors import EngineError

    secrets = values(args.param)
    for name, value in secrets.items():
        _check(name, value)
    verify = trusting(args.ca_bundle) if args.ca_bundle else True
    headers = {"Authorization": f"Bearer {read_key(args.key_file, args.key_env)}"}
    with httpx.Client(
        base_url=check_url(args.broker), verify=verify, timeout=30, headers=headers
    ) as http:
        status = _answer(http.get(f"/v1/awards/{args.award}/sealed-params"))
        names = status["names"]
        if not names:
            raise EngineError(f"award {args.award}'s request declared no sealed parameters")
        if sorted(secrets) != sorted(names):
            raise EngineError(
                f"award {args.award} waits for {', '.join(names)}; give each "
                f"of them once (given: {', '.join(secrets)})"
            )
        public = status["public_key"]
        if public is None:
            raise EngineError(
                f"provider {status['provider_id']} has published no sealing key "
                "yet (its daemons publish it when they start)"
            )
        if args.expect_fingerprint and fingerprint(public) != args.expect_fingerprint.lower():
            raise EngineError(
                f"provider {status['provider_id']}'s sealing key at the broker "
                f"is {fingerprint(public)}, not {args.expect_fingerprint}: "
                "nothing was sealed"
            )
        box = seal(public, secrets, binding(args.award, status["provider_id"]))
        done = _answer(
            http.put(
                f"/v1/awards/{args.award}/sealed-params",
                json={"sealed_to": public, "box": base64.b64encode(box).decode()},
            )
        )
    return print_json(done)


def _answer(r) -> dict:
    from engine.errors import EngineError

    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code >= 400:
        raise EngineError(
            f"the broker refused ({r.status_code} {body.get('error', 'error')}): "
            f"{body.get('message') or r.text[:300]}"
        )
    return body
