"""Inputs and answers of the payment routes: cards on file, payments of statements, refunds
(docs/billing.md, "Payments"). A card number comes in, is checked and tokenized, and is never
answered back or kept."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StrictInt

from broker.api.responses import Out
from broker.api.schemas import Body, Currency
from broker.bounds import INT64_MAX

PositiveMinor = Annotated[
    StrictInt, Field(ge=1, le=INT64_MAX, description="minor units, above zero")
]


class PaymentMethodIn(Body):
    gateway: str = Field(
        "test", min_length=1, max_length=40, description="the payment gateway that keeps the card"
    )
    token: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="the gateway's token of the card (test gateway: "
        "tok_visa, tok_chargeDeclined, ...)",
    )
    card_number: str | None = Field(
        None,
        min_length=1,
        max_length=40,
        description="a card number (test gateway: its test "
        "cards only); checked, tokenized, not kept",
    )
    exp_month: int | None = Field(None, description="1..12, with card_number")
    exp_year: int | None = Field(None, description="four digits, with card_number")
    make_default: bool = Field(
        False,
        description="charge this card from now on (a user's first card is its default anyway)",
    )


class PaymentMethodOut(Out):
    id: int
    user_id: int
    gateway: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool
    created_at: datetime


class PaymentMethodList(Out):
    items: list[PaymentMethodOut]


class PayIn(Body):
    method_id: int | None = Field(
        None, ge=1, le=INT64_MAX, description="one of the user's cards (default: its default card)"
    )
    amount_minor: PositiveMinor | None = Field(
        None, description="part of what is left to pay (default: all of it)"
    )
    currency: Currency | None = Field(
        None, description="which of the statement's currencies (needed when it has several)"
    )


class ConfirmIn(Body):
    challenge: Literal["pass", "fail"] | None = Field(
        None,
        description="the test gateway only: the cardholder's answer to its issuer's "
        "challenge; other gateways take it on their own page",
    )


class PaymentOut(Out):
    id: int
    statement_id: int
    user_id: int
    home_provider_id: int
    method_id: int
    gateway: str
    attempt: int
    trigger: str
    status: str = Field(description="pending, succeeded, failed, canceled or unknown")
    amount_minor: int
    currency: str
    minor_digits: int
    refunded_minor: int
    decline_code: str | None
    decline_message: str | None
    next_action: str | None = Field(
        description="authenticate: the card's issuer asks the cardholder (3-D Secure); then confirm"
    )
    next_retry_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CurrencyDue(Out):
    currency: str
    total_minor: int
    paid_gross_minor: int
    refunded_minor: int
    due_minor: int


class PaymentStateOut(Out):
    statement_id: int
    currency: str | None = Field(description="a one-currency statement's (null: several)")
    total_minor: int | None
    paid_minor: int
    paid_gross_minor: int
    refunded_minor: int
    due_minor: int | None = Field(
        description="a one-currency statement's (null: several, see currencies)"
    )
    currencies: list[CurrencyDue]
    due_at: datetime | None
    paid_at: datetime | None
    state: str = Field(description="paid, due, overdue or nothing_due")


class RefundIn(Body):
    amount_minor: PositiveMinor
    reason: str = Field("", max_length=500)


class RefundOut(Out):
    id: int
    payment_id: int
    statement_id: int
    status: str
    amount_minor: int
    currency: str
    reason: str
    decline_code: str | None
    created_at: datetime
