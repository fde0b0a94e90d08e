"""List prices from a provider's price policy, and the time-dependent concession curves.

Money is computed in integers. A provider's quotes and asks round up (it never sells below its
own curve); a buyer's offers round down (it never pays above its own curve).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

from broker.bounds import check_product
from broker.models import PricePolicy, ServiceRequest

_US_PER_HOUR = 3_600_000_000
_BITS_PER_MBIT = 1_000_000
_BYTES_PER_GB = 1_000_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def required_rate_bps(request: ServiceRequest) -> int:
    """The rate a provider must set aside: the maximum if given, else the minimum, else 0."""
    return request.max_rate_bps or request.min_rate_bps or 0


def list_price(policy: PricePolicy, request: ServiceRequest) -> int:
    """The provider's undiscounted price for the request, in minor units.

    A block of time costs ``per_mbps_hour`` for every Mbit/s of the required rate for every
    hour; a volume costs ``per_gb`` for every 10**9 bytes (both pro rata, rounded up). A price
    past what the market keeps (64 bits of minor units) is an `InvalidInput` naming the
    request's field that drives it.
    """
    if request.is_block:
        assert request.starts_at is not None and request.ends_at is not None  # a block's ends
        span = request.ends_at - request.starts_at
        micros = (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
        # A bandwidth grant (docs/billing.md, "Bandwidth") is not charged for: the price is
        # that of the max rate the user asked for.
        rate = getattr(request, "base_max_rate_bps", None) or required_rate_bps(request)
        numerator = micros * rate * policy.per_mbps_hour_minor
        price = _ceil_div(numerator, _US_PER_HOUR * _BITS_PER_MBIT)
        field = "max_rate_bps" if request.max_rate_bps else "min_rate_bps"
    else:
        assert request.volume_bytes is not None  # not a block: a volume
        price = _ceil_div(request.volume_bytes * policy.per_gb_minor, _BYTES_PER_GB)
        field = "volume_bytes"
    return check_product(
        price, field=field, what=f"provider {policy.provider_id}'s list price for the request"
    )


def reservation_price(policy: PricePolicy, listed: int) -> int:
    """The lowest price the policy accepts: ``reservation_ppm`` millionths of the list price."""
    return _ceil_div(listed * policy.reservation_ppm, 1_000_000)


def concession(tau: float, beta_ppm: int) -> Decimal:
    """Faratin et al.'s polynomial time-dependent tactic with kappa = 0: ``tau ** (1/beta)``.

    ``tau`` in [0, 1] is how much of the negotiation's time (or rounds) is used up. It is the
    share of the way from the opening position to the limit that a side has conceded: beta < 1
    holds firm until near the deadline (Boulware), beta > 1 concedes early (Conceder), beta = 1
    concedes linearly. At tau = 1 every side stands at its limit.
    """
    tau_d = min(Decimal(1), max(Decimal(0), Decimal(repr(float(tau)))))
    if tau_d in (0, 1):
        return tau_d
    with localcontext() as ctx:
        ctx.prec = 28
        return tau_d ** (Decimal(1_000_000) / Decimal(beta_ppm))


def seller_ask(listed: int, reserve: int, tau: float, beta_ppm: int) -> int:
    """The seller's ask at ``tau``: from the list price down to its reservation price."""
    conceded = (listed - reserve) * (1 - concession(tau, beta_ppm))
    return reserve + int(conceded.to_integral_value(rounding=ROUND_CEILING))


def buyer_offer(opening: int, limit: int, tau: float, beta_ppm: int) -> int:
    """The buyer's offer at ``tau``: from its opening offer up to its limit."""
    conceded = (limit - opening) * concession(tau, beta_ppm)
    return opening + int(conceded.to_integral_value(rounding=ROUND_FLOOR))
