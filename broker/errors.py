"""The broker's exception hierarchy: every error says what was wrong and where.

Each class carries ``http_status``, the status the HTTP API answers with; the domain code never
imports a web type, it only raises these. ``where`` names the thing the error is about, most
specific last (``auction 12``, ``bid of provider 3``, ``field price_minor``) so that a person
reading the message knows what to change.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every error the broker raises on purpose."""

    http_status = 400
    code = "broker_error"

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.where = where
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.where, f"field {self.field}" if self.field else None) if p]
        return f"{', '.join(parts)}: {self.message}" if parts else self.message

    def as_dict(self) -> dict:
        """The JSON body the API sends for this error."""
        body = {"error": self.code, "message": str(self)}
        if self.where:
            body["where"] = self.where
        if self.field:
            body["field"] = self.field
        return body


class NotAuthenticated(BrokerError):
    """No API key, or one that is unknown or revoked."""

    http_status = 401
    code = "not_authenticated"


class NotYours(BrokerError):
    """The caller is known but the thing belongs to someone else (or needs another role)."""

    http_status = 403
    code = "forbidden"


class CsrfRefused(BrokerError):
    """A console form came without its session's CSRF token (or the sign-in page's)."""

    http_status = 403
    code = "csrf"


class NotFound(BrokerError):
    """The thing named does not exist."""

    http_status = 404
    code = "not_found"

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"no {kind} with id {ident}", where=f"{kind} {ident}")
        self.kind = kind
        self.ident = ident


class InvalidInput(BrokerError, ValueError):
    """A value is malformed or out of range; ``field`` names it."""

    http_status = 422
    code = "invalid_input"


class Conflict(BrokerError):
    """The request is well formed but clashes with the state of the market."""

    http_status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """A name or number that must be unique is taken."""

    code = "already_exists"


class LateBid(Conflict):
    """A bid (or bid revision) arrived at or after the auction's close."""

    code = "late_bid"


class AuctionNotOpen(Conflict):
    """The auction is closed, failed or cancelled, so it cannot take this action."""

    code = "auction_not_open"


class AuctionStillOpen(Conflict):
    """The auction cannot be closed (or its bids read) before its closing time."""

    code = "auction_still_open"


class NotEligible(Conflict):
    """The provider cannot take part: it lacks a service, capacity, currency or reputation."""

    code = "not_eligible"


class NegotiationClosed(Conflict):
    """The negotiation has ended (agreed, rejected, expired or failed)."""

    code = "negotiation_closed"


class NotYourTurn(Conflict):
    """Alternating offers: the other side moves next."""

    code = "not_your_turn"


class DeadlineExpired(Conflict):
    """The negotiation's deadline (or round limit) has passed."""

    code = "deadline_expired"


class GroupUnderfunded(Conflict):
    """The pledges of a group cannot cover the price; nobody is charged."""

    code = "group_underfunded"


class IdempotencyKeyReused(Conflict):
    """The idempotency key was used before for a different operation or different input."""

    code = "idempotency_key_reused"


class AlreadyBrokering(Conflict):
    """The request already has an open auction or negotiation: one at a time."""

    code = "already_brokering"


class WrongState(Conflict):
    """The thing is not in a state that allows this action (e.g. rating an award twice-removed)."""

    code = "wrong_state"


class ReportMismatch(Conflict):
    """A usage report's sequence was taken in before with other numbers."""

    code = "report_mismatch"


class LeaseLost(Conflict):
    """A delivery job's fencing token is not the current one (another claim took the job, or
    it was handed back): the daemon holding the stale token must stop delivering it."""

    code = "lease_lost"


ERRORS = (
    NotAuthenticated,
    NotYours,
    NotFound,
    InvalidInput,
    Conflict,
    AlreadyExists,
    LateBid,
    AuctionNotOpen,
    AuctionStillOpen,
    NotEligible,
    NegotiationClosed,
    NotYourTurn,
    DeadlineExpired,
    GroupUnderfunded,
    IdempotencyKeyReused,
    AlreadyBrokering,
    WrongState,
    ReportMismatch,
    LeaseLost,
)
