"""Card numbers checked before they reach a gateway: digits only, the brand's length, the
Luhn check digit (python-stdnum), an expiry not past. Nothing here keeps or logs a number;
errors name the field, never the digits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from stdnum import luhn
from stdnum.exceptions import ValidationError

from broker.errors import InvalidInput

# Brand by the number's first digits (issuer identification), and the lengths it issues.
BRANDS: tuple[tuple[str, tuple[tuple[int, int], ...], tuple[int, ...]], ...] = (
    ("amex", ((34, 34), (37, 37)), (15,)),
    ("visa", ((4, 4),), (13, 16, 19)),
    ("mastercard", ((51, 55), (2221, 2720)), (16,)),
    ("discover", ((6011, 6011), (644, 649), (65, 65)), (16, 17, 18, 19)),
    ("jcb", ((3528, 3589),), (16, 17, 18, 19)),
    ("diners", ((300, 305), (36, 36), (38, 39)), (14, 15, 16, 17, 18, 19)),
    ("unionpay", ((62, 62),), (16, 17, 18, 19)),
)


@dataclass(frozen=True)
class CheckedCard:
    number: str = ""
    brand: str = ""
    exp_month: int = 0
    exp_year: int = 0

    def __repr__(self) -> str:  # never the number, even in a traceback
        return f"CheckedCard({self.brand} ...{self.number[-4:]}, {self.exp_month}/{self.exp_year})"

    @property
    def last4(self) -> str:
        return self.number[-4:]


def brand_of(number: str) -> str | None:
    for brand, ranges, _ in BRANDS:
        for low, high in ranges:
            width = len(str(low))
            if low <= int(number[:width]) <= high:
                return brand
    return None


def check_number(number: object) -> tuple[str, str]:
    """The number without spaces or dashes, and its brand; `InvalidInput` naming
    ``card_number`` when it is not a card number."""
    if not isinstance(number, str):
        raise InvalidInput("a card number is a string of digits", field="card_number")
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not digits.isascii():
        raise InvalidInput(
            "a card number is digits only (spaces and dashes allowed)", field="card_number"
        )
    if not 12 <= len(digits) <= 19:
        raise InvalidInput(
            f"a card number has 12..19 digits, this one {len(digits)}", field="card_number"
        )
    brand = brand_of(digits)
    if brand is None:
        raise InvalidInput(
            "the card number's first digits are of no card brand taken here "
            f"({', '.join(b for b, _, _ in BRANDS)})",
            field="card_number",
        )
    lengths = dict((b, n) for b, _, n in BRANDS)[brand]
    if len(digits) not in lengths:
        raise InvalidInput(
            f"a {brand} card number has {' or '.join(map(str, lengths))} "
            f"digits, this one {len(digits)}",
            field="card_number",
        )
    try:
        luhn.validate(digits)
    except ValidationError:
        raise InvalidInput(
            "the card number fails its check digit (Luhn): a digit is wrong", field="card_number"
        ) from None
    return digits, brand


def check_expiry(exp_month: object, exp_year: object, now: datetime) -> None:
    """A card is good through the last day of its expiry month."""
    if isinstance(exp_month, bool) or not isinstance(exp_month, int) or not 1 <= exp_month <= 12:
        raise InvalidInput("the expiry month is 1..12", field="exp_month")
    if isinstance(exp_year, bool) or not isinstance(exp_year, int) or not 2000 <= exp_year <= 2200:
        raise InvalidInput("the expiry year has four digits", field="exp_year")
    if (exp_year, exp_month) < (now.year, now.month):
        raise InvalidInput(
            f"the card expired at the end of {exp_month:02d}/{exp_year}", field="exp_year"
        )


def check_card(number: object, exp_month: object, exp_year: object, now: datetime) -> CheckedCard:
    digits, brand = check_number(number)
    check_expiry(exp_month, exp_year, now)
    assert isinstance(exp_month, int) and isinstance(exp_year, int)  # check_expiry says so
    return CheckedCard(digits, brand, exp_month, exp_year)
