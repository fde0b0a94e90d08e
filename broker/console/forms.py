"""Form input for the console: urlencoded bodies, typed values, and a message per field.

A value that does not parse (not a number, more decimals than the currency has) is refused
here with a message for its field; everything else is checked by the same domain functions the
API calls, and their `InvalidInput` is put beside the field it names (`FIELDS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qs

from broker.bounds import INT64_MAX
from broker.currency import MINOR_DIGITS, Money

MAX_BODY = 64 * 1024

# The domain's field names (what `InvalidInput.field` says) to the console's form fields.
FIELDS = {
    "services": "services",
    "starts_at": "starts_at",
    "ends_at": "ends_at",
    "volume_bytes": "volume_bytes",
    "min_rate_bps": "min_rate",
    "max_rate_bps": "max_rate",
    "max_price_minor": "max_price",
    "currency": "max_price",
    "data_cap_bytes": "data_cap",
    "source": "source",
    "sink": "sink",
    "sealed_params": "sealed_params",
    "group": "group",
    "closes_at": "closes_in",
    "reserve_price_minor": "reserve_price",
    "quantity": "quantity",
    "price_minor": "price",
    "provider_id": "provider_id",
    "score": "score",
    "comment": "comment",
    "members": "members",
}


def parse_body(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as {name: first value}."""
    text = body.decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


@dataclass
class Form:
    """What a form sent, and what was wrong with it, field by field."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return self.values.get(name, "").strip()

    def refuse(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def integer(self, name: str, *, low: int = 1, required: bool = False) -> int | None:
        raw = self.text(name).replace("_", "")
        if not raw:
            if required:
                self.refuse(name, "required")
            return None
        if not raw.isdigit() or not low <= int(raw) <= INT64_MAX:
            self.refuse(name, f"a whole number of at least {low}")
            return None
        return int(raw)

    def decimal(self, name: str, *, places: int, required: bool = False) -> Decimal | None:
        """A non-negative number with at most ``places`` decimals (exact, never a float)."""
        raw = self.text(name)
        if not raw:
            if required:
                self.refuse(name, "required")
            return None
        try:
            value = Decimal(raw)
        except InvalidOperation:
            self.refuse(name, f"not a number: {raw!r}")
            return None
        if not value.is_finite() or value < 0:
            self.refuse(name, "a number, zero or more")
            return None
        exponent = value.normalize().as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        if -exponent > places:
            self.refuse(name, f"at most {places} decimal(s)")
            return None
        return value

    def money(self, name: str, currency: str, *, required: bool = False) -> int | None:
        """An amount typed in major units ("12.50") as integer minor units of ``currency``."""
        digits = MINOR_DIGITS[currency]
        value = self.decimal(name, places=digits, required=required)
        if value is None:
            return None
        minor = int(value.scaleb(digits))
        if minor > INT64_MAX:
            self.refuse(name, "too large")
            return None
        return minor

    def rate(self, name: str) -> int | None:
        """A rate typed in Mbit/s (up to 6 decimals) as bit/s."""
        value = self.decimal(name, places=6)
        if value is None:
            return None
        bps = int(value.scaleb(6))
        if bps < 1 or bps > INT64_MAX:
            self.refuse(name, "more than 0 and at most 9.2e12 Mbit/s")
            return None
        return bps

    def members(self, name: str) -> list[dict]:
        """Recipients, one a line: ``user 12``, ``device 3``, ``phone +14155552671`` or
        ``address udp://198.51.100.7:9000``, as the API's ``members``."""
        found: list[dict] = []
        for n, line in enumerate(self.text(name).splitlines(), 1):
            kind, _, value = line.strip().partition(" ")
            value = value.strip()
            if not kind:
                continue
            if kind in ("user", "device"):
                if not value.isdigit():
                    self.refuse(name, f"line {n}: a {kind} is given by its id, e.g. '{kind} 12'")
                    return []
                found.append({"kind": kind, "value": int(value)})
            elif kind in ("phone", "address") and value:
                found.append({"kind": kind, "value": value})
            else:
                self.refuse(name, f"line {n}: start with user, device, phone or address")
                return []
        return found

    def utc_time(self, name: str) -> datetime | None:
        """A ``datetime-local`` value ("2030-01-01T12:00"), read as UTC."""
        raw = self.text(name)
        if not raw:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            self.refuse(name, "a date and time, YYYY-MM-DDTHH:MM (UTC)")
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def amount(minor: int | None, currency: str) -> str:
    """Minor units shown in major units with the currency ("12.50 EUR"); "" for None."""
    return "" if minor is None else str(Money(minor, currency))


def major(minor: int | None, currency: str) -> str:
    """Minor units as the number a form field holds ("12.50")."""
    return "" if minor is None else f"{Money(minor, currency).to_decimal():f}"
