"""Ratings both ways on an award, combined into a Beta reputation that decays with age.

A rating is a score 0..100 (100: fully satisfactory). Rating i, given at ``t_i``, counts as
``r_i = score/100`` positive and ``1 - r_i`` negative evidence, weighted by
``w_i = 2 ** (-(now - t_i) / half_life)``. With a uniform Beta(1, 1) prior::

    alpha = 1 + sum(w_i * r_i)        beta = 1 + sum(w_i * (1 - r_i))
    reputation = alpha / (alpha + beta)

so a newcomer stands at 0.5, good ratings pull towards 1, bad towards 0, and an old rating
weighs half as much every half-life (Jøsang & Ismail, "The Beta Reputation System", 2002).
Reputations are kept as integer millionths, which is what auctions score with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import BigInteger, Select, String, cast, extract, select, type_coerce
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.clock import resolve_now
from broker.delivery_record import measured_evidence
from broker.errors import InvalidInput, NotFound, NotYours
from broker.idempotency import once
from broker.models import Award, AwardPayer, Rating, ServiceRequest
from broker.store import fetch_tuples


@dataclass(frozen=True)
class ReputationPolicy:
    """``measured_weight``: how much one measured job (`broker.delivery_record`) counts at an
    auction's close beside one fresh rating; its score in [0, 1] is added to the Beta's
    positive evidence and the rest to the negative (0: the close scores on ratings alone)."""

    half_life: timedelta = timedelta(days=90)
    prior_positive: float = 1.0
    prior_negative: float = 1.0
    measured_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.half_life <= timedelta(0):
            raise InvalidInput("the half-life must be positive", field="half_life")
        if not 0 <= self.measured_weight <= 100:
            raise InvalidInput("the measured record's weight is 0..100", field="measured_weight")


DEFAULT_POLICY = ReputationPolicy()


@dataclass(frozen=True)
class Reputation:
    """Expected value of the Beta distribution in millionths, and how many ratings count."""

    ppm: int
    count: int

    @property
    def score(self) -> float:
        return self.ppm / 1_000_000

    def as_dict(self) -> dict:
        return {"score": round(self.score, 6), "count": self.count}


def beta_reputation(
    ratings: Iterable[tuple[int, datetime]],
    now: datetime,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> Reputation:
    """The reputation of ``(score, rated_at)`` pairs as of ``now``."""
    half_life = policy.half_life.total_seconds()
    alpha, beta, count = policy.prior_positive, policy.prior_negative, 0
    for score, rated_at in ratings:
        age = max(0.0, (now - rated_at).total_seconds())
        weight = 2.0 ** (-age / half_life)
        r = score / 100
        alpha += weight * r
        beta += weight * (1 - r)
        count += 1
    return Reputation(round(1_000_000 * alpha / (alpha + beta)), count)


def beta_reputations(
    owner_index: np.ndarray,
    scores: np.ndarray,
    ages_us: np.ndarray,
    owners: int,
    policy: ReputationPolicy = DEFAULT_POLICY,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`beta_reputation` of many at once: ratings as arrays, ``owner_index[i]`` (0..owners-1)
    whose rating ``i`` is, its score and age in microseconds; returns each owner's
    (reputation ppm, rating count).

    The same arithmetic in the same order as `beta_reputation` over each owner's ratings in
    array order, so the results are equal to the millionth: ages are exact microseconds, the
    weights come from Python's own ``**`` (numpy's vectorised power may differ in the last
    bit), and each owner's evidence is summed from its prior in order (``np.add.at``).
    ``extra``: more (positive, negative) evidence per owner, added after the ratings (the
    measured record; adding zeros changes nothing).
    """
    half_life = policy.half_life.total_seconds()
    ages = np.maximum(0.0, ages_us.astype(np.float64) / 1e6)
    exponents = -ages / half_life
    weights = np.array([2.0**x for x in exponents.tolist()], dtype=np.float64)
    r = scores.astype(np.float64) / 100
    alpha = np.full(owners, policy.prior_positive, dtype=np.float64)
    beta = np.full(owners, policy.prior_negative, dtype=np.float64)
    np.add.at(alpha, owner_index, weights * r)
    np.add.at(beta, owner_index, weights * (1 - r))
    if extra is not None:
        alpha += extra[0]
        beta += extra[1]
    ppm = np.rint(1_000_000 * alpha / (alpha + beta)).astype(np.int64)
    return ppm, np.bincount(owner_index, minlength=owners).astype(np.int64)


def _rated_at_as_stored(dialect: str):
    """``ratings.rated_at`` in the cheapest form to fetch thousands of: integer microseconds
    since the epoch from PostgreSQL (exact: ``extract`` is numeric there), the stored UTC text
    from SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``, which numpy parses in bulk)."""
    if dialect == "postgresql":
        return cast(extract("epoch", Rating.rated_at) * 1_000_000, BigInteger)
    return type_coerce(Rating.rated_at, String)


def _epoch_us(values: Sequence) -> np.ndarray:
    """What `_rated_at_as_stored` fetched, as integer microseconds since the epoch (UTC)."""
    if values and isinstance(values[0], str):
        return np.array(values, dtype="datetime64[us]").astype(np.int64)
    if values and isinstance(values[0], datetime):
        return np.array(
            [v.astimezone(UTC).replace(tzinfo=None) for v in values], dtype="datetime64[us]"
        ).astype(np.int64)
    return np.fromiter(values, dtype=np.int64, count=len(values))


def reputation_table(
    session: Session,
    direction: str,
    ids: Iterable[int] | Select,
    *,
    now: datetime,
    policy: ReputationPolicy = DEFAULT_POLICY,
    ids_query: Select | None = None,
    measured: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reputations of many providers (``service``) or users (``payment``) as arrays.

    ``ids`` is an iterable of ids or a SELECT of them. ``ids_query``, a SELECT of the same
    ids, lets the database pick the ratings instead of a long IN list (a SELECT given as
    ``ids`` serves as both). Returns ``(ids, ppm, counts)``, ``ids`` sorted and unique. One
    query brings every rating of them as bare columns (no objects, times as stored); the
    arithmetic is `beta_reputations`. ``measured``: providers' measured delivery records
    count too, at ``policy.measured_weight`` per job (what an auction's close scores with);
    the counts stay the ratings'.
    """
    column = Rating.provider_id if direction == "service" else Rating.user_id
    session.flush()  # Core below: let it see what the session has pending
    conn = session.connection()
    query = select(column, Rating.score, _rated_at_as_stored(conn.dialect.name)).where(
        Rating.direction == direction
    )
    if isinstance(ids, Select):
        ids_query = ids
        ids = conn.execute(ids).scalars().all()
    wanted = np.sort(np.fromiter(ids, dtype=np.int64))
    wanted = wanted[np.concatenate(([True], wanted[1:] != wanted[:-1]))] if len(wanted) else wanted
    if ids_query is not None:
        chunks = [query.where(column.in_(ids_query.scalar_subquery()))]
    else:
        listed = wanted.tolist()
        chunks = [
            query.where(column.in_(listed[i : i + 5000])) for i in range(0, len(listed), 5000)
        ]
    rows = [row for chunk in chunks for row in fetch_tuples(conn, chunk)]
    owned, scored, stamps = zip(*rows) if rows else ((), (), ())
    owners = np.fromiter(owned, dtype=np.int64, count=len(rows))
    scores = np.fromiter(scored, dtype=np.int64, count=len(rows))
    rated_us = _epoch_us(stamps)
    now_us = np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "us").astype(np.int64)
    extra = None
    if measured and direction == "service" and policy.measured_weight:
        extra = measured_evidence(session, wanted, policy.measured_weight, ids_query)
    ppm, counts = beta_reputations(
        np.searchsorted(wanted, owners), scores, now_us - rated_us, len(wanted), policy, extra
    )
    return wanted, ppm, counts


def _reputations(
    session: Session, direction: str, ids, now: datetime, policy: ReputationPolicy
) -> dict[int, Reputation]:
    wanted, ppm, counts = reputation_table(session, direction, ids, now=now, policy=policy)
    return {i: Reputation(p, c) for i, p, c in zip(wanted.tolist(), ppm.tolist(), counts.tolist())}


def provider_reputations(
    session: Session,
    provider_ids: Iterable[int] | Select,
    *,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> dict[int, Reputation]:
    """How satisfactorily each provider delivered, from the users' ``service`` ratings.

    ``provider_ids`` may be a SELECT of ids (e.g. an auction's bidders), run inside the query.
    """
    return _reputations(session, "service", provider_ids, resolve_now(now), policy)


def user_reputations(
    session: Session,
    user_ids: Iterable[int],
    *,
    now: datetime | None = None,
    policy: ReputationPolicy = DEFAULT_POLICY,
) -> dict[int, Reputation]:
    """How satisfactorily each user paid, from the providers' ``payment`` ratings."""
    return _reputations(session, "payment", user_ids, resolve_now(now), policy)


def award_parties(session: Session, award: Award) -> set[int]:
    """The users on the recipient side of an award: the requester and every payer."""
    requester = session.execute(
        select(ServiceRequest.user_id).where(ServiceRequest.id == award.request_id)
    ).scalar_one()
    payers = set(session.scalars(select(AwardPayer.user_id).where(AwardPayer.award_id == award.id)))
    return payers | {requester}


def rate(
    session: Session,
    actor: Actor,
    award_id: int,
    score: int,
    *,
    user_id: int | None = None,
    comment: str = "",
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> Rating:
    """Rate the other party of award ``award_id``; a later rating by the same rater replaces.

    A user (or its device or phone) rates the delivering provider's service; the delivering
    provider rates a user's payment (``user_id``: which payer; defaults to the requester).
    Nobody else may rate the award.
    """
    now = resolve_now(now)
    award = session.get(Award, award_id)
    if award is None:
        raise NotFound("award", award_id)
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
        raise InvalidInput(
            f"a score is an integer 0..100 (100: fully satisfactory), got {score!r}", field="score"
        )
    if not isinstance(comment, str) or len(comment) > 500:
        raise InvalidInput("a comment is text of at most 500 characters", field="comment")
    parties = award_parties(session, award)
    if actor.speaks_for_provider(award.provider_id):
        direction = "payment"
        if user_id is None:
            user_id = session.get_one(ServiceRequest, award.request_id).user_id
        if user_id not in parties:
            raise NotYours(
                f"user {user_id} is not a party of award {award_id}",
                where=f"award {award_id}",
                field="user_id",
            )
    elif actor.user_id is not None and actor.user_id in parties:
        direction, user_id = "service", actor.user_id
    else:
        raise NotYours(
            f"{actor} is not a party of award {award_id}; only its recipients and "
            f"its provider rate it",
            where=f"award {award_id}",
        )
    params = {"award": award_id, "score": score, "user": user_id, "comment": comment}

    def run() -> Rating:
        rating = session.scalar(
            select(Rating).where(
                Rating.award_id == award_id,
                Rating.direction == direction,
                Rating.user_id == user_id,
            )
        )
        if rating is None:
            rating = Rating(
                award_id=award_id,
                direction=direction,
                user_id=user_id,
                provider_id=award.provider_id,
            )
            session.add(rating)
        rating.score, rating.comment, rating.rated_at = score, comment, now
        rating.device_id = actor.device_id if direction == "service" else None
        session.flush()
        return rating

    return once(session, actor, idempotency_key, "rate", params, Rating, run)
