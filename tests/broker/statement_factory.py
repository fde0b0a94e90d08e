"""Statement dicts as the statement store hands them to `broker.statement_layout.layout`, and
hypothesis strategies for random lines and random valid profiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from broker.profiles import COLUMNS, GROUP_KEYS, KINDS, MAX_LEVELS, SORT_KEYS

PERIOD_START = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 12, 1, tzinfo=UTC)
DIGITS = {"EUR": 2, "JPY": 0, "KWD": 3}


def make_line(id: int, amount_minor: int = 1234, currency: str = "EUR", **fields) -> dict:
    """One statement line; every field can be overridden."""
    line = {
        "id": id,
        "charge_id": 1000 + id,
        "kind": "bytes",
        "amount_minor": amount_minor,
        "currency": currency,
        "minor_digits": DIGITS.get(currency, 2),
        "at": PERIOD_START + timedelta(days=id % 29, hours=7),
        "provider": "far-b",
        "network": "far-net",
        "services": ["anonymize", "encrypt"],
        "device": "alice-phone",
        "phone": "+4915112345678",
        "recipients": ["bob"],
        "award_id": 3,
        "job_id": 4,
        "usage_report_id": 9,
        "usage_sequence": 2,
        "quantity": 1_500_000,
        "unit": "bytes",
        "corrects": None,
        "description": f"usage report {id}",
    }
    line.update(fields)
    return line


def make_statement(lines: list[dict] | None = None, *, finalized: bool = True, **fields) -> dict:
    """A statement whose totals are the sum of its lines (per currency)."""
    lines = [make_line(1)] if lines is None else lines
    totals: dict[str, int] = {}
    for line in lines:
        totals[line["currency"]] = totals.get(line["currency"], 0) + line["amount_minor"]
    statement = {
        "id": 12,
        "number": 7 if finalized else None,
        "status": "finalized" if finalized else "draft",
        "home_provider": "home-isp",
        "user": "alice",
        "period": "2026-11",
        "period_start": PERIOD_START,
        "period_end": PERIOD_END,
        "finalized_at": PERIOD_END + timedelta(hours=2) if finalized else None,
        "content_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        if finalized
        else None,
        "totals": totals,
        "lines": lines,
    }
    statement.update(fields)
    return statement


def sample_statement() -> dict:
    """A mixed statement: an auction price, usage from two providers, a credit, three
    currencies, lines with and without a device or phone, several recipients."""
    lines = [
        make_line(
            1,
            2500,
            kind="price",
            quantity=None,
            unit=None,
            usage_report_id=None,
            usage_sequence=None,
            description="auction 5 price",
        ),
        make_line(2, 1234567, kind="bytes", recipients=["+4917012345678", "bob"]),
        make_line(
            3,
            40,
            kind="connect",
            provider="far-c",
            network="c-net",
            services=["checksum"],
            device=None,
            quantity=None,
            unit=None,
        ),
        make_line(
            4,
            700,
            "JPY",
            kind="seconds",
            provider="far-c",
            network="c-net",
            quantity=120,
            unit="seconds",
            phone=None,
            recipients=[],
        ),
        make_line(5, 1234567, "KWD", kind="packets", quantity=12000, unit="packets"),
        make_line(
            6,
            -4950,
            kind="credit",
            quantity=None,
            unit=None,
            corrects={"statement_number": 6, "line_id": 40},
            description="credit: volume tier reached",
        ),
    ]
    return make_statement(lines)


# -- hypothesis ----------------------------------------------------------------------------

_names = st.sampled_from(["far-b", "far-c", "home-isp", "zeta", "<b>x</b>"])
_optional = st.one_of(st.none(), st.sampled_from(["alice-phone", "alice-laptop", "tv"]))
_phones = st.one_of(st.none(), st.sampled_from(["+4915112345678", "+4917012345678"]))
_recipients = st.lists(st.sampled_from(["bob", "carol", "+4917012345678"]), max_size=3)
_chains = st.lists(
    st.sampled_from(["anonymize", "encrypt", "checksum"]), min_size=1, max_size=3, unique=True
)


@st.composite
def lines(draw, max_size: int = 30) -> list[dict]:
    count = draw(st.integers(0, max_size))
    ids = draw(st.lists(st.integers(1, 10**6), min_size=count, max_size=count, unique=True))
    out = []
    for id in ids:
        currency = draw(st.sampled_from(sorted(DIGITS)))
        quantity = draw(st.one_of(st.none(), st.integers(0, 10**12)))
        out.append(
            make_line(
                id,
                draw(st.integers(-(10**9), 10**12)),
                currency,
                kind=draw(st.sampled_from(KINDS)),
                at=PERIOD_START + timedelta(seconds=draw(st.integers(0, 30 * 86400 - 1))),
                provider=draw(_names),
                network=draw(st.sampled_from(["far-net", "c-net"])),
                services=draw(_chains),
                device=draw(_optional),
                phone=draw(_phones),
                recipients=draw(_recipients),
                quantity=quantity,
                unit=None if quantity is None else "bytes",
                description=draw(st.sampled_from(["a", "b", None])),
            )
        )
    return out


@st.composite
def profile_docs(draw) -> dict:
    group_by = draw(st.lists(st.sampled_from(GROUP_KEYS), max_size=min(4, MAX_LEVELS), unique=True))
    detail = draw(
        st.one_of(
            st.sampled_from(["detail", "summary"]),
            st.lists(
                st.sampled_from(["detail", "summary"]),
                min_size=len(group_by),
                max_size=len(group_by),
            ),
        )
    )
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, unique=True))
    if "amount" not in columns:
        columns.insert(draw(st.integers(0, len(columns))), "amount")
    sort = [
        {"key": key, "order": draw(st.sampled_from(["asc", "desc"]))}
        for key in draw(st.lists(st.sampled_from(SORT_KEYS), max_size=3, unique=True))
    ]
    return {
        "name": "random",
        "group_by": group_by,
        "detail": detail,
        "columns": columns,
        "sort": sort,
        "locale": draw(st.sampled_from(["en_US", "de_DE", "fr_FR", "ja_JP", "ar_EG"])),
        "timezone": draw(
            st.sampled_from(["UTC", "Europe/Berlin", "Pacific/Kiritimati", "America/St_Johns"])
        ),
    }
