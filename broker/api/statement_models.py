"""Inputs and answers of the statement routes: billing settings, period close, statements and
their lines, credit notes, segmentation profiles, device events (docs/billing.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictInt

from broker.api.responses import Out
from broker.api.schemas import Body
from broker.bounds import INT64_MAX

NegativeMinor = Annotated[
    StrictInt, Field(ge=-INT64_MAX, le=-1, description="minor units, below zero")
]


class BillingSettingsIn(Body):
    period_months: int = Field(1, description="1, 2, 3, 4, 6 or 12")
    cutoff_day: int = Field(1, ge=1, le=28, description="the day of the month a period starts")
    timezone: str = Field(
        "UTC", min_length=1, max_length=64, description="IANA zone; periods start at midnight there"
    )
    margin_ppm: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="millionths of another provider's charge the "
        "home provider keeps (unchanged when left out)",
    )
    payment_terms_days: int | None = Field(
        None, ge=0, le=366, description="days a user has to pay a statement"
    )


class BillingSettingsOut(Out):
    provider_id: int
    period_months: int
    cutoff_day: int
    timezone: str
    next_number: int
    closed_through: datetime | None
    margin_ppm: int
    payment_terms_days: int


class CloseIn(Body):
    period: str = Field(
        min_length=7,
        max_length=7,
        pattern=r"^\d{4}-\d{2}$",
        description="YYYY-MM: the month the period starts in",
    )


class CloseOut(Out):
    provider_id: int
    period: str
    period_start: datetime
    period_end: datetime
    drafts_made: int
    finalized: int
    statements: int
    lines: int
    totals: dict[str, int]


class Correction(Out):
    statement_number: int
    line: int


class StatementLineOut(Out):
    id: int | None
    position: int
    charge_id: int | None
    credit_note_id: int | None
    kind: str
    amount_minor: int
    currency: str
    minor_digits: int
    at: datetime
    provider_id: int | None = Field(description="the delivering provider")
    provider: str | None
    network: str | None
    services: list[str] | None
    device: str | None
    phone: str | None
    recipients: list[str] | None
    award_id: int | None
    job_id: int | None
    usage_report_id: int | None
    usage_sequence: int | None
    quantity: int | None
    unit: str | None
    corrects: Correction | None
    description: str


class StatementSummary(Out):
    id: int
    number: int | None
    status: str
    home_provider_id: int
    user_id: int
    period: str
    period_start: datetime
    period_end: datetime
    totals: dict[str, int] | None
    line_count: int | None
    content_sha256: str | None
    finalized_at: datetime | None
    due_at: datetime | None


class StatementOut(Out):
    id: int | None = Field(description="null: the period under way, not stored yet")
    number: int | None
    status: str
    home_provider_id: int
    home_provider: str
    user_id: int
    user: str
    period: str
    period_start: datetime
    period_end: datetime
    finalized_at: datetime | None
    due_at: datetime | None
    content_sha256: str | None
    totals: dict[str, int]
    lines: list[StatementLineOut]


class CreditIn(Body):
    amount_minor: NegativeMinor
    reason: str = Field(min_length=1, max_length=500)


class CreditNoteOut(Out):
    id: int
    statement_id: int
    position: int
    user_id: int
    amount_minor: int
    currency: str
    reason: str
    created_at: datetime


class ProfileIn(Body):
    profile: dict = Field(
        description="the profile's JSON form (docs/billing.md, Profiles); its name is the path's"
    )
    default: bool = Field(False, description="make it the user's default profile")


class ProfileOut(Out):
    user_id: int
    name: str
    default: bool
    profile: dict
    created_at: datetime
    updated_at: datetime


class ChargeOut(Out):
    id: int
    user_id: int
    provider_id: int
    home_provider_id: int
    award_id: int
    job_id: int | None
    usage_report_id: int | None
    kind: str
    amount_minor: int
    currency: str
    minor_digits: int
    tariff_id: int | None
    tariff_version: int | None
    rated_at: datetime
    statement_id: int | None = Field(description="the statement it is on; null: not billed yet")
