"""Statements: one per user and billing period from its home provider, across every provider
that delivered for it (claims c06, c07); draft, then finalized: numbered without gaps,
immutable, hashed; corrected only by credit notes on the next one (docs/billing.md).

Who sees what: a user (and its devices and phone numbers) its own statements; the home
provider (and its network) the statements it issues; an admin all. A provider that only
delivered never sees a user's statement.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import exists, func, insert, literal, select
from sqlalchemy.orm import Session, aliased

from broker.actors import Actor
from broker.billing_periods import Period, check_settings, period_containing, period_named
from broker.bounds import INT64_MAX
from broker.clock import resolve_now
from broker.dispatch import expire_unclaimed
from broker.errors import InvalidInput, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.ledger import post_many, statement_entries
from broker.models import (
    BillingSettings,
    Charge,
    CreditNote,
    DeviceEvent,
    Provider,
    Statement,
    StatementLine,
    User,
)
from broker.statement_content import ATTRS, content_hash, gather, totals

DRAFT, FINALIZED = "draft", "finalized"
_EMPTY_ATTRS = dict.fromkeys(ATTRS)
STATEMENT_FINALIZED = "statement.finalized"
STATEMENT_POSTING = "statement"


# -- settings and periods -------------------------------------------------------------------


def billing_settings(session: Session, provider_id: int, *, lock: bool = False) -> BillingSettings:
    """The home provider's settings (made with the defaults on first use)."""
    query = select(BillingSettings).where(BillingSettings.provider_id == provider_id)
    settings = session.scalar(query.with_for_update() if lock else query)
    if settings is None:
        if session.get(Provider, provider_id) is None:
            raise NotFound("provider", provider_id)
        settings = BillingSettings(
            provider_id=provider_id,
            period_months=1,
            cutoff_day=1,
            timezone="UTC",
            next_number=1,
            margin_ppm=0,
            payment_terms_days=14,
        )
        session.add(settings)
        session.flush()
        if lock:
            settings = session.execute(query.with_for_update()).scalar_one()
    return settings


def set_billing_settings(
    session: Session,
    actor: Actor,
    provider_id: int,
    *,
    period_months: int,
    cutoff_day: int,
    timezone: str,
    margin_ppm: int | None = None,
    payment_terms_days: int | None = None,
) -> BillingSettings:
    """Change the period and cut-off day (refused once a period has been closed: the periods
    already billed would no longer line up with the new ones); the margin on other providers'
    charges and the payment terms apply to statements finalized from then on."""
    _require_home(actor, provider_id, "change billing settings")
    check_settings(period_months, cutoff_day, timezone)
    settings = billing_settings(session, provider_id, lock=True)
    unchanged = (settings.period_months, settings.cutoff_day, settings.timezone) == (
        period_months,
        cutoff_day,
        timezone,
    )
    if settings.closed_through is not None and not unchanged:
        raise WrongState(
            f"provider {provider_id} has closed periods up to "
            f"{settings.closed_through.isoformat()}; its billing period can no "
            f"longer change",
            field="period_months",
        )
    settings.period_months, settings.cutoff_day, settings.timezone = (
        period_months,
        cutoff_day,
        timezone,
    )
    if margin_ppm is not None:
        if not 0 <= margin_ppm <= 1_000_000:
            raise InvalidInput("a margin is 0..1,000,000 millionths", field="margin_ppm")
        settings.margin_ppm = margin_ppm
    if payment_terms_days is not None:
        if not 0 <= payment_terms_days <= 366:
            raise InvalidInput("payment terms are 0..366 days", field="payment_terms_days")
        settings.payment_terms_days = payment_terms_days
    return settings


def period_of(settings: BillingSettings, name: str) -> Period:
    return period_named(
        name,
        period_months=settings.period_months,
        cutoff_day=settings.cutoff_day,
        timezone=settings.timezone,
    )


def current_period(settings: BillingSettings, now: datetime) -> Period:
    return period_containing(
        now,
        period_months=settings.period_months,
        cutoff_day=settings.cutoff_day,
        timezone=settings.timezone,
    )


def settings_view(settings: BillingSettings) -> dict:
    return {
        "provider_id": settings.provider_id,
        "period_months": settings.period_months,
        "cutoff_day": settings.cutoff_day,
        "timezone": settings.timezone,
        "next_number": settings.next_number,
        "closed_through": settings.closed_through,
        "margin_ppm": settings.margin_ppm,
        "payment_terms_days": settings.payment_terms_days,
    }


# -- access ---------------------------------------------------------------------------------


def _require_home(actor: Actor, provider_id: int, what: str) -> None:
    if not (actor.is_admin or actor.speaks_for_provider(provider_id)):
        raise NotYours(
            f"{actor} may not {what} for provider {provider_id}", where=f"provider {provider_id}"
        )


def get_statement(
    session: Session, actor: Actor, statement_id: int, *, lock: bool = False
) -> Statement:
    query = select(Statement).where(Statement.id == statement_id)
    statement = session.scalar(query.with_for_update() if lock else query)
    if statement is None:
        raise NotFound("statement", statement_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(statement.user_id)
        or actor.speaks_for_provider(statement.home_provider_id)
    ):
        raise NotYours(
            f"{actor} may not see statement {statement_id}: it is user "
            f"{statement.user_id}'s from provider {statement.home_provider_id}",
            where=f"statement {statement_id}",
        )
    return statement


def list_statements(
    session: Session,
    actor: Actor,
    *,
    user_id: int | None = None,
    home_provider_id: int | None = None,
    period: str | None = None,
    status: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[Statement]:
    """Statements the caller may see, oldest first: a user's own, a home provider's own."""
    query = select(Statement)
    if user_id is not None:
        query = query.where(Statement.user_id == user_id)
    if home_provider_id is not None:
        query = query.where(Statement.home_provider_id == home_provider_id)
    if not actor.is_admin:
        if actor.user_id is not None:
            query = query.where(Statement.user_id == actor.user_id)
        elif actor.provider_ids:
            query = query.where(Statement.home_provider_id.in_(sorted(actor.provider_ids)))
        else:
            raise NotYours(f"{actor} has no statements to see")
    if period is not None:
        query = query.where(Statement.period == period)
    if status is not None:
        query = query.where(Statement.status == status)
    if after is not None:
        query = query.where(Statement.id > after)
    return list(session.scalars(query.order_by(Statement.id).limit(limit)))


def list_charges(
    session: Session, actor: Actor, user_id: int, *, after: int | None = None, limit: int = 100
) -> list:
    """A user's charge lines, oldest first, each with the statement it is on (None: not yet
    billed); for the user (its devices), its home provider and an admin."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(user_id)
        or actor.speaks_for_provider(user.home_provider_id)
    ):
        raise NotYours(f"{actor} may not see user {user_id}'s charges", where=f"user {user_id}")
    query = (
        select(Charge, StatementLine.statement_id)
        .outerjoin(StatementLine, StatementLine.charge_id == Charge.id)
        .where(Charge.user_id == user_id)
    )
    if after is not None:
        query = query.where(Charge.id > after)
    return list(session.execute(query.order_by(Charge.id).limit(limit)).all())


def charge_view(row) -> dict:
    c, statement_id = row
    return {
        "id": c.id,
        "user_id": c.user_id,
        "provider_id": c.provider_id,
        "home_provider_id": c.home_provider_id,
        "award_id": c.award_id,
        "job_id": c.job_id,
        "usage_report_id": c.usage_report_id,
        "kind": c.kind,
        "amount_minor": c.amount_minor,
        "currency": c.currency,
        "minor_digits": c.minor_digits,
        "tariff_id": c.tariff_id,
        "tariff_version": c.tariff_version,
        "rated_at": c.rated_at,
        "statement_id": statement_id,
    }


# -- the statement's data ---------------------------------------------------------------------


def _header(session: Session, statement: Statement) -> dict:
    home = session.scalar(select(Provider.name).where(Provider.id == statement.home_provider_id))
    user = session.scalar(select(User.name).where(User.id == statement.user_id))
    return {
        "id": statement.id,
        "number": statement.number,
        "status": statement.status,
        "home_provider_id": statement.home_provider_id,
        "home_provider": home,
        "user_id": statement.user_id,
        "user": user,
        "period": statement.period,
        "period_start": statement.period_start,
        "period_end": statement.period_end,
        "finalized_at": statement.finalized_at,
        "due_at": statement.due_at,
        "content_sha256": statement.content_sha256,
        "totals": statement.totals,
    }


def _stored_lines(session: Session, statement_id: int) -> list[dict]:
    rows = session.execute(
        select(StatementLine)
        .where(StatementLine.statement_id == statement_id)
        .order_by(StatementLine.position)
    ).scalars()
    return [
        {
            "id": r.id,
            "position": r.position,
            "charge_id": r.charge_id,
            "credit_note_id": r.credit_note_id,
            "kind": r.kind,
            "amount_minor": r.amount_minor,
            "currency": r.currency,
            "minor_digits": r.minor_digits,
            "at": r.at,
            **_EMPTY_ATTRS,
            **r.attrs,
        }
        for r in rows
    ]


def statement_document(session: Session, statement: Statement) -> dict:
    """The statement as data: its header and its lines (a draft's as they stand now)."""
    doc = _header(session, statement)
    if statement.status == FINALIZED:
        doc["lines"] = _stored_lines(session, statement.id)
    else:
        lines = gather(
            session, statement.home_provider_id, [statement.user_id], statement.period_end
        )[statement.user_id]
        doc["lines"] = [{"id": None, "position": i, **line} for i, line in enumerate(lines, 1)]
        doc["totals"] = totals(doc["lines"])
    return doc


def current_draft(
    session: Session, actor: Actor, user_id: int, *, now: datetime | None = None
) -> dict:
    """What the user's statement for the period under way holds so far: its charges and
    credit notes on no statement yet, as a draft that is not stored (``id`` null)."""
    return statement_document(session, current_statement(session, actor, user_id, now=now))


def current_statement(
    session: Session, actor: Actor, user_id: int, *, now: datetime | None = None
) -> Statement:
    """The user's statement for the period under way, a draft that is not stored (and must
    not be: it is never added to the session)."""
    now = resolve_now(now)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(user_id)
        or actor.speaks_for_provider(user.home_provider_id)
    ):
        raise NotYours(f"{actor} may not see user {user_id}'s statements", where=f"user {user_id}")
    period = current_period(billing_settings(session, user.home_provider_id), now)
    draft = Statement(
        id=None,
        number=None,
        status=DRAFT,
        home_provider_id=user.home_provider_id,
        user_id=user_id,
        period=period.name,
        period_start=period.start,
        period_end=period.end,
        totals=None,
        content_sha256=None,
        finalized_at=None,
    )
    return draft


def rendered(
    session: Session, statement: Statement, profile_name: str | None, fmt: str
) -> str | bytes:
    """The statement laid out by its user's profile ``profile_name`` (its default when None)
    and rendered as ``fmt`` (json, text, html, pdf)."""
    from broker.profile_book import profile_for
    from broker.rendering import render_statement

    profile = profile_for(session, statement.user_id, profile_name)
    doc = statement_document(session, statement)
    # A draft's lines are not stored yet: they are known by their position.
    doc["lines"] = [{**line, "id": line["id"] or line["position"]} for line in doc["lines"]]
    # The period's days are those of the home provider's calendar (its billing time zone),
    # whatever time zone the profile shows the lines in.
    doc["period_timezone"] = (
        session.scalar(
            select(BillingSettings.timezone).where(
                BillingSettings.provider_id == statement.home_provider_id
            )
        )
        or "UTC"
    )
    return render_statement(doc, profile, fmt)


def verify(session: Session, statement: Statement) -> bool:
    """Whether a finalized statement's stored content still has the hash it was given."""
    if statement.status != FINALIZED:
        return False
    doc = statement_document(session, statement)
    return content_hash(doc, doc["lines"]) == statement.content_sha256


# -- drafts and finalizing ----------------------------------------------------------------------


def open_drafts(session: Session, home_provider_id: int, period: Period, now: datetime) -> int:
    """A draft statement for ``period`` for each user of the home provider with charges or
    credit notes before the period's end on no statement yet and no statement for this
    period; returns how many were made."""
    other = aliased(Statement)  # not the INSERT's own table, which a subquery must not correlate
    has_statement = exists().where(
        other.home_provider_id == home_provider_id,
        other.period == period.name,
        other.user_id == User.id,
    )
    charged = exists().where(
        Charge.user_id == User.id,
        Charge.home_provider_id == home_provider_id,
        Charge.rated_at < period.end,
        ~exists().where(StatementLine.charge_id == Charge.id),
    )
    credited = exists().where(
        CreditNote.user_id == User.id,
        CreditNote.home_provider_id == home_provider_id,
        CreditNote.created_at < period.end,
        ~exists().where(StatementLine.credit_note_id == CreditNote.id),
    )
    users = select(
        User.id,
        literal(home_provider_id),
        literal(period.name),
        literal(period.start, Statement.period_start.type),
        literal(period.end, Statement.period_end.type),
        literal(DRAFT),
        literal(now, Statement.created_at.type),
    ).where((charged | credited) & ~has_statement)
    result = session.connection().execute(
        insert(Statement).from_select(
            [
                "user_id",
                "home_provider_id",
                "period",
                "period_start",
                "period_end",
                "status",
                "created_at",
            ],
            users,
        )
    )
    return max(result.rowcount, 0)


def finalize_batch(
    session: Session, home_provider_id: int, statement_ids: list[int], now: datetime
) -> list[Statement]:
    """Finalize these drafts of one home provider, in id order, in the caller's transaction:
    each takes its lines, the next number, its totals and hash; its user's devices get an
    event. The settings row is locked throughout, so numbers have no gaps."""
    settings = billing_settings(session, home_provider_id, lock=True)
    statements = list(
        session.scalars(
            select(Statement)
            .where(Statement.id.in_(statement_ids), Statement.status == DRAFT)
            .order_by(Statement.id)
            .with_for_update()
        )
    )
    if not statements:
        return []
    ends = {s.period_end for s in statements}
    if max(ends) > now:
        raise WrongState(
            f"a statement's period is not over yet; it is finalized after {max(ends).isoformat()}",
            field="period",
        )
    by_end: dict[datetime, list[Statement]] = {}
    for s in statements:
        by_end.setdefault(s.period_end, []).append(s)
    gathered: dict[int, list[dict]] = {}
    taken: set[tuple[int | None, int | None]] = set()  # a user's earlier draft takes first
    for end, group in sorted(by_end.items()):
        found = gather(session, home_provider_id, [s.user_id for s in group], end)
        for s in group:
            gathered[s.id] = [
                line
                for line in found[s.user_id]
                if (line["charge_id"], line["credit_note_id"]) not in taken
            ]
            taken.update((line["charge_id"], line["credit_note_id"]) for line in gathered[s.id])
    names = dict(
        session.execute(
            select(User.id, User.name).where(User.id.in_(sorted({s.user_id for s in statements})))
        ).all()
    )
    home = session.scalar(select(Provider.name).where(Provider.id == home_provider_id))
    line_rows, events, postings = [], [], {}
    number = settings.next_number
    terms = timedelta(days=settings.payment_terms_days)
    for s in statements:
        lines = [{"position": i, **line} for i, line in enumerate(gathered[s.id], 1)]
        s.number, s.status, s.finalized_at, s.due_at = number, FINALIZED, now, now + terms
        s.totals, s.line_count = totals(lines), len(lines)
        header = {
            "home_provider_id": home_provider_id,
            "user_id": s.user_id,
            "period": s.period,
            "period_start": s.period_start,
            "period_end": s.period_end,
            "number": number,
            "totals": s.totals,
        }
        s.content_sha256 = content_hash(header, lines)
        number += 1
        for line in lines:
            line_rows.append(
                {
                    "statement_id": s.id,
                    "position": line["position"],
                    "charge_id": line["charge_id"],
                    "credit_note_id": line["credit_note_id"],
                    "kind": line["kind"],
                    "amount_minor": line["amount_minor"],
                    "currency": line["currency"],
                    "minor_digits": line["minor_digits"],
                    "at": line["at"],
                    "attrs": _attrs(line),
                }
            )
        postings[str(s.id)] = statement_entries(
            home_provider_id, s.user_id, settings.margin_ppm, lines
        )
        events.append(
            {
                "user_id": s.user_id,
                "kind": STATEMENT_FINALIZED,
                "created_at": now,
                "payload": {
                    "statement_id": s.id,
                    "number": s.number,
                    "period": s.period,
                    "home_provider": home,
                    "user": names[s.user_id],
                    "totals": s.totals,
                    "content_sha256": s.content_sha256,
                },
            }
        )
    if number - 1 > INT64_MAX:
        raise WrongState("the statement counter is exhausted")
    settings.next_number = number
    session.flush()
    conn = session.connection()  # Core executemany: no ORM bookkeeping for 10,000s of rows
    if line_rows:
        conn.execute(insert(StatementLine.__table__), line_rows)
    conn.execute(insert(DeviceEvent.__table__), events)
    post_many(session, STATEMENT_POSTING, postings, now=now)  # what the users now owe
    return statements


def _attrs(line: dict) -> dict:
    # Stored without the empty ones (a price line has no report, no quantity): a period close
    # writes 200,000 of these, and JSON of fewer keys is quicker. Read back with all of ATTRS.
    return {k: line[k] for k in ATTRS if line[k] is not None}


def finalize(
    session: Session, actor: Actor, statement_id: int, *, now: datetime | None = None
) -> Statement:
    """Finalize one draft (the home provider or an admin). A finalized one is returned as it
    is: finalizing twice changes nothing."""
    now = resolve_now(now)
    statement = get_statement(session, actor, statement_id)
    _require_home(actor, statement.home_provider_id, "finalize statements")
    if statement.status == DRAFT:
        finalize_batch(session, statement.home_provider_id, [statement.id], now)
        session.refresh(statement)
    return statement


def close_period(
    begin: Callable,
    actor: Actor,
    home_provider_id: int,
    period_name: str,
    *,
    now: datetime | None = None,
    batch: int = 500,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Close a period of a home provider: a draft for each user with charges on no statement
    yet, then each draft finalized, ``batch`` statements per transaction. Safe to run again:
    a close that failed midway left each statement draft or finalized (never half), and the
    next run finishes it. Periods close in order; drafts of an earlier period left by a
    failed close are finalized first. ``begin()`` opens one write transaction (a context
    manager giving a session), as `Store.write` does."""
    now = resolve_now(now)
    with begin() as session:
        _require_home(actor, home_provider_id, "close billing periods")
        settings = billing_settings(session, home_provider_id, lock=True)
        period = period_of(settings, period_name)
        if period.end > now:
            raise WrongState(
                f"period {period.name} ends at {period.end.isoformat()}; it can "
                f"be closed after that",
                field="period",
            )
        if settings.closed_through is not None and period.end < settings.closed_through:
            raise WrongState(
                f"periods up to {settings.closed_through.isoformat()} are closed; "
                f"{period.name} ends before that (periods close in order)",
                field="period",
            )
        settings.closed_through = period.end
        # Blocks that ended with no daemon holding them fail first: an award that delivered
        # nothing has its price voided before the statements take it.
        expire_unclaimed(session, None, now, home_provider_id=home_provider_id)
        made = open_drafts(session, home_provider_id, period, now)
    finalized = 0
    while True:
        with begin() as session:
            ids = list(
                session.scalars(
                    select(Statement.id)
                    .where(
                        Statement.home_provider_id == home_provider_id,
                        Statement.status == DRAFT,
                        Statement.period_end <= period.end,
                    )
                    .order_by(Statement.id)
                    .limit(batch)
                )
            )
            if not ids:
                break
            finalized += len(finalize_batch(session, home_provider_id, ids, now))
        if on_batch is not None:
            on_batch(finalized)
    with begin() as session:
        summary = session.execute(
            select(func.count(), func.coalesce(func.sum(Statement.line_count), 0)).where(
                Statement.home_provider_id == home_provider_id, Statement.period == period.name
            )
        ).one()
        sums = _period_totals(session, home_provider_id, period.name)
    return {
        "provider_id": home_provider_id,
        "period": period.name,
        "period_start": period.start,
        "period_end": period.end,
        "drafts_made": made,
        "finalized": finalized,
        "statements": summary[0],
        "lines": int(summary[1]),
        "totals": sums,
    }


def _period_totals(session: Session, home_provider_id: int, period: str) -> dict[str, int]:
    rows = session.execute(
        select(StatementLine.currency, func.sum(StatementLine.amount_minor))
        .join(Statement, Statement.id == StatementLine.statement_id)
        .where(Statement.home_provider_id == home_provider_id, Statement.period == period)
        .group_by(StatementLine.currency)
        .order_by(StatementLine.currency)
    ).all()
    return {c: int(m) for c, m in rows}


# -- credit notes -----------------------------------------------------------------------------


def credit_line(
    session: Session,
    actor: Actor,
    statement_id: int,
    position: int,
    *,
    amount_minor: int,
    reason: str,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> CreditNote:
    """Correct a finalized statement's charge line by a credit (a negative amount, at most
    the line's amount less what was credited on it before); it goes on the next statement."""
    now = resolve_now(now)
    statement = get_statement(session, actor, statement_id)
    _require_home(actor, statement.home_provider_id, "issue credit notes")
    if statement.status != FINALIZED:
        raise WrongState(
            f"statement {statement_id} is a draft; a draft is corrected by its "
            f"charges, a credit note corrects a finalized one"
        )
    line = session.scalar(
        select(StatementLine).where(
            StatementLine.statement_id == statement_id, StatementLine.position == position
        )
    )
    if line is None:
        raise NotFound("statement line", f"{statement_id}/{position}")
    if line.charge_id is None or line.amount_minor <= 0:
        raise InvalidInput(
            "only a charge line with a positive amount can be credited", field="position"
        )
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor >= 0:
        raise InvalidInput(
            "a credit is a negative whole number of minor units", field="amount_minor"
        )
    if not reason or len(reason) > 500:
        raise InvalidInput("say why, in 1..500 characters", field="reason")

    def make() -> CreditNote:
        credited = session.execute(
            select(func.coalesce(func.sum(CreditNote.amount_minor), 0)).where(
                CreditNote.corrects_charge_id == line.charge_id
            )
        ).scalar_one()
        if line.amount_minor + credited + amount_minor < 0:
            raise InvalidInput(
                f"the line is {line.amount_minor} minor units and "
                f"{-credited} were credited before; at most "
                f"{line.amount_minor + credited} more can be",
                field="amount_minor",
            )
        note = CreditNote(
            home_provider_id=statement.home_provider_id,
            user_id=statement.user_id,
            corrects_charge_id=line.charge_id,
            amount_minor=amount_minor,
            currency=line.currency,
            minor_digits=line.minor_digits,
            reason=reason,
            created_at=now,
        )
        session.add(note)
        session.flush()
        return note

    return once(
        session,
        actor,
        idempotency_key,
        "credit_line",
        {"statement": statement_id, "position": position, "amount": amount_minor, "reason": reason},
        CreditNote,
        make,
    )


def credit_note_view(note: CreditNote, statement_id: int, position: int) -> dict:
    return {
        "id": note.id,
        "statement_id": statement_id,
        "position": position,
        "user_id": note.user_id,
        "amount_minor": note.amount_minor,
        "currency": note.currency,
        "reason": note.reason,
        "created_at": note.created_at,
    }
