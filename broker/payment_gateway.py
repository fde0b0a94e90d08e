"""The payment gateway interface, its results, and the gateways this installation has.

A gateway charges cards it knows by token. Every call carries an idempotency key: the gateway
answers a key it has seen with the first answer and charges nothing again (as real gateways
do), so a caller that timed out asks `status` with the same key, never charges anew.

Gateways are found through the entry-point group ``pktx.payment_gateways``
(``name = "module:factory"``, the factory called with the `Store`), besides the built-in
``test`` gateway (`broker.test_gateway`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points

from broker.errors import InvalidInput

ENTRY_POINT_GROUP = "pktx.payment_gateways"
BUILTINS = {"test": "broker.test_gateway:TestGateway"}

SUCCEEDED, FAILED, PENDING, CANCELED, UNKNOWN = (
    "succeeded",
    "failed",
    "pending",
    "canceled",
    "unknown",
)
RESULTS = (SUCCEEDED, FAILED, PENDING, CANCELED, UNKNOWN)


@dataclass(frozen=True)
class GatewayResult:
    """What a gateway answered: ``status`` one of `RESULTS`; ``ref`` the gateway's id of the
    charge (or refund); ``decline_code``/``message`` why it failed. ``canceled``: the call
    never reached the gateway (nothing happened); ``unknown``: it may have (a time-out)."""

    status: str
    ref: str | None = None
    decline_code: str | None = None
    message: str | None = None
    amount_minor: int = 0
    # With a pending answer: what must happen before the gateway decides (``authenticate``:
    # the cardholder authenticates with its issuer, 3-D Secure; then `confirm`).
    next_action: str | None = None


@dataclass(frozen=True)
class Card:
    """A card as kept: the gateway's token, brand, last four digits, expiry."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class UnknownToken(InvalidInput):
    """The gateway does not know the token."""


class PaymentGateway(ABC):
    """A card payment gateway; every money-moving call takes an idempotency ``key``."""

    name: str

    @abstractmethod
    def card(self, token: str) -> Card:
        """What the gateway knows of a token's card; `UnknownToken` when nothing."""

    @abstractmethod
    def authorize(self, token: str, amount_minor: int, currency: str, key: str) -> GatewayResult:
        """Hold ``amount_minor`` on the card (captured or voided later)."""

    @abstractmethod
    def capture(self, ref: str, amount_minor: int, currency: str, key: str) -> GatewayResult:
        """Take (part of) an authorization's amount."""

    @abstractmethod
    def purchase(self, token: str, amount_minor: int, currency: str, key: str) -> GatewayResult:
        """Authorize and capture at once."""

    @abstractmethod
    def refund(self, ref: str, amount_minor: int, currency: str, key: str) -> GatewayResult:
        """Give back (part of) a captured charge."""

    @abstractmethod
    def void(self, ref: str, key: str) -> GatewayResult:
        """Release an authorization that was not captured."""

    @abstractmethod
    def status(self, key: str) -> GatewayResult:
        """The outcome of the call made with ``key``: `CANCELED` when the gateway never
        received it."""

    def confirm(self, key: str, challenge: str | None = None) -> GatewayResult:
        """The cardholder is back from authenticating the payment made with ``key``: its
        outcome. A real gateway took the answer on its own page (``challenge`` is for test
        gateways that play the issuer); by default this asks `status`."""
        return self.status(key)


def registry() -> dict[str, str]:
    found = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def gateway(name: str, store) -> PaymentGateway:
    """The gateway ``name`` (built-in or registered), made for ``store``."""
    target = registry().get(name)
    if target is None:
        raise InvalidInput(
            f"unknown payment gateway {name!r}; available: {', '.join(sorted(registry()))}",
            field="gateway",
        )
    module, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    return factory(store)
