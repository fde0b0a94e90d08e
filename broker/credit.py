"""Credit by linear prediction (claims 000-c02, c03, c04) and more bandwidth from history (c11).

A user's features as of a date come from the store alone, columnar for many users at once
(`features`); a model linear in the log-odds that the user pays a statement by its due date
scores them (`CreditModel` versions: the documented `PRIOR` until enough outcomes exist, then a
logistic regression fitted by `retrain`); the probability is scaled to scorecard points
(`score_points`), the limit is a monotone function of the score and the user's spend
(`credit_limit`), and the bandwidth grant one of the score and months paid on time
(`bandwidth_grant`). Every decision is stored with its inputs, model version, score and reason
codes (`decide`). `check_credit` refuses a request that would take the user past its available
credit. docs/billing.md, "Credit" and "Bandwidth", says why each rule is what it is.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import BindParameter, Float, and_, bindparam, case, cast, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.functions import FunctionElement

from broker.actors import Actor
from broker.bandwidth import withdraw as withdraw_grant
from broker.clock import resolve_now
from broker.currency import Money, check_amount, check_currency
from broker.errors import Conflict, InvalidInput, NotFound, NotYours
from broker.idempotency import once
from broker.models import (
    Award,
    Charge,
    CreditDecision,
    CreditModel,
    CreditProfile,
    Statement,
    StatementLine,
    User,
)
from broker.models.base import UTCDateTime

# -- the features ---------------------------------------------------------------------------

# Each feature, what it measures and the cap it is clipped to (docs/billing.md, "Credit").
FEATURES = (
    "late_share",  # past-due statements not paid by their due date / past-due statements
    "months_late",  # mean months late (30 days) of the past-due statements, capped at 6
    "unpaid_share",  # unpaid minor units of past-due statements / their billed minor units
    "history",  # ln(1 + past-due statements): how much payment history there is
    "tenure_years",  # years since sign-up, capped at 10
    "spend_cv",  # coefficient of variation of statement totals (regularity), capped at 3
    "services",  # distinct service chains charged for, capped at 10
    "foreign_share",  # share of charged minor units delivered by another provider
    "ext_score",  # (external credit score - 650) / 100; 0 when none is known
    "utilisation",  # (unbilled + unpaid) / prior limit, capped at 2
)
CAPS = {
    "months_late": 6.0,
    "tenure_years": 10.0,
    "spend_cv": 3.0,
    "services": 10.0,
    "utilisation": 2.0,
}

REASONS = {
    "late_share": "statements paid after their due date",
    "months_late": "how late statements were paid",
    "unpaid_share": "amounts still unpaid after their due date",
    "history": "little payment history",
    "tenure_years": "a short time as a customer",
    "spend_cv": "irregular monthly spend",
    "services": "few services used",
    "foreign_share": "much usage delivered by other providers",
    "ext_score": "the external credit score",
    "utilisation": "much of the credit limit in use",
}

# The prior model: log-odds of paying a statement by its due date. The intercept is ln 19, so
# a user about whom nothing is known (every feature 0) has a 5% probability of not paying on
# time and scores the base 600; each coefficient's sign is what credit practice expects.
PRIOR = {
    "intercept": math.log(19.0),
    "late_share": -2.5,
    "months_late": -0.8,
    "unpaid_share": -2.0,
    "history": 0.3,
    "tenure_years": 0.1,
    "spend_cv": -0.3,
    "services": 0.05,
    "foreign_share": -0.2,
    "ext_score": 0.8,
    "utilisation": -1.0,
}

# Fewer outcomes than this (or fewer than MIN_CLASS of either kind) and retrain keeps the prior.
MIN_OUTCOMES = 200
MIN_CLASS = 20

# Scorecard scaling: BASE_SCORE points at odds BASE_ODDS:1 of paying, PDO points to double them.
BASE_SCORE, BASE_ODDS, PDO = 600, 19, 50


class CreditLimitExceeded(Conflict):
    """A request would take its user past its available credit (limit minus unbilled charges
    and unpaid statements); answered 409 like every clash with the market's state."""

    code = "credit_limit_exceeded"
    # What the request would cost at most, the available credit, the limit and the score
    # (plain values: the refusal's transaction, and its decision, are rolled back).
    amount: Money | None = None
    available: Money | None = None
    limit: Money | None = None
    score: int | None = None


class _EpochDays(FunctionElement):
    """Days since a fixed epoch as a float, on SQLite and PostgreSQL (differences are days)."""

    type = Float()
    inherit_cache = True


@compiles(_EpochDays, "sqlite")
def _epoch_days_sqlite(element, compiler, **kw):
    return f"julianday({compiler.process(element.clauses, **kw)})"


@compiles(_EpochDays)
def _epoch_days_default(element, compiler, **kw):
    return f"(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) / 86400.0)"


def _statement_total(statement):
    """A statement's total in minor units: the sum of its lines (an index look-up each)."""
    return (
        select(func.coalesce(func.sum(StatementLine.amount_minor), 0))
        .where(StatementLine.statement_id == statement.id)
        .scalar_subquery()
    )


def _unbilled(charge):
    """The charge is on no statement line yet (the unique index on charge_id answers it)."""
    return ~select(StatementLine.id).where(StatementLine.charge_id == charge.id).exists()


def _totals(anchors):
    """The totals of the anchors' users' finalized statements, in one grouped pass."""
    s = Statement
    return (
        select(
            StatementLine.statement_id.label("sid"),
            func.sum(StatementLine.amount_minor).label("total"),
        )
        .join(s, s.id == StatementLine.statement_id)
        .where(s.status == "finalized", s.user_id.in_(select(anchors.c.user_id)))
        .group_by(StatementLine.statement_id)
        .subquery("totals")
    )


def _history(anchors):
    """Per anchor (key, user_id, as_of): aggregates of the user's statements before it."""
    s, t = Statement, _totals(anchors)
    due = s.due_at < anchors.c.as_of
    paid_by_then = and_(s.paid_at.is_not(None), s.paid_at <= anchors.c.as_of)
    on_time = and_(paid_by_then, s.paid_at <= s.due_at)
    total = func.coalesce(t.c.total, 0)
    late_days = case(
        (paid_by_then, _EpochDays(s.paid_at) - _EpochDays(s.due_at)),
        else_=_EpochDays(anchors.c.as_of) - _EpochDays(s.due_at),
    )
    ftotal = cast(total, Float)
    return (
        select(
            anchors.c.key,
            func.sum(case((due, 1), else_=0)),
            func.sum(case((and_(due, on_time), 1), else_=0)),
            func.sum(case((and_(due, ~on_time), late_days), else_=0.0)),
            func.sum(case((due, total), else_=0)),
            func.sum(case((and_(due, ~paid_by_then), total - s.paid_minor), else_=0)),
            func.count(s.id),
            func.sum(ftotal),
            func.sum(ftotal * ftotal),
            func.sum(case((~paid_by_then, total - s.paid_minor), else_=0)),
        )
        .select_from(anchors)
        .join(
            s,
            and_(
                s.user_id == anchors.c.user_id,
                s.status == "finalized",
                s.finalized_at < anchors.c.as_of,
            ),
        )
        .outerjoin(t, t.c.sid == s.id)
        .group_by(anchors.c.key)
        .order_by(anchors.c.key)
    )


def _usage(anchors):
    """Per anchor: charges up to it, by whom delivered, which chains, what is not yet billed."""
    c = Charge
    return (
        select(
            anchors.c.key,
            func.sum(c.amount_minor),
            func.sum(case((c.provider_id != c.home_provider_id, c.amount_minor), else_=0)),
            func.count(func.distinct(Award.services)),
            func.sum(case((_unbilled(c), c.amount_minor), else_=0)),
        )
        .select_from(anchors)
        .join(c, and_(c.user_id == anchors.c.user_id, c.rated_at <= anchors.c.as_of))
        .join(Award, Award.id == c.award_id)
        .group_by(anchors.c.key)
        .order_by(anchors.c.key)
    )


def _base(anchors):
    """Per anchor: days since the user signed up, its external score (-1: none) and its
    sign-up limit (0: none)."""
    return (
        select(
            anchors.c.key,
            _EpochDays(anchors.c.as_of) - _EpochDays(User.created_at),
            func.coalesce(CreditProfile.external_score, -1),
            func.coalesce(CreditProfile.prior_limit_minor, 0),
        )
        .select_from(anchors)
        .join(User, User.id == anchors.c.user_id)
        .outerjoin(CreditProfile, CreditProfile.user_id == anchors.c.user_id)
        .order_by(anchors.c.key)
    )


@functools.cache
def _user_queries() -> dict:
    """The queries of `features`, built once (parameters ``users``, a list, and ``as_of``):
    building SQLAlchemy expressions costs more than running them for one user."""
    users: BindParameter[list[int]] = bindparam("users", expanding=True)
    at = bindparam("as_of", type_=UTCDateTime())
    anchors = (
        select(User.id.label("key"), User.id.label("user_id"), at.label("as_of"))
        .where(User.id.in_(users))
        .subquery("anchors")
    )
    # Months paid on time: past-due statements paid on time since the last one that was not.
    s = Statement
    past_due = and_(s.status == "finalized", s.due_at < at, s.user_id.in_(users))
    on_time = and_(s.paid_at.is_not(None), s.paid_at <= s.due_at, s.paid_at <= at)
    last_bad = (
        select(s.user_id, func.max(s.due_at).label("due"))
        .where(past_due, ~on_time)
        .group_by(s.user_id)
        .subquery("last_bad")
    )
    months = (
        select(s.user_id, func.count())
        .outerjoin(last_bad, last_bad.c.user_id == s.user_id)
        .where(past_due, on_time, or_(last_bad.c.due.is_(None), s.due_at > last_bad.c.due))
        .group_by(s.user_id)
    )
    # All of it in one statement (one round trip per credit check): every user's base row,
    # with its history, usage and months joined on (zeros where it has none).
    parts = [q.subquery() for q in (_base(anchors), _history(anchors), _usage(anchors), months)]
    first = [list(p.c) for p in parts]  # each part's columns, its key first
    joined = parts[0]
    for part, cols in zip(parts[1:], first[1:], strict=True):
        joined = joined.outerjoin(part, cols[0] == first[0][0])
    combined = (
        select(*[func.coalesce(c, 0) for cols in first for c in cols[1:]], first[0][0])
        .select_from(joined)
        .order_by(first[0][0])
    )
    return {"combined": combined}


@dataclass
class Features:
    """Features of many anchors (users as of a date, or statements as of their issue), as
    columns: ``keys`` the anchors' ids, ``x`` one row per anchor in `FEATURES` order, and
    what the limit and the bandwidth grant need besides."""

    keys: np.ndarray
    x: np.ndarray
    exposure_minor: np.ndarray  # unbilled charges + unpaid finalized statements
    mean_spend_minor: np.ndarray  # mean statement total
    on_time_months: np.ndarray  # past-due statements paid on time since the last one not
    prior_limit_minor: np.ndarray
    external_score: list
    found: np.ndarray | None = None  # the anchors the base query found (a user that exists)

    def row(self, i: int) -> dict:
        return {name: round(float(v), 6) for name, v in zip(FEATURES, self.x[i])}


def _table(session: Session, query, width: int, params: dict | None = None) -> np.ndarray:
    # The driver's own tuples (every column is a number): no Row objects for many rows.
    result = session.connection().execute(query, params or {})
    rows = result.cursor.fetchall()
    result.close()
    return np.asarray(rows, dtype=float).reshape(len(rows), width)


def _columns(
    session: Session,
    anchors,
    keys: np.ndarray,
    params: dict | None = None,
    tables: tuple | None = None,
) -> Features:
    """The features of the anchors ``keys`` (ascending), three aggregate queries in all
    (``tables``: their rows read already, as (history, usage, base))."""
    if tables is None:
        tables = tuple(
            _table(session, q, width, params)
            for q, width in ((_history(anchors), 10), (_usage(anchors), 5), (_base(anchors), 4))
        )
    h, u, b = tables
    n = len(keys)
    x = np.zeros((n, len(FEATURES)))
    col = {name: j for j, name in enumerate(FEATURES)}
    exposure = np.zeros(n, dtype=np.int64)
    spend = np.zeros(n, dtype=np.int64)

    i = np.searchsorted(keys, h[:, 0])
    (n_due, n_on_time, late_days, due_total, due_unpaid, n_all, sum_total, sum_sq, unpaid) = h[
        :, 1:
    ].T
    some = n_due > 0
    safe_due = np.maximum(n_due, 1)
    x[i, col["late_share"]] = np.where(some, 1 - n_on_time / safe_due, 0)
    x[i, col["months_late"]] = np.where(some, late_days / 30.0 / safe_due, 0)
    x[i, col["unpaid_share"]] = np.where(due_total > 0, due_unpaid / np.maximum(due_total, 1), 0)
    x[i, col["history"]] = np.log1p(n_due)
    mean = sum_total / np.maximum(n_all, 1)
    spend[i] = np.floor(mean).astype(np.int64)
    var = np.maximum(sum_sq / np.maximum(n_all, 1) - mean * mean, 0)
    x[i, col["spend_cv"]] = np.where(
        (mean > 0) & (n_all > 1), np.sqrt(var) / np.where(mean > 0, mean, 1), 0
    )
    exposure[i] += unpaid.astype(np.int64)

    i = np.searchsorted(keys, u[:, 0])
    charged, foreign, services, unbilled = u[:, 1:].T
    x[i, col["foreign_share"]] = np.where(
        charged > 0, foreign / np.where(charged > 0, charged, 1), 0
    )
    x[i, col["services"]] = services
    exposure[i] += unbilled.astype(np.int64)

    i = np.searchsorted(keys, b[:, 0])
    tenure_days, ext, prior_f = b[:, 1:].T
    x[i, col["tenure_years"]] = np.maximum(tenure_days, 0) / 365.25
    x[i, col["ext_score"]] = np.where(ext >= 0, (ext - 650) / 100, 0)
    prior = np.zeros(n, dtype=np.int64)
    prior[i] = prior_f.astype(np.int64)
    external: list[int | None] = [None] * n
    for k, e in zip(i.tolist(), ext.tolist()):
        external[k] = int(e) if e >= 0 else None
    x[:, col["utilisation"]] = np.where(
        prior > 0, exposure / np.maximum(prior, 1), np.where(exposure > 0, CAPS["utilisation"], 0)
    )
    for name, cap in CAPS.items():
        np.minimum(x[:, col[name]], cap, out=x[:, col[name]])
    return Features(
        keys,
        x,
        exposure,
        spend,
        np.zeros(n, dtype=np.int64),
        prior,
        external,
        b[:, 0].astype(np.int64),
    )


def features(session: Session, user_ids, as_of: datetime | None = None) -> Features:
    """The features of ``user_ids`` as of ``as_of`` (default now), a handful of aggregate
    queries whatever the number of users."""
    as_of = resolve_now(as_of)
    user_ids = sorted(set(user_ids))
    params = {"users": user_ids, "as_of": as_of}
    keys = np.asarray(user_ids, dtype=np.int64)
    # Columns: base (3), history (9), usage (4), months (1), then the user's id.
    rows = _table(session, _user_queries()["combined"], 18, params)
    found = rows[:, 17]
    missing = set(user_ids) - set(found.astype(np.int64).tolist())  # every user has a base row
    if missing:
        raise NotFound("user", min(missing))
    key = found[:, None]
    feats = _columns(
        session,
        None,
        keys,
        params,
        tables=(
            np.hstack([key, rows[:, 3:12]]),
            np.hstack([key, rows[:, 12:16]]),
            np.hstack([key, rows[:, 0:3]]),
        ),
    )
    feats.on_time_months = rows[:, 16].astype(np.int64)
    return feats


def training_set(
    session: Session, as_of: datetime | None = None, *, exact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The store's outcomes: one row per finalized statement past its due date at ``as_of``,
    its features as of when it was finalized, and 1 when it was paid by its due date.

    Four plain queries (statements, charges, first use of each chain, users) and numpy: each
    statement is paired with the ones before it of its user, and charges are added up to each
    statement's date by cumulative sums. ``exact`` computes the same by the aggregate queries
    `features` uses, one join per statement (slower; the tests compare the two)."""
    as_of = resolve_now(as_of)
    s = Statement
    paid = and_(s.paid_at.is_not(None), s.paid_at <= s.due_at, s.paid_at <= as_of)
    outcomes = (
        select(s.id, case((paid, 1), else_=0))
        .where(s.status == "finalized", s.due_at < as_of)
        .order_by(s.id)
    )
    if exact:
        ky = _table(session, outcomes, 2)
        if not len(ky):
            return np.zeros((0, len(FEATURES))), np.zeros(0)
        anchors = (
            select(s.id.label("key"), s.user_id.label("user_id"), s.finalized_at.label("as_of"))
            .where(s.status == "finalized", s.due_at < as_of)
            .subquery("anchors")
        )
        return _columns(session, anchors, ky[:, 0].astype(np.int64)).x, ky[:, 1]
    return _training_columnar(session, as_of)


def _training_columnar(session: Session, as_of: datetime) -> tuple[np.ndarray, np.ndarray]:
    s, c = Statement, Charge
    t = (
        select(
            StatementLine.statement_id.label("sid"),
            func.sum(StatementLine.amount_minor).label("total"),
        )
        .group_by(StatementLine.statement_id)
        .subquery("totals")
    )
    st = _table(
        session,
        select(
            s.user_id,
            _EpochDays(s.finalized_at),
            _EpochDays(s.due_at),
            _EpochDays(s.paid_at),
            func.coalesce(t.c.total, 0),
            s.paid_minor,
            s.id,
        )
        .outerjoin(t, t.c.sid == s.id)
        .where(s.status == "finalized", s.finalized_at < as_of)
        .order_by(s.user_id, s.finalized_at, s.id),
        7,
    )
    if not len(st):
        return np.zeros((0, len(FEATURES))), np.zeros(0)
    U, F, D, P, T, PM, _ids = st.T
    n = len(U)
    as_of_days = session.scalar(select(_EpochDays(literal(as_of, UTCDateTime()))))
    anchor = as_of_days > D
    y = (~np.isnan(P) & (P <= D) & (as_of_days >= P)).astype(float)
    zeros = [np.zeros(n) for _ in range(9)]
    n_due, n_on_time, late, due_total, due_unpaid, n_all, sum_total, sum_sq, unpaid = zeros
    idx = np.arange(n)
    for d in range(1, n):
        j = idx - d
        ok = j >= 0
        ok[ok] &= U[j[ok]] == U[ok]
        if not ok.any():
            break
        j = np.where(ok, j, 0)
        ok &= F[j] < F
        a = F
        due = ok & (D[j] < a)
        paid_by = ~np.isnan(P[j]) & (P[j] <= a)
        on_time = paid_by & (P[j] <= D[j])
        n_due += due
        n_on_time += due & on_time
        late += np.where(due & ~on_time, np.where(paid_by, P[j] - D[j], a - D[j]), 0)
        due_total += np.where(due, T[j], 0)
        due_unpaid += np.where(due & ~paid_by, T[j] - PM[j], 0)
        n_all += ok
        sum_total += np.where(ok, T[j], 0)
        sum_sq += np.where(ok, T[j] * T[j], 0)
        unpaid += np.where(ok & ~paid_by, T[j] - PM[j], 0)

    # Charges up to each statement's date, by cumulative sums per user.
    billed = (
        select(StatementLine.charge_id, _EpochDays(s.finalized_at).label("at"))
        .join(s, s.id == StatementLine.statement_id)
        .where(StatementLine.charge_id.is_not(None))
        .subquery("billed")
    )
    ch = _table(
        session,
        select(
            c.user_id,
            _EpochDays(c.rated_at),
            c.amount_minor,
            case((c.provider_id != c.home_provider_id, c.amount_minor), else_=0),
            billed.c.at,
        )
        .outerjoin(billed, billed.c.charge_id == c.id)
        .where(c.rated_at < as_of),
        5,
    )
    first = _table(
        session,
        select(c.user_id, func.min(_EpochDays(c.rated_at)))
        .join(Award, Award.id == c.award_id)
        .where(c.rated_at < as_of)
        .group_by(c.user_id, Award.services),
        2,
    )
    lo = min(F.min(), ch[:, 1].min() if len(ch) else F.min()) - 1
    span = (
        max(
            F.max(),
            np.nanmax(ch[:, 4]) if len(ch) and not np.isnan(ch[:, 4]).all() else F.max(),
            ch[:, 1].max() if len(ch) else F.max(),
        )
        - lo
        + 2
    )

    def upto(users, times, values, at_inclusive=True):
        """For each statement: the user's sum of ``values`` whose time is up to its date."""
        keep = ~np.isnan(times)
        users, times, values = users[keep], times[keep], values[keep]
        key = users * span + (times - lo)
        order = np.argsort(key, kind="stable")
        key, cs = key[order], np.cumsum(values[order])
        q = U * span + (F - lo)
        end = np.searchsorted(key, q, side="right" if at_inclusive else "left")
        start = np.searchsorted(key, U * span, side="left")
        total = np.where(end > 0, cs[np.maximum(end - 1, 0)], 0)
        before = np.where(start > 0, cs[np.maximum(start - 1, 0)], 0)
        return total - before

    if len(ch):
        charged = upto(ch[:, 0], ch[:, 1], ch[:, 2])
        foreign = upto(ch[:, 0], ch[:, 1], ch[:, 3])
        unbilled = charged - upto(ch[:, 0], ch[:, 4], ch[:, 2])
        services = upto(first[:, 0], first[:, 1], np.ones(len(first)))
    else:
        charged = foreign = unbilled = services = np.zeros(n)

    us = _table(
        session,
        select(
            User.id,
            _EpochDays(User.created_at),
            func.coalesce(CreditProfile.external_score, -1),
            func.coalesce(CreditProfile.prior_limit_minor, 0),
        )
        .outerjoin(CreditProfile, CreditProfile.user_id == User.id)
        .where(User.id.in_(select(s.user_id).where(s.status == "finalized")))
        .order_by(User.id),
        4,
    )
    at = np.searchsorted(us[:, 0], U)
    created, ext, prior = us[at, 1], us[at, 2], us[at, 3]

    x = np.zeros((n, len(FEATURES)))
    col = {name: j for j, name in enumerate(FEATURES)}
    some = n_due > 0
    x[:, col["late_share"]] = np.where(some, 1 - n_on_time / np.maximum(n_due, 1), 0)
    x[:, col["months_late"]] = np.where(some, late / 30.0 / np.maximum(n_due, 1), 0)
    x[:, col["unpaid_share"]] = np.where(due_total > 0, due_unpaid / np.maximum(due_total, 1), 0)
    x[:, col["history"]] = np.log1p(n_due)
    x[:, col["tenure_years"]] = np.maximum(F - created, 0) / 365.25
    mean = sum_total / np.maximum(n_all, 1)
    var = np.maximum(sum_sq / np.maximum(n_all, 1) - mean * mean, 0)
    x[:, col["spend_cv"]] = np.where(
        (mean > 0) & (n_all > 1), np.sqrt(var) / np.where(mean > 0, mean, 1), 0
    )
    x[:, col["services"]] = services
    x[:, col["foreign_share"]] = np.where(
        charged > 0, foreign / np.where(charged > 0, charged, 1), 0
    )
    x[:, col["ext_score"]] = np.where(ext >= 0, (ext - 650) / 100, 0)
    owed = unbilled + unpaid
    x[:, col["utilisation"]] = np.where(
        prior > 0, owed / np.maximum(prior, 1), np.where(owed > 0, CAPS["utilisation"], 0)
    )
    for name, cap in CAPS.items():
        np.minimum(x[:, col[name]], cap, out=x[:, col[name]])
    order = np.argsort(_ids[anchor], kind="stable")  # in statement id order
    return x[anchor][order], y[anchor][order]


# -- the model ------------------------------------------------------------------------------


def coefficients_vector(coefficients: dict) -> tuple[float, np.ndarray]:
    return (
        float(coefficients["intercept"]),
        np.asarray([float(coefficients.get(f, 0.0)) for f in FEATURES]),
    )


def p_default(coefficients: dict, x: np.ndarray) -> np.ndarray:
    """The probability of *not* paying by the due date, for each row of ``x``."""
    b0, b = coefficients_vector(coefficients)
    return 1.0 / (1.0 + np.exp(b0 + x @ b))


def score_points(p: float | np.ndarray):
    """Scorecard points of a probability of not paying: BASE_SCORE at odds BASE_ODDS:1 of
    paying, PDO points more each time the odds double (5% → 600, 1/39 → 650)."""
    p = np.clip(np.asarray(p, dtype=float), 1e-9, 1 - 1e-9)
    factor = PDO / math.log(2)
    points = BASE_SCORE + factor * (np.log((1 - p) / p) - math.log(BASE_ODDS))
    out = np.rint(points).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def credit_limit(score: int, prior_limit_minor: int, mean_spend_minor: int) -> int:
    """The credit limit in minor units: (prior limit + twice the mean statement) times a
    factor of the score, 0 at 500 points or less, 1 at 600, 2 at 700, 3 at 800 and more
    (linear between). Non-decreasing in the score, the prior limit and the spend."""
    steps = min(max(score - 500, 0), 300)
    return (steps * (max(prior_limit_minor, 0) + 2 * max(mean_spend_minor, 0))) // 100


def bandwidth_grant(score: int, on_time_months: int) -> int:
    """Percent more max rate than a request names (claim c11): +50 at 680 points and 6 months
    paid on time, +25 at 620 points and 3 months, else none."""
    if score >= 680 and on_time_months >= 6:
        return 50
    if score >= 620 and on_time_months >= 3:
        return 25
    return 0


def reason_codes(coefficients: dict, x: np.ndarray, top: int = 3) -> list[dict]:
    """The features that pulled the score down most: each one's contribution to the log-odds
    of paying against a user about whom nothing is known (every feature 0), most negative
    first, only those below zero."""
    _, b = coefficients_vector(coefficients)
    pulls = b * x
    order = np.argsort(pulls, kind="stable")
    return [
        {
            "feature": FEATURES[j],
            "reason": REASONS[FEATURES[j]],
            "log_odds": round(float(pulls[j]), 4),
        }
        for j in order[:top]
        if pulls[j] < -1e-9
    ]


_NEWEST_MODEL = select(CreditModel).order_by(CreditModel.version.desc()).limit(1)


def current_model(session: Session) -> CreditModel:
    """The newest model version; the prior is stored as version 1 the first time it is needed."""
    model = session.scalar(_NEWEST_MODEL)
    if model is None:
        model = CreditModel(
            version=1, kind="prior", coefficients=dict(PRIOR), outcomes=0, defaults=0, auc_ppm=None
        )
        session.add(model)
        session.flush()
    return model


@dataclass(frozen=True)
class ModelInUse:
    """What a decision needs of the current model (a plain copy, kept between sessions)."""

    id: int
    version: int
    kind: str
    coefficients: dict


# Decisions read the current model from a per-database cache for MODEL_CACHE_S seconds (a
# statement saved per credit check): a model retrained in another process decides from then on
# at most that much later; one retrained in this process, at once.
MODEL_CACHE_S = 2.0
_models: dict[str, tuple[float, ModelInUse]] = {}


def _model_in_use(session: Session) -> ModelInUse:
    url = str(session.get_bind().engine.url)
    cached = _models.get(url)
    if cached is not None and time.monotonic() - cached[0] < MODEL_CACHE_S:
        return cached[1]
    m = current_model(session)
    use = ModelInUse(m.id, m.version, m.kind, dict(m.coefficients))
    _models[url] = (time.monotonic(), use)
    return use


@dataclass
class Retrained:
    model: CreditModel
    outcomes: int
    defaults: int
    auc: float | None
    fitted: dict | None
    seconds: float


def fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Logistic regression of paying on time (``y`` 1) on the features, as a coefficient dict
    with ``intercept``: scikit-learn's Newton-Cholesky solver on standardised columns with a
    negligible L2 term (C = 1e6: the maximum-likelihood fit), mapped back to the features'
    own units. A column that does not vary carries no information: its coefficient is 0."""
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(axis=0), x.std(axis=0)
    varies = std > 1e-12
    z = (x[:, varies] - mean[varies]) / std[varies]
    model = LogisticRegression(C=1e6, solver="newton-cholesky", max_iter=200)
    model.fit(z, y)
    b = np.zeros(x.shape[1])
    b[varies] = model.coef_[0] / std[varies]
    out = {"intercept": float(model.intercept_[0] - (b[varies] * mean[varies]).sum())}
    out.update({f: float(c) for f, c in zip(FEATURES, b)})
    return out


def auc(y: np.ndarray, p_pay: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p_pay))


def retrain(session: Session, now: datetime | None = None) -> Retrained:
    """Fit the model on the store's outcomes and store it as the next version; with fewer
    than MIN_OUTCOMES outcomes (or MIN_CLASS of either kind) the prior is kept (stored as a
    new version only when the newest is not the prior already)."""
    started = time.perf_counter()
    now = resolve_now(now)
    x, y = training_set(session, now)
    n, good = len(y), int(y.sum()) if len(y) else 0
    defaults = n - good
    latest = current_model(session)
    version = latest.version + 1
    if n < MIN_OUTCOMES or good < MIN_CLASS or defaults < MIN_CLASS:
        quality = auc(y, 1 - p_default(PRIOR, x)) if good and defaults else None
        model = latest
        if latest.kind != "prior":
            model = CreditModel(
                version=version,
                kind="prior",
                coefficients=dict(PRIOR),
                outcomes=n,
                defaults=defaults,
                auc_ppm=_ppm(quality),
            )
            session.add(model)
            session.flush()
        return Retrained(model, n, defaults, quality, None, time.perf_counter() - started)
    fitted = fit(x, y)
    quality = auc(y, 1 - p_default(fitted, x))
    model = CreditModel(
        version=version,
        kind="fitted",
        coefficients=fitted,
        outcomes=n,
        defaults=defaults,
        auc_ppm=_ppm(quality),
    )
    session.add(model)
    session.flush()
    _models.pop(str(session.get_bind().engine.url), None)  # this process decides with it now
    return Retrained(model, n, defaults, quality, fitted, time.perf_counter() - started)


def _ppm(value: float | None) -> int | None:
    return None if value is None else round(value * 1_000_000)


# -- decisions ------------------------------------------------------------------------------


def decide(
    session: Session, user_ids, now: datetime | None = None, *, store: bool = True
) -> list[CreditDecision]:
    """Decide the credit of ``user_ids`` now with the current model. A decision equal to the
    user's latest one (same model version, score, limit and grant) is not stored again: the
    latest is returned."""
    return _decide(session, user_ids, resolve_now(now), store)[0]


def _decide(
    session: Session, user_ids, now: datetime, store: bool = True
) -> tuple[list[CreditDecision], Features]:
    feats = features(session, user_ids, now)
    model = _model_in_use(session)
    p = p_default(model.coefficients, feats.x)
    scores = score_points(p)
    scores = np.atleast_1d(scores)
    ids = {"users": feats.keys.tolist()}
    homes, currencies, latest = {}, {}, {}
    for uid, home, currency, before in session.execute(_decide_queries()["homes"], ids):
        homes[uid], currencies[home] = home, currency
        if before is not None:
            latest[uid] = before
    out = []
    for i, user_id in enumerate(feats.keys.tolist()):
        score = int(scores[i])
        limit = credit_limit(score, int(feats.prior_limit_minor[i]), int(feats.mean_spend_minor[i]))
        grant = bandwidth_grant(score, int(feats.on_time_months[i]))
        before = latest.get(user_id)
        if before is not None and (
            before.model_id,
            before.score,
            before.limit_minor,
            before.bandwidth_grant_pct,
        ) == (model.id, score, limit, grant):
            out.append(before)
            continue
        inputs = feats.row(i)
        inputs.update(
            {
                "external_score": feats.external_score[i],
                "prior_limit_minor": int(feats.prior_limit_minor[i]),
                "exposure_minor": int(feats.exposure_minor[i]),
                "mean_spend_minor": int(feats.mean_spend_minor[i]),
            }
        )
        decision = CreditDecision(
            user_id=user_id,
            home_provider_id=homes[user_id],
            model_id=model.id,
            model_version=model.version,
            model_kind=model.kind,
            decided_at=now,
            inputs=inputs,
            p_default_ppm=round(float(p[i]) * 1_000_000),
            score=score,
            limit_minor=limit,
            currency=currencies[homes[user_id]],
            on_time_months=int(feats.on_time_months[i]),
            bandwidth_grant_pct=grant,
            reasons=reason_codes(model.coefficients, feats.x[i]),
        )
        if store:
            session.add(decision)
            if before is not None and grant < before.bandwidth_grant_pct:
                withdraw_grant(session, user_id, grant, now)  # the history worsened
        out.append(decision)
    if store:
        session.flush()
    return out, feats


@functools.cache
def _decide_queries() -> dict:
    from broker.models import PricePolicy

    users: BindParameter[list[int]] = bindparam("users", expanding=True)
    earlier = aliased(CreditDecision)
    newest = (
        select(func.max(earlier.id))
        .where(earlier.user_id == User.id)
        .correlate(User)
        .scalar_subquery()
    )
    # Each user's home provider, its currency and the user's latest decision: one statement.
    return {
        "homes": select(User.id, User.home_provider_id, PricePolicy.currency, CreditDecision)
        .join(PricePolicy, PricePolicy.provider_id == User.home_provider_id)
        .outerjoin(CreditDecision, CreditDecision.id == newest)
        .where(User.id.in_(users))
    }


def exposure(session: Session, user_id: int) -> int:
    """What the user owes and has not paid, in minor units: charges not yet on a statement
    plus the unpaid part of its finalized statements (due or not)."""
    unbilled = (
        session.scalar(
            select(func.coalesce(func.sum(Charge.amount_minor), 0)).where(
                Charge.user_id == user_id, _unbilled(Charge)
            )
        )
        or 0
    )
    unpaid = (
        session.scalar(
            select(
                func.coalesce(func.sum(_statement_total(Statement) - Statement.paid_minor), 0)
            ).where(
                Statement.user_id == user_id,
                Statement.status == "finalized",
                Statement.paid_at.is_(None),
            )
        )
        or 0
    )
    return int(unbilled) + max(int(unpaid), 0)


def has_profile(session: Session, user_id: int) -> bool:
    return session.get(CreditProfile, user_id) is not None


@dataclass(frozen=True)
class CreditCheck:
    decision: CreditDecision
    exposure_minor: int
    available_minor: int


def check_credit(
    session: Session,
    user_id: int,
    amount_minor: int | None,
    currency: str,
    now: datetime,
    *,
    what: str = "the request",
) -> CreditCheck | None:
    """The user's credit check for a new commitment of ``amount_minor`` (None: unknown yet,
    only the decision is made). None for a user without a credit profile (its credit is not
    managed: docs/billing.md, "Credit"). Raises `CreditLimitExceeded` naming the numbers."""
    if not has_profile(session, user_id):
        return None
    [decision], feats = _decide(session, [user_id], now)
    owed = int(feats.exposure_minor[0])
    available = decision.limit_minor - owed
    if amount_minor is not None and currency == decision.currency and amount_minor > available:

        def money(minor: int) -> str:
            return f"{Money(minor, currency)} ({minor} minor units)"

        refused = CreditLimitExceeded(
            f"{what} would cost up to {money(amount_minor)}, past the available credit of "
            f"{money(available)}: limit {money(decision.limit_minor)} (score "
            f"{decision.score}, model version {decision.model_version}) minus {money(owed)} "
            f"owed (unbilled charges and unpaid statements); pay a statement or set a lower "
            f"max_price_minor",
            where=f"user {user_id}",
        )
        refused.amount, refused.available = (
            Money(amount_minor, currency),
            Money(available, currency),
        )
        refused.limit, refused.score = Money(decision.limit_minor, currency), decision.score
        raise refused
    return CreditCheck(decision, owed, available)


# -- for people: access, external info, views ------------------------------------------------


def _may_see(session: Session, actor: Actor, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (
        actor.is_admin
        or actor.speaks_for_user(user_id)
        or actor.speaks_for_provider(user.home_provider_id)
    ):
        raise NotYours(
            f"user {user_id}'s credit is for the user, its home provider and the "
            f"admin; {actor} is none",
            where=f"user {user_id}",
        )
    return user


def current_decision(
    session: Session, actor: Actor, user_id: int, now: datetime | None = None
) -> CreditDecision:
    """The user's credit decided now (stored when it differs from its latest decision)."""
    _may_see(session, actor, user_id)
    return decide(session, [user_id], now)[0]


def list_decisions(
    session: Session, actor: Actor, user_id: int, *, after: int | None = None, limit: int = 100
) -> list[CreditDecision]:
    """The user's decisions, newest first; ``after`` is the last id of the page before."""
    _may_see(session, actor, user_id)
    query = (
        select(CreditDecision)
        .where(CreditDecision.user_id == user_id)
        .order_by(CreditDecision.id.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(CreditDecision.id < after)
    return list(session.scalars(query))


def set_profile(
    session: Session,
    actor: Actor,
    user_id: int,
    *,
    external_score: int | None,
    prior_limit_minor: int,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> CreditProfile:
    """The admin or the user's home provider sets its external credit score and sign-up
    limit (in the home provider's currency); the user is then decided anew."""
    now = resolve_now(now)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if not (actor.is_admin or actor.speaks_for_provider(user.home_provider_id)):
        raise NotYours(
            f"only the admin or user {user_id}'s home provider sets its credit "
            f"history; {actor} is neither",
            where=f"user {user_id}",
        )
    if external_score is not None and (
        isinstance(external_score, bool)
        or not isinstance(external_score, int)
        or not 300 <= external_score <= 850
    ):
        raise InvalidInput(
            f"an external credit score is an integer 300..850, not {external_score!r}",
            field="external_score",
        )
    check_amount(prior_limit_minor, field="prior_limit_minor")
    currency = check_currency(user.home_provider.policy.currency)
    params = {"user": user_id, "score": external_score, "limit": prior_limit_minor}

    def run() -> CreditDecision:
        profile = session.get(CreditProfile, user_id)
        if profile is None:
            profile = CreditProfile(user_id=user_id)
            session.add(profile)
        profile.external_score, profile.prior_limit_minor = external_score, prior_limit_minor
        profile.currency, profile.set_by, profile.updated_at = currency, str(actor)[:100], now
        session.flush()
        return decide(session, [user_id], now)[0]

    # The key remembers the decision the change led to (a profile has no id of its own).
    once(session, actor, idempotency_key, "credit.profile", params, CreditDecision, run)
    return session.get_one(CreditProfile, user_id)


def decision_view(d: CreditDecision) -> dict:
    return {
        "id": d.id,
        "user_id": d.user_id,
        "home_provider_id": d.home_provider_id,
        "decided_at": d.decided_at,
        "model_version": d.model_version,
        "model_kind": d.model_kind,
        "p_default_ppm": d.p_default_ppm,
        "score": d.score,
        "limit_minor": d.limit_minor,
        "currency": d.currency,
        "on_time_months": d.on_time_months,
        "bandwidth_grant_pct": d.bandwidth_grant_pct,
        "reasons": d.reasons,
        "inputs": d.inputs,
    }


def profile_view(p: CreditProfile) -> dict:
    return {
        "user_id": p.user_id,
        "external_score": p.external_score,
        "prior_limit_minor": p.prior_limit_minor,
        "currency": p.currency,
        "set_by": p.set_by,
        "updated_at": p.updated_at,
    }


__all__ = [
    "BASE_ODDS",
    "BASE_SCORE",
    "FEATURES",
    "PDO",
    "PRIOR",
    "CreditCheck",
    "CreditLimitExceeded",
    "Features",
    "Retrained",
    "auc",
    "bandwidth_grant",
    "check_credit",
    "credit_limit",
    "current_decision",
    "current_model",
    "decide",
    "decision_view",
    "exposure",
    "features",
    "fit",
    "has_profile",
    "list_decisions",
    "p_default",
    "profile_view",
    "reason_codes",
    "retrain",
    "score_points",
    "set_profile",
    "training_set",
]
