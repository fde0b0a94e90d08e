"""Money as integer minor units with an ISO 4217 currency; never a float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import iso4217 as _iso4217

from broker.bounds import INT64_MAX
from broker.errors import InvalidInput

# The active ISO 4217 codes that have a minor unit (precious metals, SDRs, bond-market units and
# the test codes have none), by their number of digits after the decimal point, as published by
# the ISO 4217 maintenance agency and packaged by `iso4217` (its version is the list's date).
# Not Babel's CLDR data: CLDR's "digits" are how amounts are usually shown (IQD 0, HUF 0, IDR 0),
# ISO's minor unit is what an amount in minor units counts (IQD fils: 3).
MINOR_DIGITS: dict[str, int] = {
    c.code: c.exponent for c in _iso4217.Currency if c.exponent is not None
}
CURRENCY_LIST_VERSION: str = _iso4217.__version__


def check_currency(code: str, *, field: str = "currency") -> str:
    """Return ``code`` if it is an active ISO 4217 code, else raise `InvalidInput`."""
    if not isinstance(code, str) or code not in MINOR_DIGITS:
        raise InvalidInput(
            f"{code!r} is not an ISO 4217 currency code (e.g. 'EUR', 'USD')", field=field
        )
    return code


def check_amount(amount: object, *, field: str, allow_zero: bool = True) -> int:
    """An amount of minor units: an int (not a bool, not a float), not negative."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInput(f"must be an integer number of minor units, got {amount!r}", field=field)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidInput(
            f"must be {'at least 0' if allow_zero else 'positive'}, got {amount}", field=field
        )
    if amount > INT64_MAX:
        raise InvalidInput(f"must be at most {INT64_MAX} minor units, got {amount}", field=field)
    return amount


@dataclass(frozen=True, order=True)
class Money:
    """An amount in minor units of one currency (cents for EUR, yen for JPY, fils for BHD)."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise InvalidInput(f"minor units must be an int, got {self.minor!r}", field="minor")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise InvalidInput(
                f"cannot combine {self.currency} with {other.currency}", field="currency"
            )

    def to_decimal(self) -> Decimal:
        """The amount in major units, exactly (``Money(1999, 'EUR')`` -> ``Decimal('19.99')``)."""
        return Decimal(self.minor).scaleb(-MINOR_DIGITS[self.currency])

    def __str__(self) -> str:
        return f"{self.to_decimal():f} {self.currency}"
