"""A provider's published tariff versions: publish, read, and the version active at a time.

The tariff's shape and rules are `broker.tariffs`; this module keeps each version's
``to_json()`` in the ``tariffs`` table. A version is never edited: a new one is published, with
the next number and a later ``active_from``, never starting before usage already rated under
the tariff (so no stored charge would have come out otherwise).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from broker.actors import Actor
from broker.catalog import format_chain, parse_chain
from broker.clock import resolve_now
from broker.errors import InvalidInput, NotFound, NotYours, WrongState
from broker.idempotency import once
from broker.models import Award, Provider, TariffVersion, UsageReport
from broker.tariffs import Tariff


def publish_tariff(
    session: Session,
    actor: Actor,
    provider_id: int,
    doc: dict,
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
) -> TariffVersion:
    """Publish a version of ``provider_id``'s tariff for ``doc["services"]``.

    ``doc`` is the JSON form without ``provider_id``; ``version`` may be left out (the next
    one). Refused: another provider's tariff (403), a version that is not the next (409), an
    ``active_from`` not after the previous version's or before usage already rated under this
    tariff (422, ``active_from``), any fault in the tariff (422 naming the dotted field).
    """
    now = resolve_now(now)
    if session.get(Provider, provider_id) is None:
        raise NotFound("provider", provider_id)
    if not actor.speaks_for_provider(provider_id):
        raise NotYours(
            f"{actor} may not publish provider {provider_id}'s tariffs",
            where=f"provider {provider_id}",
        )
    if not isinstance(doc, dict):
        raise InvalidInput("must be a JSON object", field="tariff")
    if "provider_id" in doc:
        raise InvalidInput("is given by the path", field="provider_id")
    chain = format_chain(parse_chain(doc.get("services") or ()))
    params = {"provider": provider_id, "doc": doc}

    def run() -> TariffVersion:
        latest = session.scalars(
            select(TariffVersion)
            .where(TariffVersion.provider_id == provider_id, TariffVersion.services == chain)
            .order_by(TariffVersion.version.desc())
            .limit(1)
            .with_for_update()
        ).first()
        number = 1 if latest is None else latest.version + 1
        given = doc.get("version", number)
        if given != number:
            raise WrongState(
                f"the next version of this tariff is {number}, not {given!r}; "
                f"a published version is never replaced",
                where=f"tariff of provider {provider_id} for {chain}",
            )
        tariff = Tariff.from_json({**doc, "provider_id": provider_id, "version": number})
        if latest is not None and tariff.active_from <= latest.active_from:
            raise InvalidInput(
                f"must be after version {latest.version}'s {latest.active_from.isoformat()}",
                field="active_from",
            )
        rated_until = _last_rated(session, provider_id, chain)
        if rated_until is not None and tariff.active_from < rated_until:
            raise InvalidInput(
                f"usage until {rated_until.isoformat()} is already rated under "
                f"this tariff; a new version may start from then on",
                field="active_from",
            )
        row = TariffVersion(
            provider_id=provider_id,
            services=chain,
            version=number,
            active_from=tariff.active_from,
            currency=tariff.currency,
            doc=tariff.to_json(),
            created_at=now,
        )
        session.add(row)
        session.flush()
        return row

    return once(session, actor, idempotency_key, "tariff.publish", params, TariffVersion, run)


def _last_rated(session: Session, provider_id: int, chain: str) -> datetime | None:
    """The time of the latest usage rated under any version of this tariff."""
    versions = select(TariffVersion.id).where(
        TariffVersion.provider_id == provider_id, TariffVersion.services == chain
    )
    return session.scalar(
        select(func.max(UsageReport.usage_at)).where(UsageReport.tariff_id.in_(versions))
    )


def get_tariff(session: Session, tariff_id: int) -> TariffVersion:
    """Anyone may read a published tariff version."""
    row = session.get(TariffVersion, tariff_id)
    if row is None:
        raise NotFound("tariff", tariff_id)
    return row


def list_tariffs(
    session: Session,
    provider_id: int,
    *,
    services: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[TariffVersion]:
    """A provider's tariff versions, oldest first (``services``: one chain's only)."""
    if session.get(Provider, provider_id) is None:
        raise NotFound("provider", provider_id)
    query = select(TariffVersion).where(TariffVersion.provider_id == provider_id)
    if services is not None:
        query = query.where(TariffVersion.services == format_chain(parse_chain(services)))
    if after is not None:
        query = query.where(TariffVersion.id > after)
    return list(session.scalars(query.order_by(TariffVersion.id).limit(limit)))


_PARSED: dict[tuple[str, int], Tariff] = {}


def parsed(database: str, row_id: int, doc: dict) -> Tariff:
    """A stored version parsed once per database and row: versions are never edited."""
    key = (database, row_id)
    tariff = _PARSED.get(key)
    if tariff is None:
        if len(_PARSED) > 4096:
            _PARSED.clear()
        tariff = _PARSED[key] = Tariff.from_json(doc)
    return tariff


# The version active at a time: the latest active_from not after it (rule 9 of docs/billing.md;
# the table's unique (provider, services, active_from) means there is never a tie).
_ACTIVE = (
    select(TariffVersion.id, TariffVersion.version, TariffVersion.doc)
    .where(
        TariffVersion.provider_id == bindparam("provider"),
        TariffVersion.services == bindparam("services"),
        TariffVersion.active_from <= bindparam("at"),
    )
    .order_by(TariffVersion.active_from.desc())
    .limit(1)
)


def active_tariff(session: Session, award: Award | dict, at: datetime) -> tuple[int, Tariff] | None:
    """The delivering provider's tariff version for the award's chain active at ``at``, with
    its row id; None when none is (then usage is not charged)."""
    get = award.get if isinstance(award, dict) else lambda name: getattr(award, name)
    conn = session.connection()
    row = conn.execute(
        _ACTIVE, {"provider": get("provider_id"), "services": get("services"), "at": at}
    ).first()
    if row is None:
        return None
    return row.id, parsed(conn.engine.url.render_as_string(), row.id, row.doc)
