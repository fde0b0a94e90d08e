"""Inputs and answers of the credit routes: a user's external credit history, its credit
decisions (docs/billing.md, "Credit")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictInt

from broker.api.responses import Out
from broker.api.schemas import Body
from broker.bounds import INT64_MAX

Minor = Annotated[StrictInt, Field(ge=0, le=INT64_MAX, description="minor units")]


class CreditProfileIn(Body):
    external_score: StrictInt | None = Field(
        None, ge=300, le=850, description="an external credit score (null: none known)"
    )
    prior_limit_minor: Minor = Field(
        description="the limit given at sign-up, in minor units of the home provider's currency"
    )


class CreditProfileOut(Out):
    user_id: int
    external_score: int | None
    prior_limit_minor: int
    currency: str
    set_by: str
    updated_at: datetime


class ReasonOut(Out):
    feature: str
    reason: str
    log_odds: float = Field(
        description="what the feature added to the log-odds of paying "
        "on time (below zero: it pulled the score down)"
    )


class CreditDecisionOut(Out):
    id: int | None
    user_id: int
    home_provider_id: int
    decided_at: datetime
    model_version: int
    model_kind: str = Field(description="prior (documented coefficients) or fitted")
    p_default_ppm: int = Field(description="millionths: probability of not paying on time")
    score: int
    limit_minor: int
    currency: str
    on_time_months: int
    bandwidth_grant_pct: int = Field(description="0, 25 or 50: more max rate on requests")
    reasons: list[ReasonOut]
    inputs: dict


class CreditNowOut(CreditDecisionOut):
    owed_minor: int = Field(description="unbilled charges and unpaid statements")
    available_minor: int = Field(description="limit minus owed")
    managed: bool = Field(
        description="whether requests are checked against the limit (the user has a credit profile)"
    )
