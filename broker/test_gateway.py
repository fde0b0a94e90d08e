"""The built-in test gateway: cards that behave like a public payment provider's documented
test cards (Stripe's numbers and tokens), so every path runs without a network.

It keeps its own book in the store (`TestGatewayOperation`), written in its own transaction as
a remote gateway would: a call with a key it has seen gets the first answer and charges nothing
again, also from another process. The ``timeout`` card charges but loses the answer (the
caller sees ``unknown``); a `status` look-up by the key then finds the charge. The
``authenticationRequired`` card holds the charge ``pending`` until the cardholder answers the
issuer's challenge (3-D Secure), which `confirm` plays: ``pass`` charges, ``fail`` declines.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from broker.cards import CheckedCard
from broker.models import TestGatewayOperation
from broker.payment_gateway import (
    CANCELED,
    FAILED,
    PENDING,
    SUCCEEDED,
    UNKNOWN,
    Card,
    GatewayResult,
    PaymentGateway,
    UnknownToken,
)

# token: (number, brand, behaviour); the behaviour is a decline code, "ok" or "timeout".
TEST_CARDS: dict[str, tuple[str, str, str]] = {
    "tok_visa": ("4242424242424242", "visa", "ok"),
    "tok_mastercard": ("5555555555554444", "mastercard", "ok"),
    "tok_amex": ("378282246310005", "amex", "ok"),
    "tok_chargeDeclined": ("4000000000000002", "visa", "generic_decline"),
    "tok_chargeDeclinedInsufficientFunds": ("4000000000009995", "visa", "insufficient_funds"),
    "tok_chargeDeclinedExpiredCard": ("4000000000000069", "visa", "expired_card"),
    "tok_chargeDeclinedLostCard": ("4000000000009987", "visa", "lost_card"),
    "tok_chargeDeclinedProcessingError": ("4000000000000119", "visa", "processing_error"),
    "tok_authenticationRequired": ("4000002500003155", "visa", "authentication_required"),
    # Not one of the provider's cards (it has no time-out card): this project's own.
    "tok_timeout": ("4000000000000770", "visa", "timeout"),
}
BY_NUMBER = {number: token for token, (number, _, _) in TEST_CARDS.items()}
EXPIRY = (12, 2034)  # the test cards' expiry (any future date works at the provider)
MESSAGES = {
    "generic_decline": "the card was declined",
    "insufficient_funds": "the card has insufficient funds",
    "expired_card": "the card has expired",
    "lost_card": "the card was reported lost",
    "processing_error": "an error occurred while processing the card; try again later",
    "authentication_required": "the card needs the cardholder to authenticate the payment",
    "authentication_failed": "the cardholder failed to authenticate the payment",
}


class TestGateway(PaymentGateway):
    """``test``: Stripe's test cards, its book kept in ``store``."""

    __test__ = False  # not a pytest test class
    name = "test"

    def __init__(self, store) -> None:
        self.store = store

    # -- cards ---------------------------------------------------------------------------

    def card(self, token: str) -> Card:
        found = TEST_CARDS.get(token)
        if found is None:
            raise UnknownToken(
                f"the test gateway has no card {token!r}; its tokens are {', '.join(TEST_CARDS)}",
                field="token",
            )
        number, brand, _ = found
        return Card(token, brand, number[-4:], *EXPIRY)

    def tokenize(self, card: CheckedCard) -> Card:
        """The token of one of the test card numbers (a real number is refused, as the
        provider refuses one in test mode)."""
        token = BY_NUMBER.get(card.number)
        if token is None:
            raise UnknownToken(
                "the test gateway takes only its test card numbers (docs/billing.md, Payments)",
                field="card_number",
            )
        return Card(token, card.brand, card.last4, card.exp_month, card.exp_year)

    # -- money ---------------------------------------------------------------------------

    def authorize(self, token, amount_minor, currency, key) -> GatewayResult:
        return self._charge("authorize", token, amount_minor, currency, key)

    def purchase(self, token, amount_minor, currency, key) -> GatewayResult:
        return self._charge("purchase", token, amount_minor, currency, key)

    def capture(self, ref, amount_minor, currency, key) -> GatewayResult:
        held = self._by_ref(ref, "authorize")
        if held is None or amount_minor > held:
            return self._record(
                key,
                "capture",
                {"ref": ref, "amount": amount_minor},
                FAILED,
                None,
                "invalid_capture",
                0,
            ).answer
        return self._record(
            key, "capture", {"ref": ref, "amount": amount_minor}, SUCCEEDED, ref, None, amount_minor
        ).answer

    def refund(self, ref, amount_minor, currency, key) -> GatewayResult:
        charged = self._by_ref(ref, "purchase")
        if charged is None:
            charged = self._by_ref(ref, "capture")
        if charged is None or amount_minor > charged:
            return self._record(
                key,
                "refund",
                {"ref": ref, "amount": amount_minor},
                FAILED,
                None,
                "invalid_refund",
                0,
            ).answer
        return self._record(
            key,
            "refund",
            {"ref": ref, "amount": amount_minor},
            SUCCEEDED,
            "re_" + _digest(key),
            None,
            amount_minor,
        ).answer

    def void(self, ref, key) -> GatewayResult:
        held = self._by_ref(ref, "authorize")
        if held is None and self._answer_challenge(ref, CANCELED, "voided"):
            held = 0  # a payment still waiting for the cardholder: it can no longer succeed
        status = SUCCEEDED if held is not None else FAILED
        return self._record(
            key, "void", {"ref": ref}, status, ref, None if held else "invalid_void", 0
        ).answer

    def confirm(self, key, challenge=None) -> GatewayResult:
        """The cardholder's answer to the issuer's challenge (``pass``/``fail``; None: not
        answered yet), then the call's outcome."""
        if challenge is not None:
            with self.store.read() as s:
                ref = s.scalar(
                    select(TestGatewayOperation.ref).where(TestGatewayOperation.key == key)
                )
            if ref is not None:
                if challenge == "pass":
                    self._answer_challenge(ref, SUCCEEDED, None, "ch_" + _digest(key))
                else:
                    self._answer_challenge(ref, FAILED, "authentication_failed")
        return self.status(key)

    def _answer_challenge(self, ref, status, decline, new_ref=None) -> bool:
        """Decide a charge held for authentication, once (a conditional update: of two
        answers at the same moment, one decides)."""
        with self.store.write() as s:
            values = {"status": status, "decline_code": decline}
            if new_ref is not None:
                values["ref"] = new_ref
            if status != SUCCEEDED:
                values["amount_minor"] = 0
            done = s.execute(
                update(TestGatewayOperation)
                .where(TestGatewayOperation.ref == ref, TestGatewayOperation.status == PENDING)
                .values(**values)
            )
            return done.rowcount == 1

    def status(self, key) -> GatewayResult:
        with self.store.read() as s:
            op = s.scalar(select(TestGatewayOperation).where(TestGatewayOperation.key == key))
            return _result(op) if op is not None else GatewayResult(CANCELED)

    # -- the book ------------------------------------------------------------------------

    def _charge(self, operation, token, amount_minor, currency, key) -> GatewayResult:
        found = TEST_CARDS.get(token)
        request = {"token": token, "amount": amount_minor, "currency": currency}
        if found is None:
            return self._record(key, operation, request, FAILED, None, "invalid_token", 0).answer
        behaviour = found[2]
        if behaviour == "authentication_required":  # 3-D Secure: held until the cardholder answers
            recorded = self._record(
                key, operation, request, PENDING, "pi_" + _digest(key), behaviour, amount_minor
            )
            return recorded.answer
        if behaviour in ("ok", "timeout"):
            result = self._record(
                key, operation, request, SUCCEEDED, "ch_" + _digest(key), None, amount_minor
            )
            if behaviour == "timeout" and result.first:
                return GatewayResult(UNKNOWN, message="the gateway did not answer in time")
            return result.answer
        return self._record(key, operation, request, FAILED, None, behaviour, 0).answer

    def _record(self, key, operation, request, status, ref, decline, amount):
        """Keep the call under its key; a key seen before gets the first answer."""
        try:
            with self.store.write() as s:
                existing = s.scalar(
                    select(TestGatewayOperation).where(TestGatewayOperation.key == key)
                )
                if existing is not None:
                    return _Recorded(_result(existing), False)
                s.add(
                    TestGatewayOperation(
                        key=key,
                        operation=operation,
                        request=request,
                        status=status,
                        ref=ref,
                        decline_code=decline,
                        amount_minor=amount,
                    )
                )
        except IntegrityError:  # the same key at the same moment: the first one stands
            with self.store.read() as s:
                existing = s.scalar(
                    select(TestGatewayOperation).where(TestGatewayOperation.key == key)
                )
                return _Recorded(_result(existing), False)
        return _Recorded(
            GatewayResult(
                status,
                ref,
                decline,
                MESSAGES.get(decline or ""),
                amount,
                "authenticate" if status == PENDING else None,
            ),
            True,
        )

    def _by_ref(self, ref, operation) -> int | None:
        """The amount of the successful ``operation`` that made ``ref`` (None: none)."""
        with self.store.read() as s:
            return s.scalar(
                select(TestGatewayOperation.amount_minor).where(
                    TestGatewayOperation.ref == ref,
                    TestGatewayOperation.operation == operation,
                    TestGatewayOperation.status == SUCCEEDED,
                )
            )

    def charges(self) -> int:
        """How many successful charges the gateway made (for tests)."""
        with self.store.read() as s:
            return len(
                list(
                    s.scalars(
                        select(TestGatewayOperation.id).where(
                            TestGatewayOperation.operation == "purchase",
                            TestGatewayOperation.status == SUCCEEDED,
                        )
                    )
                )
            )


class _Recorded:
    """A call's answer, and whether this call was the key's first."""

    def __init__(self, answer: GatewayResult, first: bool) -> None:
        self.answer, self.first = answer, first


def _result(op: TestGatewayOperation) -> GatewayResult:
    return GatewayResult(
        op.status,
        op.ref,
        op.decline_code,
        MESSAGES.get(op.decline_code or ""),
        op.amount_minor,
        "authenticate" if op.status == PENDING else None,
    )


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]
