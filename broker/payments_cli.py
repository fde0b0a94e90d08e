"""``pktx broker payments ...``: the payments job on the broker's store (dunning retries, the
unknown-status resolver, overdue ratings) and automatic collection of a closed period, as an
operator runs them from cron on the broker's host (output JSON on stdout)."""

from __future__ import annotations

from broker.command_line import db_option, guarded, open_store, print_json


def add_payments_commands(sub) -> None:
    """Add ``payments`` to the ``pktx broker`` subparsers."""
    payments = sub.add_parser("payments", help="collect, retry and resolve card payments")
    what = payments.add_subparsers(dest="payments_command", metavar="WHAT", required=True)
    p = what.add_parser(
        "run-due",
        help="run what is due: resolve unknown payments, dunning retries, overdue",
        description="Ask the gateway about payments whose outcome is unknown (never charging "
        "again), retry failed payments whose retry is due with the user's default "
        "card, and rate users whose statements are unpaid after their due date. "
        "Safe to run at any time, as often as wanted.",
    )
    db_option(p)
    p.set_defaults(func=guarded(_run_due))
    p = what.add_parser(
        "collect",
        help="charge the default cards for a closed period's unpaid statements",
        description="Automatic collection: each finalized, unpaid statement of the period is "
        "charged to its user's default card (users without one wait to pay).",
    )
    db_option(p)
    p.add_argument("--period", required=True, metavar="YYYY-MM")
    p.set_defaults(func=guarded(_collect))


def unpaid_in(store, period: str, home_provider_id: int | None = None) -> list[int]:
    """The ids of a period's finalized statements not paid in full."""
    from sqlalchemy import select

    from broker.models import Statement

    query = select(Statement.id).where(
        Statement.period == period, Statement.status == "finalized", Statement.paid_at.is_(None)
    )
    if home_provider_id is not None:
        query = query.where(Statement.home_provider_id == home_provider_id)
    with store.read() as s:
        return list(s.scalars(query.order_by(Statement.id)))


def collect_period(store, period: str, home_provider_id: int | None = None) -> dict:
    from broker.payment_jobs import collect

    return collect(store, unpaid_in(store, period, home_provider_id))


def _run_due(args) -> int:
    from broker.payment_jobs import run_due

    return print_json(run_due(open_store(args)))


def _collect(args) -> int:
    return print_json(
        {"period": args.period, "collected": collect_period(open_store(args), args.period)}
    )
