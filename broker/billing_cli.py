"""``pktx broker billing ...``, ``statements ...``, ``settle``, ``credit ...``: close a billing
period, look at statements, settle a period between providers, refit the credit model and show
a user's credit; on the broker's store directly (an operator's tool on the broker's host,
acting as the store's first admin; output JSON on stdout unless a format says otherwise)."""

from __future__ import annotations

import sys

from broker.command_line import db_option, first_admin, guarded, open_store, print_json


def add_billing_commands(sub) -> None:
    """Add ``billing``, ``settle`` and ``statements`` to the ``pktx broker`` subparsers."""

    billing = sub.add_parser("billing", help="close billing periods")
    what = billing.add_subparsers(dest="billing_command", metavar="WHAT", required=True)
    p = what.add_parser(
        "close",
        help="rate and finalize a period's statements (safe to run twice)",
        description="Every user with charges on no statement yet gets its statement for the "
        "period from its home provider, finalized (numbered, hashed, sent to its "
        "devices). A close that failed midway is finished by running it again.",
    )
    db_option(p)
    p.add_argument(
        "--period", required=True, metavar="YYYY-MM", help="the month the period starts in"
    )
    p.add_argument(
        "--provider",
        metavar="NAME_OR_ID",
        help="one home provider (default: every provider with users)",
    )
    p.add_argument("--batch", type=int, default=500, help="statements per transaction (500)")
    p.add_argument(
        "--collect",
        action="store_true",
        help="then charge each unpaid statement to its user's default card",
    )
    p.set_defaults(func=guarded(_close))

    p = sub.add_parser(
        "settle",
        help="settle a period between providers (safe to run twice)",
        description="Every home provider issues its settlement batches for the period (one "
        "per delivering provider: the lines of its finalized statements that "
        "provider delivered, not settled yet), each is acknowledged with its own "
        "document, and both directions between two providers are netted into one "
        "amount due, posted to the ledger. Running it again finds nothing new.",
    )
    db_option(p)
    p.add_argument(
        "--period", required=True, metavar="YYYY-MM", help="the month the period starts in"
    )
    p.add_argument(
        "--provider",
        metavar="NAME_OR_ID",
        help="only this provider's settlements, as home or delivering provider",
    )
    p.set_defaults(func=guarded(_settle))

    statements = sub.add_parser("statements", help="list, show and verify statements")
    what = statements.add_subparsers(dest="statements_command", metavar="WHAT", required=True)
    p = what.add_parser("list", help="list statements")
    db_option(p)
    p.add_argument("--user", metavar="NAME_OR_ID")
    p.add_argument("--period", metavar="YYYY-MM")
    p.set_defaults(func=guarded(_list))
    p = what.add_parser("show", help="a statement, laid out by one of its user's profiles")
    db_option(p)
    p.add_argument("id", type=int)
    p.add_argument("--profile", metavar="NAME", help="the user's profile (default: its default)")
    p.add_argument("--format", choices=("text", "html", "pdf", "json"), default="text")
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=guarded(_show))
    p = what.add_parser("verify", help="check a finalized statement against its hash")
    db_option(p)
    p.add_argument("id", type=int)
    p.set_defaults(func=guarded(_verify))

    from broker.payments_cli import add_payments_commands

    add_payments_commands(sub)

    credit = sub.add_parser("credit", help="the credit model and users' credit")
    what = credit.add_subparsers(dest="credit_command", metavar="WHAT", required=True)
    p = what.add_parser(
        "retrain",
        help="refit the credit model on the store's outcomes",
        description="Fits a logistic regression of paying a statement by its due date on the "
        "features of every finalized statement past its due date, stores it as the "
        "next model version (the prior while outcomes are too few) and reports its "
        "AUC and its coefficients beside the prior's.",
    )
    db_option(p)
    p.set_defaults(func=guarded(_retrain))
    p = what.add_parser("show", help="a user's credit decided now: score, limit, reasons")
    db_option(p)
    p.add_argument("user", metavar="NAME_OR_ID")
    p.set_defaults(func=guarded(_credit_show))


def _named(session, model, value: str, what: str) -> int:
    from sqlalchemy import select

    from broker.errors import BrokerError

    ident = (
        int(value)
        if value.isdigit()
        else session.scalar(select(model.id).where(model.name == value))
    )
    if ident is None or session.get(model, ident) is None:
        raise BrokerError(f"no {what} {value!r}")
    return ident


def _close(args) -> int:
    from sqlalchemy import select

    from broker.models import Provider, User
    from broker.statements import close_period

    store = open_store(args)
    with store.read() as s:
        admin = first_admin(s)
        if args.provider is not None:
            homes = [_named(s, Provider, args.provider, "provider")]
        else:
            homes = list(
                s.scalars(select(User.home_provider_id).distinct().order_by(User.home_provider_id))
            )
    from engine.cli.progress_bars import step_bar, wanted

    results = []
    shown = wanted(args)
    with step_bar(f"closing {args.period}", enabled=shown) as bar:
        for n, home in enumerate(homes):

            def progress(done: int, n=n, home=home) -> None:
                bar(n, len(homes), f"provider {home}: {done} statements finalized")

            bar(n, len(homes), f"provider {home}")
            results.append(
                close_period(
                    store.write,
                    admin,
                    home,
                    args.period,
                    batch=args.batch,
                    on_batch=progress if shown else None,
                )
            )
            if args.collect:  # after the finalizing transactions, never inside them
                from broker.payments_cli import collect_period

                bar(n, len(homes), f"provider {home}: collecting")
                results[-1]["collected"] = collect_period(store, args.period, home)
        bar(len(homes), len(homes), "done")
    return print_json({"period": args.period, "providers": results})


def _settle(args) -> int:
    from broker.models import Provider
    from broker.settlements import settle_period

    with open_store(args).write() as s:
        provider = _named(s, Provider, args.provider, "provider") if args.provider else None
        return print_json(settle_period(s, first_admin(s), args.period, provider_id=provider))


def _list(args) -> int:
    from broker.models import User
    from broker.statements import list_statements

    with open_store(args).read() as s:
        user = _named(s, User, args.user, "user") if args.user else None
        rows = list_statements(s, first_admin(s), user_id=user, period=args.period, limit=10_000)
        return print_json(
            [
                {
                    "id": r.id,
                    "number": r.number,
                    "status": r.status,
                    "home_provider_id": r.home_provider_id,
                    "user_id": r.user_id,
                    "period": r.period,
                    "totals": r.totals,
                    "lines": r.line_count,
                }
                for r in rows
            ]
        )


def _verify(args) -> int:
    from broker.statements import get_statement, verify

    with open_store(args).read() as s:
        statement = get_statement(s, first_admin(s), args.id)
        ok = verify(s, statement)
        print_json(
            {
                "id": statement.id,
                "number": statement.number,
                "status": statement.status,
                "content_sha256": statement.content_sha256,
                "intact": ok,
            }
        )
        return 0 if ok else 2


def _show(args) -> int:
    from broker.statements import get_statement, rendered

    with open_store(args).read() as s:
        body = rendered(s, get_statement(s, first_admin(s), args.id), args.profile, args.format)
    data = body if isinstance(body, bytes) else body.encode()
    if args.output:
        from pathlib import Path

        Path(args.output).write_bytes(data)
        sys.stderr.write(f"pktx broker: statement {args.id} written to {args.output}\n")
    elif args.format == "pdf" and sys.stdout.isatty():
        from broker.errors import BrokerError

        raise BrokerError("a PDF is not for a terminal: give --output FILE or redirect stdout")
    else:
        sys.stdout.buffer.write(
            data if data.endswith(b"\n") or args.format == "pdf" else data + b"\n"
        )
    return 0


def _retrain(args) -> int:
    from broker.credit import FEATURES, PRIOR, retrain

    with open_store(args).write() as s:
        done = retrain(s)
        fitted = done.fitted or {}
        return print_json(
            {
                "model_version": done.model.version,
                "model_kind": done.model.kind,
                "outcomes": done.outcomes,
                "defaults": done.defaults,
                "auc": None if done.auc is None else round(done.auc, 4),
                "seconds": round(done.seconds, 3),
                "coefficients": [
                    {
                        "feature": f,
                        "prior": round(PRIOR[f], 4),
                        "fitted": round(fitted[f], 4) if f in fitted else None,
                    }
                    for f in ("intercept", *FEATURES)
                ],
            }
        )


def _credit_show(args) -> int:
    from broker.credit import current_decision, decision_view, exposure
    from broker.models import User

    with open_store(args).write() as s:
        user = _named(s, User, args.user, "user")
        view = decision_view(current_decision(s, first_admin(s), user))
        view["owed_minor"] = owed = exposure(s, user)
        view["available_minor"] = view["limit_minor"] - owed
        return print_json(view)
