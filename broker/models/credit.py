"""Credit: what the home provider knows of a user from outside (an external credit score and
the limit given at sign-up), the credit model's versions, and every credit decision
(docs/billing.md, "Credit")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, Currency, HasCreated, HasId, Minor


class CreditProfile(Base):
    """A user's credit history from outside the store, set by an admin or its home provider:
    an external credit score (300..850, null: none known) and the limit given at sign-up in
    the home provider's currency. A user with a profile has its credit checked on requests."""

    __tablename__ = "credit_profiles"
    __table_args__ = (
        CheckConstraint(
            "external_score IS NULL OR external_score BETWEEN 300 AND 850", name="score"
        ),
        CheckConstraint("prior_limit_minor >= 0", name="prior_limit"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    external_score: Mapped[int | None] = mapped_column(Integer)
    prior_limit_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    set_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime]


class CreditModel(HasId, HasCreated, Base):
    """One version of the credit model: ``kind`` ``prior`` (the documented coefficients) or
    ``fitted`` (logistic regression on ``outcomes`` statements). ``coefficients`` maps each
    feature (and ``intercept``) to its weight in the log-odds of paying on time."""

    __tablename__ = "credit_models"
    __table_args__ = (
        CheckConstraint("kind IN ('prior', 'fitted')", name="kind"),
        CheckConstraint("auc_ppm IS NULL OR auc_ppm BETWEEN 0 AND 1000000", name="auc"),
    )

    version: Mapped[int] = mapped_column(Integer, unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    coefficients: Mapped[dict] = mapped_column(JSON)
    outcomes: Mapped[int] = mapped_column(Integer)
    defaults: Mapped[int] = mapped_column(Integer)
    auc_ppm: Mapped[int | None] = mapped_column(Integer)


class CreditDecision(HasId, Base):
    """One credit decision on a user: its inputs (the features as of ``decided_at``), the model
    version that scored them, the probability of not paying on time (millionths), the score,
    the limit, the bandwidth grant and the reason codes (the features that pulled the score
    down most). Never edited; the newest is the user's current decision."""

    __tablename__ = "credit_decisions"
    __table_args__ = (
        CheckConstraint("p_default_ppm BETWEEN 0 AND 1000000", name="p_default"),
        CheckConstraint("limit_minor >= 0", name="limit"),
        CheckConstraint("bandwidth_grant_pct IN (0, 25, 50)", name="grant"),
        Index("ix_credit_decisions_user_id_id", "user_id", "id"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    home_provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("credit_models.id"))
    model_version: Mapped[int] = mapped_column(Integer)
    model_kind: Mapped[str] = mapped_column(String(10))
    decided_at: Mapped[datetime]
    inputs: Mapped[dict] = mapped_column(JSON)
    p_default_ppm: Mapped[int] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer)
    limit_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(Currency)
    on_time_months: Mapped[int] = mapped_column(Integer)
    bandwidth_grant_pct: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[list] = mapped_column(JSON)
