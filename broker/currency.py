"""Money as integer minor units with an ISO 4217 currency; never a float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from broker.bounds import INT64_MAX
from broker.errors import InvalidInput

# Active ISO 4217 codes (funds codes included, precious metals and test codes left out), by the
# number of digits after the decimal point of their minor unit.
_BY_EXPONENT = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
        "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
        "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD "
        "KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD "
        "NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
        "SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS "
        "VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
    ),
}

MINOR_DIGITS: dict[str, int] = {
    code: exp for exp, codes in _BY_EXPONENT.items() for code in codes.split()
}


def check_currency(code: str, *, field: str = "currency") -> str:
    """Return ``code`` if it is an active ISO 4217 code, else raise `InvalidInput`."""
    if not isinstance(code, str) or code not in MINOR_DIGITS:
        raise InvalidInput(f"{code!r} is not an ISO 4217 currency code (e.g. 'EUR', 'USD')",
                           field=field)
    return code


def check_amount(amount: object, *, field: str, allow_zero: bool = True) -> int:
    """An amount of minor units: an int (not a bool, not a float), not negative."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInput(f"must be an integer number of minor units, got {amount!r}",
                           field=field)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidInput(f"must be {'at least 0' if allow_zero else 'positive'}, got {amount}",
                           field=field)
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
            raise InvalidInput(f"cannot combine {self.currency} with {other.currency}",
                               field="currency")

    def to_decimal(self) -> Decimal:
        """The amount in major units, exactly (``Money(1999, 'EUR')`` -> ``Decimal('19.99')``)."""
        return Decimal(self.minor).scaleb(-MINOR_DIGITS[self.currency])

    def __str__(self) -> str:
        return f"{self.to_decimal():f} {self.currency}"
