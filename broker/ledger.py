"""The double-entry ledger (docs/billing.md, "Ledger"): every movement of money is one posting
of entries that sum to zero in each currency; an account's balance is the sum of its entries.

Debits are positive, credits negative. Accounts are named ``<kind>:<owner>[:<counterparty>]``:

- ``receivable:user:<u>``: what user ``u`` owes its home provider (debited by its statements,
  credited by its payments);
- ``revenue:provider:<h>``: home provider ``h``'s own revenue: its own deliveries and its
  margin on other providers' (credited);
- ``payable:provider:<h>:<p>``: what home provider ``h`` owes delivering provider ``p`` for the
  charges of ``p``'s deliveries to ``h``'s users (credited by statements, debited by
  settlements);
- ``cash:provider:<h>``: money ``h`` holds (debited by payments, credited by refunds and
  settlements it pays);
- ``refunds:provider:<h>``: refunds ``h`` gave (debited).

A posting is identified by ``(kind, ref)``: posting the same event again returns the first
posting when its entries are the same, and is refused when they differ.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from broker.clock import resolve_now
from broker.currency import MINOR_DIGITS
from broker.errors import Conflict, InvalidInput
from broker.models import LedgerEntry, LedgerPosting


def receivable(user_id: int) -> str:
    return f"receivable:user:{user_id}"


def revenue(home_id: int) -> str:
    return f"revenue:provider:{home_id}"


def payable(home_id: int, provider_id: int) -> str:
    return f"payable:provider:{home_id}:{provider_id}"


def cash(home_id: int) -> str:
    return f"cash:provider:{home_id}"


def refunds(home_id: int) -> str:
    return f"refunds:provider:{home_id}"


@dataclass(frozen=True)
class Entry:
    account: str
    currency: str
    amount_minor: int


def combine(entries: Iterable[Entry]) -> list[Entry]:
    """Entries with one per (account, currency), zero ones dropped, in a stable order."""
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for e in entries:
        sums[(e.account, e.currency)] += e.amount_minor
    return [Entry(a, c, m) for (a, c), m in sorted(sums.items()) if m]


def check_balanced(entries: Iterable[Entry], *, what: str) -> None:
    per_currency: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.currency not in MINOR_DIGITS:
            raise InvalidInput(f"{what}: unknown currency {e.currency!r}", field="currency")
        per_currency[e.currency] += e.amount_minor
    unbalanced = {c: m for c, m in per_currency.items() if m}
    if unbalanced:
        raise InvalidInput(f"{what}: entries do not sum to zero: {unbalanced}", field="entries")


def post(
    session: Session,
    kind: str,
    ref: str,
    entries: Iterable[Entry],
    *,
    memo: str = "",
    now: datetime | None = None,
) -> int:
    """Post one event's entries (combined per account and currency) in the caller's
    transaction; returns the posting's id. The same (kind, ref) again: the first posting's id
    when the entries are the same, `Conflict` when they differ."""
    return post_many(session, kind, {ref: entries}, memo=memo, now=now)[ref]


def post_many(
    session: Session,
    kind: str,
    postings: Mapping[str, Iterable[Entry]],
    *,
    memo: str = "",
    now: datetime | None = None,
) -> dict[str, int]:
    """Several postings of one kind at once (a period close posts thousands): two statements
    for the lot, whatever their number. Returns each ref's posting id."""
    now = resolve_now(now)
    combined = {ref: combine(entries) for ref, entries in postings.items()}
    for ref, entries in combined.items():
        check_balanced(entries, what=f"{kind} {ref}")
    conn = session.connection()
    refs = sorted(combined)
    existing: dict[str, int] = {}
    for i in range(0, len(refs), 900):
        chunk = refs[i : i + 900]
        existing.update(
            conn.execute(
                select(LedgerPosting.ref, LedgerPosting.id).where(
                    LedgerPosting.kind == kind, LedgerPosting.ref.in_(chunk)
                )
            ).all()
        )
    for ref, posting_id in existing.items():
        if entries_of(session, posting_id) != combined[ref]:
            raise Conflict(
                f"{kind} {ref} was posted before with other entries", where=f"{kind} {ref}"
            )
    new = [ref for ref in refs if ref not in existing]
    ids = dict(existing)
    if new:
        rows = conn.execute(
            insert(LedgerPosting.__table__).returning(
                LedgerPosting.id, LedgerPosting.ref, sort_by_parameter_order=True
            ),
            [{"kind": kind, "ref": ref, "memo": memo, "created_at": now} for ref in new],
        ).all()
        ids.update({ref: posting_id for posting_id, ref in rows})
        entry_rows = [
            {
                "posting_id": ids[ref],
                "account": e.account,
                "currency": e.currency,
                "minor_digits": MINOR_DIGITS[e.currency],
                "amount_minor": e.amount_minor,
            }
            for ref in new
            for e in combined[ref]
        ]
        if entry_rows:  # a posting whose amounts net to nothing keeps no entries
            conn.execute(insert(LedgerEntry.__table__), entry_rows)
    return ids


def entries_of(session: Session, posting_id: int) -> list[Entry]:
    rows = (
        session.connection()
        .execute(
            select(LedgerEntry.account, LedgerEntry.currency, LedgerEntry.amount_minor).where(
                LedgerEntry.posting_id == posting_id
            )
        )
        .all()
    )
    return combine(Entry(*r) for r in rows)


def balance(session: Session, account: str, currency: str) -> int:
    """The sum of the account's entries in ``currency`` (debits positive)."""
    return int(
        session.execute(
            select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
                LedgerEntry.account == account, LedgerEntry.currency == currency
            )
        ).scalar_one()
    )


def balances(session: Session, prefix: str = "") -> dict[tuple[str, str], int]:
    """Every account's balance per currency (accounts starting with ``prefix``)."""
    query = select(
        LedgerEntry.account, LedgerEntry.currency, func.sum(LedgerEntry.amount_minor)
    ).group_by(LedgerEntry.account, LedgerEntry.currency)
    if prefix:
        query = query.where(LedgerEntry.account.startswith(prefix))
    return {(a, c): int(m) for a, c, m in session.execute(query)}


def margin_of(amount_minor: int, margin_ppm: int) -> int:
    """The home provider's part of another provider's charge: ``margin_ppm`` millionths,
    rounded toward zero (a credit's margin is the negative of its size's)."""
    part = abs(amount_minor) * margin_ppm // 1_000_000
    return part if amount_minor >= 0 else -part


def statement_entries(
    home_id: int, user_id: int, margin_ppm: int, lines: Iterable[Mapping]
) -> list[Entry]:
    """What a finalized statement moves: the user owes each line; the home provider earns its
    own deliveries and its margin on others'; it owes each delivering provider the rest."""
    out = []
    for line in lines:
        amount, currency, provider = (line["amount_minor"], line["currency"], line["provider_id"])
        out.append(Entry(receivable(user_id), currency, amount))
        if provider == home_id:
            out.append(Entry(revenue(home_id), currency, -amount))
        else:
            margin = margin_of(amount, margin_ppm)
            out.append(Entry(revenue(home_id), currency, -margin))
            out.append(Entry(payable(home_id, provider), currency, -(amount - margin)))
    return out
