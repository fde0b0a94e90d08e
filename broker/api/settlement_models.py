"""Inputs and answers of the settlement routes: batches, their acknowledgement, nettings and a
provider's balance (docs/billing.md, "Settlement")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, StrictInt

from broker.api.responses import Out
from broker.api.schemas import Body
from broker.bounds import INT64_MAX

Minor = Annotated[
    StrictInt, Field(ge=-INT64_MAX, le=INT64_MAX, description="integer minor units of the currency")
]
Ident = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")]
PerCurrency = dict[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], Minor]


class IssueIn(Body):
    period: str = Field(
        min_length=7,
        max_length=7,
        pattern=r"^\d{4}-\d{2}$",
        description="YYYY-MM: the period of the home provider's statements",
    )
    provider_id: Ident | None = Field(
        None, description="only the batch to this delivering provider (default: every one)"
    )


class SettlementLineDoc(Body):
    position: Ident
    statement_line_id: Ident
    statement_id: Ident
    amount_minor: Minor
    currency: CurrencyCode


class SettlementSummary(Out):
    id: int
    home_provider_id: int
    provider_id: int
    number: int
    period: str
    status: str = Field(description="issued, acknowledged or settled")
    line_count: int
    totals: dict[str, int] = Field(description="the lines' sum per currency")
    due: dict[str, int] = Field(description="what the home provider owes, per currency")
    margin: dict[str, int] = Field(description="what the home provider keeps, per currency")
    content_sha256: str
    created_at: datetime
    acknowledged_at: datetime | None
    netting_id: int | None


class SettlementOut(SettlementSummary):
    lines: list[SettlementLineDoc]


class AcknowledgeIn(Body):
    """The batch document as the delivering provider received it (what GET
    /v1/settlements/{id} answers); fields the hash does not cover (id, status, times) may be
    sent back as they are and are not looked at."""

    model_config = ConfigDict(extra="ignore")

    home_provider_id: Ident
    provider_id: Ident
    number: Ident
    period: str = Field(min_length=7, max_length=7, pattern=r"^\d{4}-\d{2}$")
    line_count: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
    totals: PerCurrency
    due: PerCurrency
    margin: PerCurrency
    lines: list[SettlementLineDoc] = Field(max_length=1_000_000)


class NettingAmount(Out):
    low_owes_minor: int
    high_owes_minor: int
    net_minor: int
    payer_id: int | None
    payee_id: int | None


class NettingOut(Out):
    id: int
    period: str
    provider_low_id: int
    provider_high_id: int
    amounts: dict[str, NettingAmount]
    created_at: datetime


class AcknowledgedOut(SettlementOut):
    netting: NettingOut | None


class IssuedOut(Out):
    home_provider_id: int
    period: str
    items: list[SettlementSummary]


class BalanceRow(Out):
    counterparty_id: int
    currency: str
    owes_minor: int = Field(description="what the provider owes the counterparty")
    owed_minor: int = Field(description="what the counterparty owes the provider")
    net_minor: int = Field(description="owed - owes: positive, the counterparty pays")


class BalanceOut(Out):
    provider_id: int
    balances: list[BalanceRow]
