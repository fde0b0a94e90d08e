"""``pktx broker ...``: serve the HTTP API, and bootstrap the directory from the command line.

Imported by every ``pktx`` command to build its parser, so it imports nothing heavy at the top:
SQLAlchemy, the models and the API load only when a broker command runs.

The admin commands work on the database directly (an operator's tool on the broker's host) and
call the same domain functions as the API, as the store's first admin (``admin init`` makes it
and prints its API key once). Output is JSON on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from broker.command_line import (
    db_option,
    first_admin,
    guarded,
    json_everywhere,
    open_store,
    print_json,
)


def add_broker_commands(subparsers) -> None:
    """Add ``broker`` with its subcommands to the ``pktx`` parser's subparsers."""
    broker = subparsers.add_parser("broker", help="the market: HTTP API and administration")
    sub = broker.add_subparsers(dest="broker_command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the broker's HTTP API (FastAPI on uvicorn)",
        description="Each setting comes from its flag, else $PKTX_BROKER_<NAME> (e.g. "
        "PKTX_BROKER_PORT), else the TOML file of --config or $PKTX_BROKER_CONFIG "
        "(keys: db, host, port, processes, reputation_half_life_days, expire_every, "
        "log_level), else its default.",
    )
    db_option(serve)
    serve.add_argument("--config", metavar="FILE", help="a TOML file of settings")
    serve.add_argument("--host", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (8040)")
    serve.add_argument(
        "--reputation-half-life-days", type=float, help="age at which a rating counts half (90)"
    )
    serve.add_argument(
        "--processes",
        "--workers",
        type=int,
        dest="processes",
        help="HTTP server processes (1); more serve more requests at once on "
        "several cores, SQLite still takes one writer at a time "
        "(--workers is the old name)",
    )
    serve.add_argument(
        "--expire-every",
        type=float,
        metavar="SECONDS",
        help="how often overdue negotiations are marked expired (30; 0: never)",
    )
    serve.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"))
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (chain); needed to listen "
        "on an address other than loopback",
    )
    serve.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    serve.set_defaults(func=guarded(_serve))

    admin = sub.add_parser("admin", help="bootstrap networks, providers, users, devices, keys")
    what = admin.add_subparsers(dest="admin_command", metavar="WHAT", required=True)

    p = what.add_parser("init", help="create the first admin and print its API key")
    db_option(p)
    p.add_argument("--name", default="admin")
    p.set_defaults(func=guarded(_init))

    p = what.add_parser("network", help="add a network")
    db_option(p)
    p.add_argument("name")
    p.set_defaults(func=guarded(_network))

    p = what.add_parser("provider", help="add a provider to a network")
    db_option(p)
    p.add_argument("--network", type=int, required=True, help="network id")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--service",
        "--services",
        dest="services",
        required=True,
        metavar="NAME[,NAME...]",
        help="the services it offers, e.g. identity,checksum,anonymize (--services "
        "is the old name)",
    )
    p.add_argument("--capacity-bps", type=int, required=True)
    p.add_argument("--currency", default="EUR", help="ISO 4217 code (EUR)")
    p.add_argument("--per-gb", type=int, required=True, help="minor units per 10^9 bytes")
    p.add_argument(
        "--per-mbps-hour", type=int, required=True, help="minor units per Mbit/s per hour"
    )
    p.add_argument(
        "--reservation-ppm",
        type=int,
        default=800_000,
        help="lowest acceptable price, millionths of the list price (800000)",
    )
    p.add_argument(
        "--beta-ppm",
        type=int,
        default=1_000_000,
        help="concession exponent in millionths (1000000: linear)",
    )
    p.add_argument("--manual", action="store_true", help="answer negotiations by hand")
    p.set_defaults(func=guarded(_provider))

    p = what.add_parser("user", help="add a user, a customer of its home provider")
    db_option(p)
    p.add_argument("--name", required=True)
    p.add_argument("--home-provider", type=int, required=True)
    p.set_defaults(func=guarded(_user))

    p = what.add_parser("device", help="add a client device to a user")
    db_option(p)
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--name", required=True)
    p.set_defaults(func=guarded(_device))

    p = what.add_parser("phone", help="add a phone number (E.164) to a user")
    db_option(p)
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--number", required=True, help="+14155552671, or national with --region")
    p.add_argument("--region", help="ISO 3166 region of a national number (e.g. DE)")
    p.add_argument("--device", type=int)
    p.set_defaults(func=guarded(_phone))

    p = what.add_parser("key", help="issue an API key (printed once)")
    db_option(p)
    p.add_argument(
        "kind", choices=("admin", "network", "provider", "user", "device", "phone_number")
    )
    p.add_argument("id", type=int)
    p.add_argument("--label", default="")
    p.set_defaults(func=guarded(_key))

    p = what.add_parser("revoke", help="revoke an API key by its prefix")
    db_option(p)
    p.add_argument("prefix")
    p.set_defaults(func=guarded(_revoke))

    p = what.add_parser("list", help="list networks, providers and users")
    db_option(p)
    p.set_defaults(func=guarded(_list))

    from broker.billing_cli import add_billing_commands

    add_billing_commands(sub)

    from broker.seal_cli import add_seal_commands

    add_seal_commands(sub)
    json_everywhere(sub, but=(serve,))


def _serve(args) -> int:
    import shutil
    import tempfile

    import uvicorn

    from broker.api import create_app
    from broker.metrics import MULTIPROCESS_DIR
    from broker.settings import load
    from broker.store import Store
    from engine.logs import for_children

    settings = load(
        args.config,
        db=args.db,
        host=args.host,
        port=args.port,
        processes=args.processes,
        expire_every=args.expire_every,
        reputation_half_life_days=args.reputation_half_life_days,
        log_level=args.log_level or ("warning" if getattr(args, "quiet", False) else None),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    tls = _tls(settings)
    store = Store(settings.db)  # migrates the store once, before any worker starts
    scheme = "https" if tls else "http"
    logging.getLogger("pktx.broker").info(
        "serving %s store on %s://%s:%s with %d process(es) (OpenAPI at /docs)",
        store.backend,
        scheme,
        settings.host,
        settings.port,
        settings.processes,
    )
    # Open event streams do not hold a shutdown up: after 10 s they are closed (devices
    # reconnect with Last-Event-ID and miss nothing).
    # uvicorn's loggers go through pktx's own handler (--log-format, secrets masked); its
    # --log-level still sets how much of them.
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        **tls,
    }
    if settings.processes == 1:
        uvicorn.run(
            create_app(store, settings=settings, expire_every=settings.expire_every or None),
            **common,
        )
        return 0
    # Worker processes build their own app (uvicorn imports a factory in each of them): they
    # read the settings resolved here from the environment.
    store.dispose()
    os.environ.update(settings.model_copy(update={"db": store.url}).export())
    os.environ.update(for_children())
    # Each worker counts its calls in files of one folder, so any worker's /metrics sums them
    # all (broker.metrics); a folder of the operator's own is used as it is.
    own = not os.environ.get(MULTIPROCESS_DIR)
    if own:
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="pktx-broker-metrics-")
    try:
        uvicorn.run(
            "broker.api.main:app_from_environment",
            factory=True,
            workers=settings.processes,
            **common,
        )
    finally:
        if own:
            shutil.rmtree(os.environ.pop(MULTIPROCESS_DIR), ignore_errors=True)
    return 0


def _tls(settings) -> dict:
    """uvicorn's TLS arguments; plain HTTP is served on a loopback address only (API keys
    would cross the network in clear)."""
    import ipaddress

    from broker.errors import InvalidInput

    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise InvalidInput("give --tls-cert and --tls-key together", field="tls_key")
    if settings.tls_cert:
        for name in ("tls_cert", "tls_key"):
            path = getattr(settings, name)
            if not os.path.isfile(path):
                raise InvalidInput(f"--{name.replace('_', '-')} {path}: no such file", field=name)
        return {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInput(
            f"--host {settings.host}: plain HTTP is served on loopback only; "
            f"give --tls-cert and --tls-key to listen there",
            field="host",
        )
    return {}


def _init(args) -> int:
    from broker.actors import Actor, issue_key
    from broker.directory import create_admin

    with open_store(args).write() as s:
        admin = create_admin(s, args.name)
        key, token = issue_key(s, Actor("admin", admin.id), "admin", admin.id, "bootstrap")
        return print_json(
            {
                "admin_id": admin.id,
                "key_prefix": key.prefix,
                "token": token,
                "note": "store the token now: it is not shown again",
            }
        )


def _network(args) -> int:
    from broker.directory import create_network

    with open_store(args).write() as s:
        n = create_network(s, first_admin(s), args.name)
        return print_json({"id": n.id, "name": n.name})


def _provider(args) -> int:
    from broker.directory import create_provider
    from broker.views import provider_view

    with open_store(args).write() as s:
        p = create_provider(
            s,
            first_admin(s),
            network_id=args.network,
            name=args.name,
            services=args.services,
            capacity_bps=args.capacity_bps,
            currency=args.currency,
            per_gb_minor=args.per_gb,
            per_mbps_hour_minor=args.per_mbps_hour,
            reservation_ppm=args.reservation_ppm,
            concession_beta_ppm=args.beta_ppm,
            mode="manual" if args.manual else "policy",
        )
        return print_json(provider_view(s, p.id))


def _user(args) -> int:
    from broker.directory import create_user

    with open_store(args).write() as s:
        u = create_user(s, first_admin(s), name=args.name, home_provider_id=args.home_provider)
        return print_json({"id": u.id, "name": u.name, "home_provider_id": u.home_provider_id})


def _device(args) -> int:
    from broker.directory import add_device

    with open_store(args).write() as s:
        d = add_device(s, first_admin(s), user_id=args.user, name=args.name)
        return print_json({"id": d.id, "user_id": d.user_id, "name": d.name})


def _phone(args) -> int:
    from broker.directory import add_phone_number

    with open_store(args).write() as s:
        p = add_phone_number(
            s,
            first_admin(s),
            user_id=args.user,
            number=args.number,
            region=args.region,
            device_id=args.device,
        )
        return print_json(
            {"id": p.id, "user_id": p.user_id, "e164": p.e164, "device_id": p.device_id}
        )


def _key(args) -> int:
    from broker.actors import issue_key

    with open_store(args).write() as s:
        key, token = issue_key(s, first_admin(s), args.kind, args.id, args.label)
        return print_json(
            {
                "kind": args.kind,
                "id": args.id,
                "key_prefix": key.prefix,
                "token": token,
                "note": "store the token now: it is not shown again",
            }
        )


def _revoke(args) -> int:
    from broker.actors import revoke_key

    with open_store(args).write() as s:
        key = revoke_key(s, first_admin(s), args.prefix)
        return print_json({"key_prefix": key.prefix, "revoked_at": key.revoked_at})


def _list(args) -> int:
    from sqlalchemy import select

    from broker.models import Network, Provider, User

    with open_store(args).read() as s:
        return print_json(
            {
                "networks": [{"id": n.id, "name": n.name} for n in s.scalars(select(Network))],
                "providers": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "network_id": p.network_id,
                        "services": list(p.service_names),
                    }
                    for p in s.scalars(select(Provider))
                ],
                "users": [
                    {"id": u.id, "name": u.name, "home_provider_id": u.home_provider_id}
                    for u in s.scalars(select(User))
                ],
            }
        )


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m broker.cli ...``) for when ``pktx`` is not wired up."""
    parser = argparse.ArgumentParser(prog="pktx")
    add_broker_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
