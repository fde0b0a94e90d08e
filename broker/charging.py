"""Charge lines: an award's price per payer, what of a job's usage its price does not cover,
and a usage charge split among the payers to the minor unit (docs/billing.md, "Charges")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from broker.currency import MINOR_DIGITS
from broker.models import Award, Charge

PRICE = "price"
VOID = "void"  # an award's price undone: it delivered nothing


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """``amount`` split in proportion to ``weights`` by largest remainder: the parts add up to
    ``amount`` exactly (never a lost or invented minor unit). Ties of remainder go to the
    earlier weight; all-zero weights split evenly. A negative amount (a credit) is split as
    its size and negated, so a credit and the charge it undoes split alike."""
    if not weights:
        raise ValueError("no one to allocate to")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must not be negative: {weights}")
    if amount < 0:
        return [-part for part in allocate(-amount, weights)]
    weights = list(weights) if sum(weights) else [1] * len(weights)
    total = sum(weights)
    parts = [amount * w // total for w in weights]
    remainders = [amount * w % total for w in weights]
    left = amount - sum(parts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    return parts


def billable(award: Award | Row | Mapping, counters: Mapping[str, int]) -> dict[str, int]:
    """The usage the award's price does not cover, as rating dimensions (cumulative).

    The price covers the award's terms: a volume award's ``volume_bytes``, a block's time from
    ``starts_at`` to ``ends_at`` and its ``data_cap_bytes``. Only what goes past a term is
    rated under the tariff: bytes delivered (``bytes_out``) past the volume or the data cap,
    seconds past the block's length. A dimension no term bounds (packets; bytes of a block
    without a cap; seconds of a volume) is covered whole. Monotone in the counters, so the
    charges of a job's reports still add up to the rating of its final usage.
    """
    get = award.get if isinstance(award, Mapping) else lambda name: getattr(award, name)
    usage = {"bytes": 0, "seconds": 0}
    allowance = get("volume_bytes") if get("volume_bytes") is not None else get("data_cap_bytes")
    if allowance is not None:
        usage["bytes"] = max(counters["bytes_out"] - allowance, 0)
    starts, ends = get("starts_at"), get("ends_at")
    if starts is not None and ends is not None:
        usage["seconds"] = max(counters["seconds"] - int((ends - starts).total_seconds()), 0)
    return usage


def price_lines(award: Award, *, job_id: int | None, now: datetime) -> list[Charge]:
    """The award's price as charge lines, one per payer by its share (they add up to it)."""
    return [
        Charge(
            user_id=p.user_id,
            provider_id=award.provider_id,
            home_provider_id=award.home_provider_id,
            award_id=award.id,
            job_id=job_id,
            usage_report_id=None,
            kind=PRICE,
            amount_minor=p.share_minor,
            currency=award.currency,
            minor_digits=MINOR_DIGITS[award.currency],
            tariff_id=None,
            tariff_version=None,
            rated_at=now,
        )
        for p in award.payers
    ]


def void_price(session: Session, award: Award, *, job_id: int | None, at: datetime) -> list[Charge]:
    """Undo the award's price for each payer: a ``void`` line, the negative of its price line,
    dated ``at`` (never before the price). Written once per payer (a unique index holds it):
    a second call adds nothing. The void goes on the payer's next statement like any charge,
    the one the price is on if that is not finalized yet; settlement then owes the delivering
    provider nothing for the award."""
    prices = session.scalars(
        select(Charge).where(Charge.award_id == award.id, Charge.kind == PRICE)
    ).all()
    done = set(
        session.scalars(
            select(Charge.user_id).where(Charge.award_id == award.id, Charge.kind == VOID)
        )
    )
    lines = [
        Charge(
            user_id=p.user_id,
            provider_id=p.provider_id,
            home_provider_id=p.home_provider_id,
            award_id=award.id,
            job_id=job_id,
            usage_report_id=None,
            kind=VOID,
            amount_minor=-p.amount_minor,
            currency=p.currency,
            minor_digits=p.minor_digits,
            tariff_id=None,
            tariff_version=None,
            rated_at=max(at, p.rated_at),
        )
        for p in prices
        if p.user_id not in done and p.amount_minor
    ]
    session.add_all(lines)
    return lines
