"""A provider's tariff for a service chain: versioned, validated, and kept as plain JSON.

A tariff prices usage on several dimensions at once; each dimension has a rate unit, whole
increments that usage is rounded up to, tiers (graduated or volume) and a minimum and maximum
charge. Prices are `Decimal` and may have more decimals than the currency; fees and per-line
bounds are amounts, so they must be whole minor units. `broker.rating` rates usage under one;
docs/billing.md states every rule.

Every check raises `InvalidInput` naming the field by its dotted path in the JSON form
(``dimensions.bytes.tiers[1].up_to``), whether the tariff came from JSON or was built in code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from broker.bounds import INT64_MAX, check_int
from broker.catalog import parse_chain
from broker.clock import as_utc
from broker.currency import MINOR_DIGITS, check_currency
from broker.errors import InvalidInput

# What the engine meters, in base units: bytes delivered, packets processed, seconds of a block,
# and a block's reservation in bit/s x seconds (one Mbit/s for one hour is `MBPS_HOUR`).
DIMENSIONS: tuple[str, ...] = ("bytes", "packets", "seconds", "reserved_bps_seconds")

# Rate units a tariff commonly prices in, in base units of their dimension.
MB = 10**6
GB = 10**9
MINUTE = 60
HOUR = 3600
MBPS_HOUR = 10**6 * 3600

GRADUATED, VOLUME = "graduated", "volume"
TIERINGS = (GRADUATED, VOLUME)
ROUNDINGS = ("up", "down", "half-up", "half-even")

# A price finer than this many decimals of a major unit is refused: nobody means it, and it
# keeps the exact arithmetic's denominators small.
MAX_PRICE_DECIMALS = 18


@contextlib.contextmanager
def under(path: str) -> Iterator[None]:
    """Prefix the field of an `InvalidInput` raised inside with ``path`` (``tiers[1]``...)."""
    try:
        yield
    except InvalidInput as exc:
        name = f"{path}.{exc.field}" if exc.field else path
        raise InvalidInput(exc.message, where=exc.where, field=name) from None


def parse_decimal(value: object, *, field: str) -> Decimal:
    """A non-negative, finite decimal from a string, an int or a `Decimal`; never a float."""
    if isinstance(value, float):
        raise InvalidInput(
            f"give a decimal string such as '0.10', not the float {value!r} (a float is not exact)",
            field=field,
        )
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidInput(f"must be a decimal string such as '0.10', got {value!r}", field=field)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidInput(f"{value!r} is not a decimal number", field=field) from None
    if not number.is_finite():
        raise InvalidInput(f"must be a finite number, got {value!r}", field=field)
    if number < 0:
        raise InvalidInput(f"must not be negative, got {value}", field=field)
    exponent = number.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # a finite number's is (a NaN's or infinity's is a letter)
    if exponent < -MAX_PRICE_DECIMALS:
        raise InvalidInput(f"has more than {MAX_PRICE_DECIMALS} decimals: {value}", field=field)
    if number > INT64_MAX:
        raise InvalidInput(f"must be at most {INT64_MAX}, got {value}", field=field)
    return Decimal(0) if number == 0 else number  # -0 and 0E-99 are plain 0


def format_decimal(value: Decimal) -> str:
    """The JSON form of a price or an amount: positional, never ``1E+2``."""
    return format(value, "f")


def _fields(data: object, *, required: Sequence[str], optional: Sequence[str]) -> dict:
    """``data`` as a dict with the keys allowed; a missing or unknown key names itself."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"must be a JSON object, got {type(data).__name__}")
    for key in required:
        if key not in data:
            raise InvalidInput("is required", field=key)
    for key in data:
        if key not in required and key not in optional:
            raise InvalidInput(
                f"unknown field; known: {', '.join([*required, *optional])}", field=str(key)
            )
    return dict(data)


@dataclass(frozen=True)
class Tier:
    """The price per rate unit of the charged units up to ``up_to`` (inclusive); the last tier's
    ``up_to`` is None: it has no end. ``up_to`` counts base units (bytes, seconds ...)."""

    up_to: int | None
    price: Decimal

    def __post_init__(self) -> None:
        if self.up_to is not None:
            check_int(self.up_to, field="up_to", low=1)
        object.__setattr__(self, "price", parse_decimal(self.price, field="price"))

    @classmethod
    def from_json(cls, data: object) -> Tier:
        fields = _fields(data, required=("price",), optional=("up_to",))
        return cls(up_to=fields.get("up_to"), price=fields["price"])

    def to_json(self) -> dict:
        return {"up_to": self.up_to, "price": format_decimal(self.price)}


@dataclass(frozen=True)
class DimensionPrice:
    """How one dimension is charged: usage rounded up to ``first_increment`` and then whole
    ``increment`` s, priced per ``rate_unit`` base units by the tiers, kept between ``minimum``
    and ``maximum`` (None: no maximum) whenever there is usage."""

    name: str
    tiers: tuple[Tier, ...]
    rate_unit: int = 1
    increment: int = 1
    first_increment: int | None = None  # None: the same as `increment`
    tiering: str = GRADUATED
    minimum: Decimal = Decimal(0)
    maximum: Decimal | None = None

    def __post_init__(self) -> None:
        if self.name not in DIMENSIONS:
            raise InvalidInput(
                f"unknown dimension {self.name!r}; known: {', '.join(DIMENSIONS)}", field="name"
            )
        check_int(self.rate_unit, field="rate_unit", low=1)
        check_int(self.increment, field="increment", low=1)
        if self.first_increment is None:
            object.__setattr__(self, "first_increment", self.increment)
        check_int(self.first_increment, field="first_increment", low=1)
        if self.tiering not in TIERINGS:
            raise InvalidInput(
                f"must be one of {', '.join(TIERINGS)}, got {self.tiering!r}", field="tiering"
            )
        object.__setattr__(self, "tiers", _check_tiers(self.tiers))
        object.__setattr__(self, "minimum", parse_decimal(self.minimum, field="minimum"))
        if self.maximum is not None:
            object.__setattr__(self, "maximum", parse_decimal(self.maximum, field="maximum"))
            if self.maximum < self.minimum:
                raise InvalidInput(
                    f"{self.maximum} is below the minimum {self.minimum}", field="maximum"
                )

    @property
    def bounds(self) -> tuple[int, ...]:
        """The finite ``up_to`` of every tier but the last (which has none)."""
        # All of them are finite: only the last tier is open-ended (checked on construction).
        return tuple(t.up_to for t in self.tiers[:-1] if t.up_to is not None)

    @classmethod
    def from_json(cls, name: str, data: object) -> DimensionPrice:
        fields = _fields(
            data,
            required=("tiers",),
            optional=("rate_unit", "increment", "first_increment", "tiering", "minimum", "maximum"),
        )
        tiers = fields.pop("tiers")
        if not isinstance(tiers, list | tuple):
            raise InvalidInput("must be a list of tiers", field="tiers")
        parsed = []
        for i, tier in enumerate(tiers):
            with under(f"tiers[{i}]"):
                parsed.append(Tier.from_json(tier))
        return cls(name=name, tiers=tuple(parsed), **fields)

    def to_json(self) -> dict:
        return {
            "rate_unit": self.rate_unit,
            "increment": self.increment,
            "first_increment": self.first_increment,
            "tiering": self.tiering,
            "tiers": [t.to_json() for t in self.tiers],
            "minimum": format_decimal(self.minimum),
            "maximum": None if self.maximum is None else format_decimal(self.maximum),
        }


def _check_tiers(tiers: object) -> tuple[Tier, ...]:
    if not isinstance(tiers, list | tuple) or not tiers:
        raise InvalidInput(
            "give at least one tier, e.g. [{'up_to': null, 'price': '0.10'}]", field="tiers"
        )
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Tier):
            raise InvalidInput(f"must be a Tier, got {tier!r}", field=f"tiers[{i}]")
    for i, tier in enumerate(tiers[:-1]):
        if tier.up_to is None:
            raise InvalidInput(
                "only the last tier may be open-ended (up_to null)", field=f"tiers[{i}].up_to"
            )
        if i and tier.up_to <= tiers[i - 1].up_to:
            raise InvalidInput(
                f"{tier.up_to} is not above the previous tier's up_to "
                f"{tiers[i - 1].up_to}: the tiers would overlap",
                field=f"tiers[{i}].up_to",
            )
    last = len(tiers) - 1
    if tiers[last].up_to is not None:
        raise InvalidInput(
            "the last tier must be open-ended (up_to null), so that every usage has a price",
            field=f"tiers[{last}].up_to",
        )
    return tuple(tiers)


@dataclass(frozen=True)
class Tariff:
    """One version of a provider's tariff for a service chain (one service: a chain of one).

    The version is active from ``active_from`` until the next version's ``active_from``; usage is
    rated by the version active when it happened (`active_version`).
    """

    provider_id: int
    services: tuple[str, ...]
    version: int
    active_from: datetime
    currency: str
    dimensions: tuple[DimensionPrice, ...] = ()
    connect_fee: Decimal = Decimal(0)
    rounding: str = "half-up"
    minor_digits: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.provider_id, field="provider_id", low=1)
        object.__setattr__(self, "services", parse_chain(self.services))
        check_int(self.version, field="version", low=1)
        object.__setattr__(self, "active_from", as_utc(self.active_from, field="active_from"))
        check_currency(self.currency)
        digits = MINOR_DIGITS[self.currency]
        object.__setattr__(self, "minor_digits", digits)
        if self.rounding not in ROUNDINGS:
            raise InvalidInput(
                f"must be one of {', '.join(ROUNDINGS)}, got {self.rounding!r}", field="rounding"
            )
        fee = parse_decimal(self.connect_fee, field="connect_fee")
        object.__setattr__(self, "connect_fee", _amount(fee, digits, field="connect_fee"))
        object.__setattr__(self, "dimensions", self._check_dimensions(digits))

    def _check_dimensions(self, digits: int) -> tuple[DimensionPrice, ...]:
        dims = self.dimensions
        if not isinstance(dims, list | tuple):
            raise InvalidInput("must be a list of DimensionPrice", field="dimensions")
        seen: set[str] = set()
        for dim in dims:
            if not isinstance(dim, DimensionPrice):
                raise InvalidInput(f"must be a DimensionPrice, got {dim!r}", field="dimensions")
            if dim.name in seen:
                raise InvalidInput("is priced twice", field=f"dimensions.{dim.name}")
            seen.add(dim.name)
            with under(f"dimensions.{dim.name}"):
                _amount(dim.minimum, digits, field="minimum")
                if dim.maximum is not None:
                    _amount(dim.maximum, digits, field="maximum")
                for i, tier in enumerate(dim.tiers):
                    _fits(tier.price, digits, field=f"tiers[{i}].price")
        return tuple(sorted(dims, key=lambda d: DIMENSIONS.index(d.name)))

    @property
    def key(self) -> tuple[int, tuple[str, ...]]:
        """What the versions of one tariff share: the provider and the service chain."""
        return self.provider_id, self.services

    def dimension(self, name: str) -> DimensionPrice | None:
        return next((d for d in self.dimensions if d.name == name), None)

    @classmethod
    def from_json(cls, data: object) -> Tariff:
        """Parse the JSON form (`to_json`'s); errors name the field by its dotted path."""
        fields = _fields(
            data,
            required=("provider_id", "services", "version", "active_from", "currency"),
            optional=("dimensions", "connect_fee", "rounding"),
        )
        fields["active_from"] = _parse_time(fields["active_from"])
        dims = fields.pop("dimensions", {})
        if not isinstance(dims, Mapping):
            raise InvalidInput("must be an object of dimension name -> price", field="dimensions")
        parsed = []
        for name, dim in dims.items():
            if name not in DIMENSIONS:
                raise InvalidInput(
                    f"unknown dimension; known: {', '.join(DIMENSIONS)}", field=f"dimensions.{name}"
                )
            with under(f"dimensions.{name}"):
                parsed.append(DimensionPrice.from_json(name, dim))
        return cls(dimensions=tuple(parsed), **fields)

    def to_json(self) -> dict:
        """Plain JSON types only; prices and amounts as decimal strings."""
        return {
            "provider_id": self.provider_id,
            "services": list(self.services),
            "version": self.version,
            "active_from": self.active_from.isoformat().replace("+00:00", "Z"),
            "currency": self.currency,
            "connect_fee": format_decimal(self.connect_fee),
            "rounding": self.rounding,
            "dimensions": {d.name: d.to_json() for d in self.dimensions},
        }


def _parse_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"must be an ISO 8601 time, got {value!r}", field="active_from")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{value!r} is not an ISO 8601 time, e.g. '2026-01-01T00:00:00Z'", field="active_from"
        ) from None


def _fits(value: Decimal, digits: int, *, field: str) -> None:
    if value.scaleb(digits) > INT64_MAX:
        raise InvalidInput(
            f"{value} is past the largest amount the market keeps ({INT64_MAX} minor units)",
            field=field,
        )


def _amount(value: Decimal, digits: int, *, field: str) -> Decimal:
    """An amount charged as it stands: whole minor units of the currency, within 64 bits."""
    _fits(value, digits, field=field)
    if value != value.quantize(Decimal(1).scaleb(-digits)):
        raise InvalidInput(
            f"{value} is not a whole number of minor units (the currency has {digits} decimals)",
            field=field,
        )
    return value


def active_version(versions: Iterable[Tariff], at: datetime) -> Tariff:
    """The version active at ``at``: the latest ``active_from`` not after it.

    All versions must be of one tariff (one provider and chain) and no two may start at the
    same time (which of them would apply is not for this function to guess).
    """
    at = as_utc(at, field="at")
    versions = sorted(versions, key=lambda v: v.active_from)
    if not versions:
        raise InvalidInput("no tariff versions to choose from", field="versions")
    for i, version in enumerate(versions):
        if version.key != versions[0].key:
            raise InvalidInput(
                f"version {version.version} prices {version.key}, not "
                f"{versions[0].key}: one tariff's versions only",
                field="versions",
            )
        if i and version.active_from == versions[i - 1].active_from:
            raise InvalidInput(
                f"versions {versions[i - 1].version} and {version.version} both "
                f"start at {version.active_from.isoformat()}",
                field="versions",
            )
    chosen = None
    for version in versions:
        if version.active_from > at:
            break
        chosen = version
    if chosen is None:
        raise InvalidInput(
            f"no tariff version is active at {at.isoformat()}; the first starts "
            f"at {versions[0].active_from.isoformat()}",
            field="at",
        )
    return chosen
