"""The ranges every stored integer must fit: checked where values enter, before the database.

Ids, money, rates and byte counts are kept in 64-bit signed columns (PostgreSQL ``BIGINT``,
SQLite ``INTEGER``), millionths and counts in 32-bit ones. A value past them is refused with an
`InvalidInput` naming the field, never sent to a driver that would raise ``OverflowError``.
"""

from __future__ import annotations

from broker.errors import InvalidInput

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def check_int(value: object, *, field: str, low: int = 0, high: int = INT64_MAX) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; `InvalidInput` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"must be an integer, got {value!r}", field=field)
    if not low <= value <= high:
        raise InvalidInput(f"must be in {low}..{high}, got {value}", field=field)
    return value


def check_product(value: int, *, field: str, what: str) -> int:
    """``value``, a result of arithmetic on valid inputs (a price, a total), if it fits a
    64-bit column; else `InvalidInput` saying what overflowed and which input drives it."""
    if value > INT64_MAX:
        raise InvalidInput(
            f"{what} comes to {value}, past the largest amount the market keeps "
            f"({INT64_MAX}); ask for less",
            field=field,
        )
    return value
