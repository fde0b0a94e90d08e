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

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.clock import resolve_now
from broker.errors import InvalidInput, NotFound, NotYours
from broker.idempotency import once
from broker.models import Award, AwardPayer, Rating, ServiceRequest


@dataclass(frozen=True)
class ReputationPolicy:
    half_life: timedelta = timedelta(days=90)
    prior_positive: float = 1.0
    prior_negative: float = 1.0

    def __post_init__(self) -> None:
        if self.half_life <= timedelta(0):
            raise InvalidInput("the half-life must be positive", field="half_life")


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


def beta_reputation(ratings: Iterable[tuple[int, datetime]], now: datetime,
                    policy: ReputationPolicy = DEFAULT_POLICY) -> Reputation:
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


def _reputations(session: Session, direction: str, column, ids, now: datetime,
                 policy: ReputationPolicy) -> dict[int, Reputation]:
    """Reputations of ``ids``: an iterable of ids, or a SELECT of them (no huge IN list)."""
    by_id: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    query = select(column, Rating.score, Rating.rated_at).where(Rating.direction == direction)
    if isinstance(ids, Select):
        wanted = sorted(set(session.scalars(ids)))
        chunks = [query.where(column.in_(ids.scalar_subquery()))]
    else:
        wanted = sorted(set(ids))
        chunks = [query.where(column.in_(wanted[i:i + 5000]))
                  for i in range(0, len(wanted), 5000)]
    for chunk in chunks:
        for ident, score, rated_at in session.execute(chunk):
            by_id[ident].append((score, rated_at))
    return {i: beta_reputation(by_id.get(i, ()), now, policy) for i in wanted}


def provider_reputations(session: Session, provider_ids: Iterable[int] | Select, *,
                         now: datetime | None = None,
                         policy: ReputationPolicy = DEFAULT_POLICY) -> dict[int, Reputation]:
    """How satisfactorily each provider delivered, from the users' ``service`` ratings.

    ``provider_ids`` may be a SELECT of ids (e.g. an auction's bidders), run inside the query.
    """
    return _reputations(session, "service", Rating.provider_id, provider_ids, resolve_now(now),
                        policy)


def user_reputations(session: Session, user_ids: Iterable[int], *,
                     now: datetime | None = None,
                     policy: ReputationPolicy = DEFAULT_POLICY) -> dict[int, Reputation]:
    """How satisfactorily each user paid, from the providers' ``payment`` ratings."""
    return _reputations(session, "payment", Rating.user_id, user_ids, resolve_now(now), policy)


def award_parties(session: Session, award: Award) -> set[int]:
    """The users on the recipient side of an award: the requester and every payer."""
    requester = session.scalar(select(ServiceRequest.user_id).where(
        ServiceRequest.id == award.request_id))
    payers = set(session.scalars(select(AwardPayer.user_id).where(
        AwardPayer.award_id == award.id)))
    return payers | {requester}


def rate(session: Session, actor: Actor, award_id: int, score: int, *, user_id: int | None = None,
         comment: str = "", now: datetime | None = None,
         idempotency_key: str | None = None) -> Rating:
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
        raise InvalidInput(f"a score is an integer 0..100 (100: fully satisfactory), "
                           f"got {score!r}", field="score")
    if not isinstance(comment, str) or len(comment) > 500:
        raise InvalidInput("a comment is text of at most 500 characters", field="comment")
    parties = award_parties(session, award)
    if actor.speaks_for_provider(award.provider_id):
        direction = "payment"
        if user_id is None:
            user_id = session.get(ServiceRequest, award.request_id).user_id
        if user_id not in parties:
            raise NotYours(f"user {user_id} is not a party of award {award_id}",
                           where=f"award {award_id}", field="user_id")
    elif actor.user_id is not None and actor.user_id in parties:
        direction, user_id = "service", actor.user_id
    else:
        raise NotYours(f"{actor} is not a party of award {award_id}; only its recipients and "
                       f"its provider rate it", where=f"award {award_id}")
    params = {"award": award_id, "score": score, "user": user_id, "comment": comment}

    def run() -> Rating:
        rating = session.scalar(select(Rating).where(
            Rating.award_id == award_id, Rating.direction == direction,
            Rating.user_id == user_id))
        if rating is None:
            rating = Rating(award_id=award_id, direction=direction, user_id=user_id,
                            provider_id=award.provider_id)
            session.add(rating)
        rating.score, rating.comment, rating.rated_at = score, comment, now
        rating.device_id = actor.device_id if direction == "service" else None
        session.flush()
        return rating

    return once(session, actor, idempotency_key, "rate", params, Rating, run)
