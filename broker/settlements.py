"""Settlement between providers (docs/billing.md, "Settlement"; claim c04).

A home provider bills its users for every provider's deliveries; for each period and each
delivering provider it then issues a **settlement batch**: the lines of its finalized
statements of the period that the provider delivered (charges and credit notes on them), not
in a batch yet, numbered 1, 2, ... per (home, delivering) pair, with audit totals (the count
of lines and their sum per currency), what is due to the delivering provider (per currency,
exactly as the statements posted it to ``payable:provider:<home>:<p>``) and the home
provider's margin (the rest), and the SHA-256 of the batch's document.

The delivering provider acknowledges (imports) a batch by sending its document back: a
document whose audit totals do not add up is refused (422, naming the total); one with the
batch's number and other content is refused (409); the same document again is a copy: nothing
changes and the batch is answered as it stands. Once every batch between two providers for a
period (both directions) is acknowledged and neither has lines of the period for the other
left to issue, they are **netted**: per currency, one amount due and who pays whom, posted to
the ledger once.

The home provider settles whether or not its users paid their statements: it carries the
risk (claim c04); nothing here looks at what was paid.

Who sees what: a provider (or its network) the batches it issued or is owed by, its nettings
and its balance; an admin all; a user none.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.billing_periods import period_named
from broker.clock import resolve_now
from broker.errors import Conflict, InvalidInput, NotFound, NotYours
from broker.ledger import Entry, balances, cash, payable, post, revenue
from broker.models import (
    LedgerEntry,
    LedgerPosting,
    Provider,
    SettlementBatch,
    SettlementLine,
    SettlementNetting,
    Statement,
    StatementLine,
)
from broker.statements import FINALIZED, STATEMENT_POSTING, billing_settings

ISSUED, ACKNOWLEDGED, SETTLED = "issued", "acknowledged", "settled"
SETTLEMENT_POSTING = "settlement"


# -- access -----------------------------------------------------------------------------------


def _speaks_for(actor: Actor, *provider_ids: int) -> bool:
    return actor.is_admin or any(actor.speaks_for_provider(p) for p in provider_ids)


def _require(actor: Actor, provider_id: int, what: str) -> None:
    if not _speaks_for(actor, provider_id):
        raise NotYours(
            f"{actor} may not {what} for provider {provider_id}", where=f"provider {provider_id}"
        )


def _provider(session: Session, provider_id: int) -> None:
    if session.get(Provider, provider_id) is None:
        raise NotFound("provider", provider_id)


def get_batch(
    session: Session, actor: Actor, batch_id: int, *, lock: bool = False
) -> SettlementBatch:
    """A batch, for its home provider, its delivering provider or an admin."""
    query = select(SettlementBatch).where(SettlementBatch.id == batch_id)
    batch = session.scalar(query.with_for_update() if lock else query)
    if batch is None:
        raise NotFound("settlement", batch_id)
    if not _speaks_for(actor, batch.home_provider_id, batch.provider_id):
        raise NotYours(
            f"{actor} may not see settlement {batch_id}: it is between providers "
            f"{batch.home_provider_id} and {batch.provider_id}",
            where=f"settlement {batch_id}",
        )
    return batch


def list_batches(
    session: Session,
    actor: Actor,
    provider_id: int,
    *,
    period: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[SettlementBatch]:
    """A provider's batches, as home and as delivering provider, oldest first."""
    _provider(session, provider_id)
    _require(actor, provider_id, "see settlements")
    query = select(SettlementBatch).where(
        or_(
            SettlementBatch.home_provider_id == provider_id,
            SettlementBatch.provider_id == provider_id,
        )
    )
    if period is not None:
        query = query.where(SettlementBatch.period == period)
    if after is not None:
        query = query.where(SettlementBatch.id > after)
    return list(session.scalars(query.order_by(SettlementBatch.id).limit(limit)))


# -- the batch's document -----------------------------------------------------------------------


def _lines(session: Session, batch_id: int) -> list[dict]:
    rows = session.execute(
        select(
            SettlementLine.position,
            SettlementLine.statement_line_id,
            SettlementLine.statement_id,
            SettlementLine.amount_minor,
            SettlementLine.currency,
        )
        .where(SettlementLine.batch_id == batch_id)
        .order_by(SettlementLine.position)
    ).all()
    return [
        {
            "position": r.position,
            "statement_line_id": r.statement_line_id,
            "statement_id": r.statement_id,
            "amount_minor": r.amount_minor,
            "currency": r.currency,
        }
        for r in rows
    ]


def batch_content(doc: dict) -> dict:
    """What a batch's hash covers: the pair, its number and period, the audit totals, what is
    due and the margin, and every line."""
    return {
        "home_provider_id": doc["home_provider_id"],
        "provider_id": doc["provider_id"],
        "number": doc["number"],
        "period": doc["period"],
        "line_count": doc["line_count"],
        "totals": doc["totals"],
        "due": doc["due"],
        "margin": doc["margin"],
        "lines": [
            {
                k: line[k]
                for k in (
                    "position",
                    "statement_line_id",
                    "statement_id",
                    "amount_minor",
                    "currency",
                )
            }
            for line in doc["lines"]
        ],
    }


def content_hash(doc: dict) -> str:
    """SHA-256 of `batch_content` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(batch_content(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def batch_summary(batch: SettlementBatch) -> dict:
    return {
        "id": batch.id,
        "home_provider_id": batch.home_provider_id,
        "provider_id": batch.provider_id,
        "number": batch.number,
        "period": batch.period,
        "status": batch.status,
        "line_count": batch.line_count,
        "totals": batch.totals,
        "due": batch.due,
        "margin": batch.margin,
        "content_sha256": batch.content_sha256,
        "created_at": batch.created_at,
        "acknowledged_at": batch.acknowledged_at,
        "netting_id": batch.netting_id,
    }


def batch_document(session: Session, batch: SettlementBatch) -> dict:
    """The batch as the delivering provider imports it: its summary and its lines."""
    return {**batch_summary(batch), "lines": _lines(session, batch.id)}


def netting_view(netting: SettlementNetting | None) -> dict | None:
    if netting is None:
        return None
    return {
        "id": netting.id,
        "period": netting.period,
        "provider_low_id": netting.provider_low_id,
        "provider_high_id": netting.provider_high_id,
        "amounts": netting.amounts,
        "created_at": netting.created_at,
    }


# -- issuing ------------------------------------------------------------------------------------


def _unsettled_lines(
    session: Session, home_id: int, period: str, provider_id: int | None
) -> dict[int, list]:
    """The lines of the home provider's finalized statements of ``period`` delivered by
    another provider (``provider_id`` only, if given) and in no batch, per provider."""
    rows = session.execute(
        select(
            StatementLine.id,
            StatementLine.statement_id,
            StatementLine.amount_minor,
            StatementLine.currency,
            StatementLine.attrs,
        )
        .join(Statement, Statement.id == StatementLine.statement_id)
        .outerjoin(SettlementLine, SettlementLine.statement_line_id == StatementLine.id)
        .where(
            Statement.home_provider_id == home_id,
            Statement.period == period,
            Statement.status == FINALIZED,
            SettlementLine.id.is_(None),
        )
        .order_by(StatementLine.id)
    ).all()
    out: dict[int, list] = defaultdict(list)
    for row in rows:
        p = row.attrs.get("provider_id")
        if p is None or p == home_id or (provider_id is not None and p != provider_id):
            continue
        out[int(p)].append(row)
    return out


def _posted_due(
    session: Session, home_id: int, provider_id: int, statement_ids: Iterable[int]
) -> dict[str, int]:
    """What the statements posted as owed by the home provider to ``provider_id``."""
    refs = [str(i) for i in sorted(set(statement_ids))]
    due: dict[str, int] = defaultdict(int)
    for i in range(0, len(refs), 900):
        rows = session.execute(
            select(LedgerEntry.currency, func.sum(LedgerEntry.amount_minor))
            .join(LedgerPosting, LedgerPosting.id == LedgerEntry.posting_id)
            .where(
                LedgerPosting.kind == STATEMENT_POSTING,
                LedgerPosting.ref.in_(refs[i : i + 900]),
                LedgerEntry.account == payable(home_id, provider_id),
            )
            .group_by(LedgerEntry.currency)
        ).all()
        for currency, amount in rows:
            due[currency] -= int(amount)  # a payable is credited: what is due is its negative
    return due


def _check_period(name: str) -> str:
    period_named(name)  # YYYY-MM, a real month (InvalidInput naming the field otherwise)
    return name


def issue(
    session: Session,
    actor: Actor,
    home_id: int,
    period: str,
    *,
    provider_id: int | None = None,
    now: datetime | None = None,
) -> list[SettlementBatch]:
    """Issue the home provider's batches for ``period`` (one per delivering provider with
    lines in no batch yet; only ``provider_id``'s if given), in the caller's transaction;
    returns every batch of the home provider for the period (issued now or before), so that
    issuing again changes nothing and answers the same."""
    now = resolve_now(now)
    _check_period(period)
    _provider(session, home_id)
    _require(actor, home_id, "issue settlements")
    billing_settings(session, home_id, lock=True)  # one issuer per home provider at a time
    for p, rows in sorted(_unsettled_lines(session, home_id, period, provider_id).items()):
        last = session.scalar(
            select(func.max(SettlementBatch.number)).where(
                SettlementBatch.home_provider_id == home_id, SettlementBatch.provider_id == p
            )
        )
        totals: dict[str, int] = defaultdict(int)
        for r in rows:
            totals[r.currency] += r.amount_minor
        due = _posted_due(session, home_id, p, (r.statement_id for r in rows))
        currencies = sorted(set(totals) | set(due))
        doc: dict[str, Any] = {
            "home_provider_id": home_id,
            "provider_id": p,
            "number": (last or 0) + 1,
            "period": period,
            "line_count": len(rows),
            "totals": {c: totals.get(c, 0) for c in currencies},
            "due": {c: due.get(c, 0) for c in currencies},
            "margin": {c: totals.get(c, 0) - due.get(c, 0) for c in currencies},
            "lines": [
                {
                    "position": i,
                    "statement_line_id": r.id,
                    "statement_id": r.statement_id,
                    "amount_minor": r.amount_minor,
                    "currency": r.currency,
                }
                for i, r in enumerate(rows, 1)
            ],
        }
        batch = SettlementBatch(
            home_provider_id=home_id,
            provider_id=p,
            number=doc["number"],
            period=period,
            status=ISSUED,
            line_count=doc["line_count"],
            totals=doc["totals"],
            due=doc["due"],
            margin=doc["margin"],
            content_sha256=content_hash(doc),
            created_at=now,
        )
        session.add(batch)
        session.flush()
        session.add_all(SettlementLine(batch_id=batch.id, **line) for line in doc["lines"])
    session.flush()
    query = select(SettlementBatch).where(
        SettlementBatch.home_provider_id == home_id, SettlementBatch.period == period
    )
    if provider_id is not None:
        query = query.where(SettlementBatch.provider_id == provider_id)
    return list(session.scalars(query.order_by(SettlementBatch.id)))


# -- acknowledging ----------------------------------------------------------------------------


def check_audit_totals(doc: dict) -> None:
    """A document's audit totals against its own lines: `InvalidInput` naming the first total
    that does not match."""
    lines = doc.get("lines") or []
    if doc.get("line_count") != len(lines):
        raise InvalidInput(
            f"line_count is {doc.get('line_count')} but the batch has {len(lines)} lines",
            field="line_count",
        )
    sums: dict[str, int] = defaultdict(int)
    for line in lines:
        sums[line["currency"]] += line["amount_minor"]
    totals, due, margin = doc.get("totals") or {}, doc.get("due") or {}, doc.get("margin") or {}
    for c in sorted(set(sums) | set(totals)):
        if totals.get(c, 0) != sums.get(c, 0):
            raise InvalidInput(
                f"totals.{c} is {totals.get(c, 0)} but the lines in {c} sum to {sums.get(c, 0)}",
                field=f"totals.{c}",
            )
    for c in sorted(set(totals) | set(due) | set(margin)):
        if due.get(c, 0) + margin.get(c, 0) != totals.get(c, 0):
            raise InvalidInput(
                f"due.{c} ({due.get(c, 0)}) and margin.{c} "
                f"({margin.get(c, 0)}) do not add up to totals.{c} "
                f"({totals.get(c, 0)})",
                field=f"due.{c}",
            )


def acknowledge(
    session: Session, actor: Actor, batch_id: int, doc: dict, *, now: datetime | None = None
) -> SettlementBatch:
    """The delivering provider (or an admin) imports the batch with the document it received.
    Audit totals that do not add up: `InvalidInput` (422); the batch's number with other
    content: `Conflict` (409); the same document again: the batch as it is (a copy). When
    every batch between the two providers for the period is acknowledged, they are netted and
    posted (`net`)."""
    now = resolve_now(now)
    batch = get_batch(session, actor, batch_id)
    # Every batch of the pair and period locked, in id order: two sides acknowledging their
    # batches at once take turns (no deadlock), and the second one nets both.
    _lock_pair(session, batch.home_provider_id, batch.provider_id, batch.period)
    if not (actor.is_admin or actor.speaks_for_provider(batch.provider_id)):
        raise NotYours(
            f"{actor} may not acknowledge settlement {batch_id}: provider {batch.provider_id} does",
            where=f"settlement {batch_id}",
        )
    check_audit_totals(doc)
    try:
        sent = content_hash(doc)
    except (KeyError, TypeError) as exc:
        raise InvalidInput(f"not a settlement document: {exc}", field="lines") from None
    if sent != batch.content_sha256:
        raise Conflict(
            f"batch {batch.number} from provider {batch.home_provider_id} to "
            f"provider {batch.provider_id} was issued with other content "
            f"(sha256 {batch.content_sha256}, this one {sent})",
            where=f"settlement {batch_id}",
        )
    if batch.status == ISSUED:
        batch.status, batch.acknowledged_at = ACKNOWLEDGED, now
        session.flush()
        net(session, batch.home_provider_id, batch.provider_id, batch.period, now=now)
        session.refresh(batch)
    return batch


# -- netting ------------------------------------------------------------------------------------


def _lock_pair(session: Session, a: int, b: int, period: str) -> list[SettlementBatch]:
    """Every batch between providers ``a`` and ``b`` (both directions) of ``period``, locked
    in id order and read afresh."""
    return list(
        session.scalars(
            select(SettlementBatch)
            .where(
                or_(
                    (SettlementBatch.home_provider_id == a) & (SettlementBatch.provider_id == b),
                    (SettlementBatch.home_provider_id == b) & (SettlementBatch.provider_id == a),
                ),
                SettlementBatch.period == period,
            )
            .order_by(SettlementBatch.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def netting_entries(
    low: int, high: int, low_owes: dict[str, int], high_owes: dict[str, int]
) -> tuple[list[Entry], dict]:
    """The ledger entries and the amounts of netting what ``low`` owes ``high`` against what
    ``high`` owes ``low``, per currency: each side's payable is cleared (debited), each
    delivering provider earns what it was owed (its revenue credited), and the net moves from
    the payer's cash to the payee's. Sums to zero per currency."""
    entries, amounts = [], {}
    for c in sorted(set(low_owes) | set(high_owes)):
        a, b = low_owes.get(c, 0), high_owes.get(c, 0)
        diff = a - b
        payer, payee = (low, high) if diff > 0 else (high, low) if diff < 0 else (None, None)
        amounts[c] = {
            "low_owes_minor": a,
            "high_owes_minor": b,
            "net_minor": abs(diff),
            "payer_id": payer,
            "payee_id": payee,
        }
        entries += [
            Entry(payable(low, high), c, a),
            Entry(revenue(high), c, -a),
            Entry(payable(high, low), c, b),
            Entry(revenue(low), c, -b),
        ]
        if payer is not None and payee is not None:  # both or neither
            entries += [Entry(cash(payer), c, -abs(diff)), Entry(cash(payee), c, abs(diff))]
    return entries, amounts


def net(
    session: Session, a: int, b: int, period: str, *, now: datetime | None = None
) -> SettlementNetting | None:
    """Net every batch between providers ``a`` and ``b`` for ``period`` (both directions)
    that is in no netting, once all of them are acknowledged and neither provider has lines
    of the period for the other in no batch: one netting, posted to the ledger (kind
    ``settlement``, ref the netting's id). None when there is nothing to net or something
    still waits (an acknowledgement, or a batch the other side has not issued)."""
    now = resolve_now(now)
    low, high = sorted((a, b))
    batches = [x for x in _lock_pair(session, low, high, period) if x.netting_id is None]
    if not batches or any(x.status != ACKNOWLEDGED for x in batches):
        return None
    for home, provider in ((low, high), (high, low)):  # lines still to be issued: wait
        if _unsettled_lines(session, home, period, provider):
            return None
    owes: dict[int, defaultdict[str, int]] = {low: defaultdict(int), high: defaultdict(int)}
    for x in batches:
        for c, m in x.due.items():
            owes[x.home_provider_id][c] += m
    entries, amounts = netting_entries(low, high, owes[low], owes[high])
    netting = SettlementNetting(
        provider_low_id=low, provider_high_id=high, period=period, amounts=amounts, created_at=now
    )
    session.add(netting)
    session.flush()
    for x in batches:
        x.netting_id, x.status = netting.id, SETTLED
    post(
        session,
        SETTLEMENT_POSTING,
        str(netting.id),
        entries,
        memo=f"settlement {period} between providers {low} and {high}",
        now=now,
    )
    session.flush()
    return netting


def get_netting(session: Session, netting_id: int | None) -> SettlementNetting | None:
    return None if netting_id is None else session.get(SettlementNetting, netting_id)


# -- the balance ------------------------------------------------------------------------------


def provider_balance(session: Session, actor: Actor, provider_id: int) -> dict:
    """What is due between the provider and each counterparty per currency, from the ledger's
    payable accounts: ``owes_minor`` (the provider to it), ``owed_minor`` (it to the
    provider), ``net_minor`` = owed - owes (positive: the counterparty pays)."""
    _provider(session, provider_id)
    _require(actor, provider_id, "see the balance")
    rows: dict[tuple[int, str], dict] = {}
    for (account, currency), amount in balances(session, "payable:provider:").items():
        _, _, home_id, delivering_id = account.split(":")
        home, delivering = int(home_id), int(delivering_id)
        if provider_id not in (home, delivering):
            continue
        other = delivering if home == provider_id else home
        row = rows.setdefault(
            (other, currency),
            {"counterparty_id": other, "currency": currency, "owes_minor": 0, "owed_minor": 0},
        )
        row["owes_minor" if home == provider_id else "owed_minor"] += -amount
    items = []
    for key in sorted(rows):
        row = rows[key]
        items.append({**row, "net_minor": row["owed_minor"] - row["owes_minor"]})
    return {"provider_id": provider_id, "balances": items}


# -- the whole period (the CLI) ---------------------------------------------------------------


def settle_period(
    session: Session,
    actor: Actor,
    period: str,
    *,
    provider_id: int | None = None,
    now: datetime | None = None,
) -> dict:
    """Issue every home provider's batches for ``period`` (those of ``provider_id`` only, as
    home or as delivering provider, if given), acknowledge them with their own documents (an
    admin importing for the delivering side) and net each pair: what ``pktx broker settle``
    does. Safe to run twice: the second run finds nothing new and answers the same."""
    now = resolve_now(now)
    _check_period(period)
    if not actor.is_admin:
        raise NotYours(f"{actor} may not settle every provider's period; an admin does")
    homes = sorted(
        set(
            session.scalars(
                select(Statement.home_provider_id)
                .distinct()
                .where(Statement.period == period, Statement.status == FINALIZED)
            )
        )
    )
    for home in homes:
        if provider_id is None or home == provider_id:
            issue(session, actor, home, period, now=now)
        else:
            issue(session, actor, home, period, provider_id=provider_id, now=now)
    query = select(SettlementBatch).where(SettlementBatch.period == period)
    if provider_id is not None:
        query = query.where(
            or_(
                SettlementBatch.home_provider_id == provider_id,
                SettlementBatch.provider_id == provider_id,
            )
        )
    for batch in list(
        session.scalars(query.where(SettlementBatch.status == ISSUED).order_by(SettlementBatch.id))
    ):
        acknowledge(session, actor, batch.id, batch_document(session, batch), now=now)
    batches = list(session.scalars(query.order_by(SettlementBatch.id)))
    nettings = sorted({b.netting_id for b in batches if b.netting_id is not None})
    return {
        "period": period,
        "provider_id": provider_id,
        "batches": [batch_summary(b) for b in batches],
        "nettings": [netting_view(session.get(SettlementNetting, n)) for n in nettings],
    }
