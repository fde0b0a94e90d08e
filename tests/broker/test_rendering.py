"""Rendering a laid-out statement: money exactly as rated in any locale, JSON with integer
minor units, aligned text, escaped HTML, and a PDF whose text (read back with pdftotext) holds
every line's amount and the totals."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from statement_factory import make_line, make_statement, sample_statement

from broker.errors import InvalidInput
from broker.profiles import DEFAULT_PROFILE, Profile
from broker.rendering import (
    FORMATS,
    MEDIA_TYPES,
    Formatter,
    render,
    render_statement,
    rows,
)
from broker.statement_layout import layout

ROOT = Path(__file__).resolve().parents[2]
BY_SERVICE = Profile.from_json(
    {
        "name": "by service",
        "group_by": ["service", "provider"],
        "detail": "detail",
        "columns": ["date", "provider", "recipient", "kind", "quantity", "amount"],
        "sort": [{"key": "amount", "order": "desc"}],
        "locale": "de_DE",
        "timezone": "Europe/Berlin",
    }
)


def formatter(locale: str = "en_US") -> Formatter:
    return Formatter(layout(make_statement([]), Profile(name="f", locale=locale)))


def plain(text: str) -> str:
    """Babel's no-break spaces as spaces, runs of white space as one."""
    return re.sub(r"\s+", " ", text.replace("\u00a0", " ").replace("\u202f", " "))


# -- money -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "digits", "locale", "shown"),
    [
        (1234567, "EUR", 2, "de_DE", "12.345,67\u00a0€"),
        (1234567, "EUR", 2, "en_US", "€12,345.67"),
        (1234567, "KWD", 3, "en_US", "KWD1,234.567"),
        (1234567, "KWD", 3, "de_DE", "1.234,567\u00a0KWD"),
        (1234567, "JPY", 0, "en_US", "¥1,234,567"),
        (1234567, "JPY", 0, "ja_JP", "￥1,234,567"),
        (-4950, "EUR", 2, "de_DE", "-49,50\u00a0€"),
        (-4950, "EUR", 2, "en_US", "-€49.50"),
        (5, "EUR", 2, "en_US", "€0.05"),
        (1234567, "IQD", 3, "en_US", "IQD1,234.567"),  # ISO's 3 digits, not CLDR's 0
        (2**63 - 1, "EUR", 2, "de_DE", "92.233.720.368.547.758,07\u00a0€"),  # no float anywhere
    ],
)
def test_money_shows_exactly_the_rated_digits(minor, currency, digits, locale, shown):
    assert formatter(locale).money(minor, currency, digits) == shown


def test_the_stored_digits_win_over_the_currency_list():
    # a currency whose digits ISO changed keeps the digits its lines were rated with
    assert formatter().money(123456, "EUR", 3) == "€123.456"


# -- JSON --------------------------------------------------------------------------------


def _no_floats(value):
    assert not isinstance(value, float)
    if isinstance(value, dict):
        for item in value.values():
            _no_floats(item)
    elif isinstance(value, list):
        for item in value:
            _no_floats(item)


def test_json_is_the_data_with_integer_minor_units():
    statement = sample_statement()
    doc = json.loads(render(layout(statement, BY_SERVICE), "json"))
    _no_floats(doc)
    assert doc["statement"]["number"] == 7 and doc["statement"]["title"] == "Abrechnung 7"
    assert doc["profile"] == BY_SERVICE.to_json()
    assert doc["totals"] == [
        {
            "amount_minor": 1232157,
            "currency": "EUR",
            "minor_digits": 2,
            "formatted": "12.321,57\u00a0€",
        },
        {"amount_minor": 700, "currency": "JPY", "minor_digits": 0, "formatted": "700\u00a0¥"},
        {
            "amount_minor": 1234567,
            "currency": "KWD",
            "minor_digits": 3,
            "formatted": "1.234,567\u00a0KWD",
        },
    ]
    found = {}

    def walk(group):
        assert group["subtotals"]
        for child in group.get("groups", []):
            walk(child)
        for line in group.get("lines", []):
            found[line["id"]] = line

    for group in doc["groups"]:
        walk(group)
    assert sorted(found) == [line["id"] for line in statement["lines"]]
    credit = found[6]
    assert credit["amount"] == {
        "amount_minor": -4950,
        "currency": "EUR",
        "minor_digits": 2,
        "formatted": "-49,50\u00a0€",
    }
    assert credit["corrects"] == {"statement_number": 6, "line_id": 40}
    assert credit["cells"]["kind"] == "Gutschrift zu Abrechnung 6, Posten 40"
    assert credit["at"] == "2026-11-07T07:00:00+00:00"


def test_formats_and_media_types():
    lay = layout(sample_statement(), DEFAULT_PROFILE)
    assert set(MEDIA_TYPES) == set(FORMATS)
    assert isinstance(render(lay, "text"), str) and isinstance(render(lay, "html"), str)
    with pytest.raises(InvalidInput) as exc:
        render(lay, "docx")
    assert exc.value.field == "format"
    statement = sample_statement()
    assert render_statement(statement, None, "text") == render(lay, "text")
    assert render_statement(statement, BY_SERVICE.to_json(), "json") == render(
        layout(statement, BY_SERVICE), "json"
    )
    with pytest.raises(InvalidInput) as exc:
        render_statement(statement, {"name": "x", "group_by": ["colour"]}, "text")
    assert exc.value.field == "group_by[0]"
    with pytest.raises(InvalidInput) as exc:
        render_statement(statement, None, "docx")
    assert exc.value.field == "format"


# -- text --------------------------------------------------------------------------------


def test_text_golden_table():
    statement = make_statement(
        [
            make_line(1, 2500, kind="price", quantity=None, unit=None),
            make_line(2, 1234567, kind="bytes", quantity=1_500_000, unit="bytes"),
            make_line(3, 40, kind="connect", provider="far-c", quantity=None, unit=None),
        ]
    )
    profile = Profile(
        name="golden",
        group_by=("provider",),
        columns=("provider", "kind", "quantity", "amount"),
        sort=({"key": "amount", "order": "desc"},),
    )
    text = render(layout(statement, profile), "text")
    table = text[text.index("Provider  Kind") :]
    assert table == (
        "Provider  Kind            Quantity      Amount\n"
        "----------------------------------------------\n"
        "far-b\n"
        "far-b     bytes    1,500,000 bytes  €12,345.67\n"
        "far-b     price                         €25.00\n"
        "Subtotal far-b                      €12,370.67\n"
        "far-c\n"
        "far-c     connect                        €0.40\n"
        "Subtotal far-c                           €0.40\n"
        "==============================================\n"
        "Total                               €12,371.07\n"
    )


def test_text_header_and_aligned_amounts():
    statement = sample_statement()
    text = render(layout(statement, BY_SERVICE), "text")
    lines = text.splitlines()
    assert lines[0] == "Abrechnung 7"
    head = plain(text[: text.index("Datum")])
    for part in (
        "Heimanbieter home-isp",
        "Nutzer alice",
        "Nummer 7",
        "Zeitraum 2026-11 (01.11.2026 \u2013 30.11.2026)",  # home-isp's days (UTC)
        "Inhalts-Hash 9f86d081884c7d65 ",
        "Summe 12.321,57 €; 700 ¥; 1.234,567 KWD",
    ):
        assert part in head
    # every amount ends in the same column: lines, subtotals and totals
    amounts = [
        line for line in lines if re.search(r"(€|¥|KWD)$", line) and not line.startswith("Summe ")
    ]
    assert len(amounts) >= 6 + 3
    assert len({len(line) for line in amounts}) == 1
    assert lines[-3].startswith("Summe") and lines[-3].endswith("12.321,57\u00a0€")
    assert lines[-4] == "=" * len(lines[-4])
    assert "-49,50\u00a0€" in text and "Gutschrift zu Abrechnung 6, Posten 40" in text


def test_text_draft_and_summary():
    statement = make_statement(
        [make_line(1, 100), make_line(2, 200, provider="far-c")], finalized=False
    )
    text = render(
        layout(statement, Profile(name="s", group_by=("provider",), detail="summary")), "text"
    )
    assert text.splitlines()[0] == "Statement DRAFT"
    assert "Number         DRAFT" in text and "Content hash" not in text
    assert "usage report" not in text and "bytes" not in text  # no line rows
    lines = text.splitlines()
    body = lines[lines.index("-" * len(lines[-2])) + 1 :]
    assert [plain(line) for line in body] == [
        "far-b €1.00",
        "far-c €2.00",
        "=" * len(body[2]),
        "Total €3.00",
    ]


def test_text_has_no_control_characters_from_names():
    statement = make_statement([make_line(1, provider="evil\x1b[2J\x07", description="a\nb")])
    profile = Profile(name="c", columns=("provider", "description", "amount"))
    text = render(layout(statement, profile), "text")
    assert "\x1b" not in text and "\x07" not in text
    assert "a\nb" not in text


def test_twenty_lines_lay_out_and_render_in_milliseconds():
    statement = make_statement([make_line(i, 100 * i, provider=f"p{i % 3}") for i in range(1, 21)])
    render(layout(statement, BY_SERVICE), "text")  # warm the caches (locale data)
    best = min(_timed(lambda: render(layout(statement, BY_SERVICE), "text")) for _ in range(5))
    assert best < 0.05, f"{best * 1000:.1f} ms"  # about 3 ms unloaded


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


# -- HTML --------------------------------------------------------------------------------


HOSTILE = "<script>alert(1)</script>"


def test_html_escapes_hostile_names():
    statement = make_statement(
        [
            make_line(
                1,
                provider=HOSTILE,
                network='"><img src=x>',
                description="</td></tr></table><b>x</b>",
            )
        ],
        user="<i>mallory</i>",
        home_provider="a&b",
    )
    profile = Profile(
        name="<h1>p</h1>",
        group_by=("provider", "network"),
        columns=("provider", "network", "description", "amount"),
    )
    html = render(layout(statement, profile), "html")
    assert "<script>" not in html and "<img" not in html and "<i>" not in html
    assert "<b>" not in html and "<h1>p" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;i&gt;mallory&lt;/i&gt;" in html and "a&amp;b" in html
    assert html.startswith("<!DOCTYPE html>") and '<html lang="en">' in html


def test_html_structure():
    html = render(layout(sample_statement(), BY_SERVICE), "html")
    assert '<html lang="de">' in html and "<style>" in html and "@page" in html
    assert html.count('<tr class="line') == 6
    assert '<tr class="total' in html and "12.321,57\u00a0€" in html
    assert "http" not in html  # standalone: nothing to fetch


def test_templates_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["broker"]
    templates = sorted((ROOT / "broker" / "templates").iterdir())
    assert templates
    for path in templates:
        relative = f"templates/{path.name}"
        assert any(fnmatch(relative, glob) for glob in globs), relative


# -- PDF ---------------------------------------------------------------------------------


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed; .ci/run installs it")
    path = tmp_path / "statement.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True, capture_output=True, timeout=60
    )
    return plain(out.stdout.decode("utf-8"))


@pytest.mark.parametrize("profile", [BY_SERVICE, DEFAULT_PROFILE], ids=["de", "en"])
def test_pdf_holds_every_line_and_the_totals(profile, tmp_path):
    statement = sample_statement()
    lay = layout(statement, profile)
    pdf = render(lay, "pdf")
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF-")
    text = pdf_text(pdf, tmp_path)
    fmt = Formatter(lay)
    for line in statement["lines"]:
        amount = plain(fmt.money(line["amount_minor"], line["currency"], line["minor_digits"]))
        assert amount in text, amount
    for code, minor in lay.totals.items():
        assert plain(fmt.total(minor, code)) in text
    title = fmt.title()
    assert title in text and "home-isp" in text and "9f86d081884c7d65" in text
    assert any(r.kind == "total" for r in rows(lay, fmt))


def test_pdf_of_a_draft_with_a_hostile_name(tmp_path):
    statement = make_statement([make_line(1, 1234567, provider=HOSTILE)], finalized=False)
    text = pdf_text(render(layout(statement, DEFAULT_PROFILE), "pdf"), tmp_path)
    assert "Statement DRAFT" in text and HOSTILE in text and "€12,345.67" in text


def test_the_periods_days_are_the_home_providers_whatever_the_profiles_time_zone():
    """A home provider in Berlin bills November from 31 Oct 23:00 UTC to 30 Nov 23:00 UTC; a
    profile in New York still shows 1 to 30 November (not 31 Oct to 30 Nov, nor 1 Dec)."""
    from datetime import UTC, datetime

    statement = {
        **sample_statement(),
        "period_timezone": "Europe/Berlin",
        "period_start": datetime(2026, 10, 31, 23, tzinfo=UTC),
        "period_end": datetime(2026, 11, 30, 23, tzinfo=UTC),
    }
    profile = Profile.from_json(
        {**BY_SERVICE.to_json(), "locale": "en_US", "timezone": "America/New_York"}
    )
    head = plain(render(layout(statement, profile), "text"))
    assert "Period 2026-11 (Nov 1, 2026 \u2013 Nov 30, 2026)" in head, head[:400]
