"""Render a statement's `Layout` as JSON (the data), plain text, HTML or PDF.

Numbers, money and dates are formatted with Babel for the profile's locale, dates in its time
zone. Money is shown with exactly the digits a line was rated with (`minor_digits`), from its
integer minor units through `Decimal`, never a float, never rounded by the locale's idea of the
currency's digits. HTML comes from a Jinja2 template with autoescape on; the PDF is that HTML
printed by WeasyPrint. `render(layout, fmt)` is the entry point (`render_statement` lays out
and renders in one call); `MEDIA_TYPES` says what each format is.
"""

from __future__ import annotations

import copy
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import NumberPattern, format_currency, format_decimal

from broker.errors import InvalidInput
from broker.profiles import DEFAULT_PROFILE, Profile
from broker.statement_layout import (
    CHAIN_JOIN,
    RECIPIENTS_JOIN,
    Group,
    Layout,
    chain,
    layout,
    recipients,
)
from broker.statement_words import words

FORMATS: tuple[str, ...] = ("json", "text", "html", "pdf")
MEDIA_TYPES: Mapping[str, str] = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
HASH_SHOWN = 16  # hex digits of the content hash in a header
_NUMERIC = ("quantity", "amount")
_GAP = "  "  # between text columns


def render(layout: Layout, fmt: str) -> str | bytes:
    """``fmt`` is one of `FORMATS`: JSON, text and HTML give `str`, PDF gives `bytes`."""
    if fmt == "json":
        return json.dumps(to_json(layout), ensure_ascii=False)
    if fmt == "text":
        return to_text(layout)
    if fmt == "html":
        return to_html(layout)
    if fmt == "pdf":
        return to_pdf(layout)
    raise InvalidInput(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", field="format")


def render_statement(
    statement: Mapping, profile: Profile | Mapping | None, fmt: str
) -> str | bytes:
    """Lay ``statement`` out by ``profile`` (a `Profile`, its JSON form, or None for
    `DEFAULT_PROFILE`) and render it as ``fmt``."""
    if profile is None:
        profile = DEFAULT_PROFILE
    elif not isinstance(profile, Profile):
        profile = Profile.from_json(profile)
    if fmt not in FORMATS:  # before the work of a layout
        raise InvalidInput(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", field="format")
    return render(layout(statement, profile), fmt)


# -- formatting --------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _money_pattern(locale: Locale, digits: int) -> NumberPattern:
    """The locale's currency pattern showing exactly ``digits`` decimals."""
    pattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (digits, digits)
    return pattern


class Formatter:
    """Money, dates, quantities and cells in one profile's locale and time zone."""

    def __init__(self, layout: Layout) -> None:
        profile = layout.profile
        self.layout = layout
        self.locale = profile.babel_locale
        self.zone = profile.zone
        self.words = words(self.locale.language)

    def money(self, minor: int, currency: str, digits: int) -> str:
        amount = Decimal(minor).scaleb(-digits)
        return format_currency(
            amount,
            currency,
            format=_money_pattern(self.locale, digits),
            locale=self.locale,
            currency_digits=False,
        )

    def total(self, minor: int, currency: str) -> str:
        return self.money(minor, currency, self.layout.minor_digits[currency])

    def when(self, at: datetime) -> str:
        return format_datetime(at, "medium", tzinfo=self.zone, locale=self.locale)

    def day(self, at: datetime) -> str:
        return format_date(at.astimezone(self.zone).date(), "medium", locale=self.locale)

    def cell(self, line: Mapping, column: str) -> str:
        if column == "amount":
            return self.money(line["amount_minor"], line["currency"], line["minor_digits"])
        if column == "date":
            return self.when(line["at"])
        if column == "service":
            return CHAIN_JOIN.join(chain(line) or ())
        if column == "recipient":
            return RECIPIENTS_JOIN.join(recipients(line) or ())
        if column == "quantity":
            quantity = line.get("quantity")
            if quantity is None:
                return ""
            shown = format_decimal(quantity, locale=self.locale)
            return f"{shown} {line['unit']}" if line.get("unit") else shown
        if column == "kind":
            corrects = line.get("corrects")
            if corrects:
                return self.words["credit_for"].format(
                    number=corrects.get("statement_number"), line=corrects.get("line_id")
                )
            return str(line.get("kind") or "")
        value = line.get(column)
        return "" if value is None else str(value)

    def header(self) -> list[tuple[str, str]]:
        """(label, value) pairs: home provider, user, number or DRAFT, period, hash, totals."""
        st, w = self.layout.statement, self.words
        finalized = st.get("status") == "finalized" and st.get("number") is not None
        rows = [
            (w["home_provider"], str(st.get("home_provider", ""))),
            (w["user"], str(st.get("user", ""))),
            (w["number"], str(st["number"]) if finalized else w["draft"]),
            (w["period"], self._period()),
        ]
        if st.get("content_sha256"):
            rows.append((w["content_hash"], str(st["content_sha256"])[:HASH_SHOWN]))
        if st.get("finalized_at"):
            rows.append((w["finalized_at"], self.when(st["finalized_at"])))
        rows.append((w["profile"], self.layout.profile.name))
        rows.append(
            (
                w["total"],
                "; ".join(self.total(minor, code) for code, minor in self.layout.totals.items()),
            )
        )
        return rows

    def title(self) -> str:
        st = self.layout.statement
        if st.get("status") == "finalized" and st.get("number") is not None:
            return f"{self.words['statement']} {st['number']}"
        return f"{self.words['statement']} {self.words['draft']}"

    def _period(self) -> str:
        st = self.layout.statement
        start, end = st.get("period_start"), st.get("period_end")
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            return str(st.get("period", ""))
        # The period's days are the home provider's (its billing time zone), not the
        # profile's: the end is the first instant after the period, its last day the one before.
        zone = _zone(st.get("period_timezone") or "UTC")
        last = end - timedelta(microseconds=1)

        def day(at: datetime) -> str:
            return format_date(at.astimezone(zone).date(), "medium", locale=self.locale)

        return f"{st.get('period', '')} ({day(start)} \u2013 {day(last)})"


# -- rows: what text and HTML show, in order -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    kind: str  # "group", "line", "subtotal" or "total"
    level: int
    label: str = ""  # group, subtotal and total rows
    cells: tuple[str, ...] = ()  # line rows: one per column of the profile
    amount: str = ""  # subtotal and total rows
    negative: bool = False


def rows(layout: Layout, fmt: Formatter | None = None) -> list[Row]:
    """The rows of the table: groups (a header, their contents, subtotals when in detail; a
    subtotal row only when in summary), then the totals per currency."""
    fmt = fmt or Formatter(layout)
    out: list[Row] = []
    columns = layout.profile.columns
    if layout.groups:
        for group in layout.groups:
            _group_rows(group, fmt, columns, out)
    else:
        out.extend(_line_row(line, 0, fmt, columns) for line in layout.lines)
    for code, minor in layout.totals.items():
        out.append(
            Row("total", 0, fmt.words["total"], amount=fmt.total(minor, code), negative=minor < 0)
        )
    return out


def _line_row(line: Mapping, level: int, fmt: Formatter, columns: tuple[str, ...]) -> Row:
    return Row(
        "line",
        level,
        cells=tuple(fmt.cell(line, c) for c in columns),
        negative=line["amount_minor"] < 0,
    )


def _group_rows(group: Group, fmt: Formatter, columns: tuple[str, ...], out: list[Row]) -> None:
    if group.expanded:
        out.append(Row("group", group.level, group.label))
        if group.groups:
            for child in group.groups:
                _group_rows(child, fmt, columns, out)
        else:
            out.extend(_line_row(line, group.level + 1, fmt, columns) for line in group.lines)
        label = f"{fmt.words['subtotal']} {group.label}"
    else:
        label = group.label
    for code, minor in group.subtotals.items():
        out.append(
            Row("subtotal", group.level, label, amount=fmt.total(minor, code), negative=minor < 0)
        )


# -- JSON --------------------------------------------------------------------------------


def to_json(layout: Layout) -> dict:
    """The layout as plain JSON types: amounts as integer minor units with their currency,
    digits and formatted string; times as ISO 8601."""
    fmt = Formatter(layout)
    st = layout.statement
    header = {
        name: _plain(st.get(name))
        for name in (
            "id",
            "number",
            "status",
            "home_provider",
            "user",
            "period",
            "period_start",
            "period_end",
            "finalized_at",
            "content_sha256",
        )
    }
    header["title"] = fmt.title()
    doc = {
        "statement": header,
        "profile": layout.profile.to_json(),
        "columns": [{"name": c, "label": fmt.words[c]} for c in layout.profile.columns],
        "groups": [_group_json(g, fmt) for g in layout.groups],
        "lines": [_line_json(line, fmt) for line in layout.lines],
        "totals": [
            _money_json(minor, code, layout.minor_digits[code], fmt)
            for code, minor in layout.totals.items()
        ],
    }
    return doc


def _money_json(minor: int, currency: str, digits: int, fmt: Formatter) -> dict:
    return {
        "amount_minor": minor,
        "currency": currency,
        "minor_digits": digits,
        "formatted": fmt.money(minor, currency, digits),
    }


def _group_json(group: Group, fmt: Formatter) -> dict:
    doc = {
        "key": group.key,
        "value": _plain(group.value),
        "label": group.label,
        "level": group.level,
        "detail": group.expanded,
        "subtotals": [
            _money_json(minor, code, fmt.layout.minor_digits[code], fmt)
            for code, minor in group.subtotals.items()
        ],
    }
    if group.groups:
        doc["groups"] = [_group_json(g, fmt) for g in group.groups]
    else:
        doc["lines"] = [_line_json(line, fmt) for line in group.lines]
    return doc


def _line_json(line: Mapping, fmt: Formatter) -> dict:
    doc = {name: _plain(value) for name, value in line.items()}
    cells = {c: fmt.cell(line, c) for c in fmt.layout.profile.columns}
    doc["amount"] = {
        "amount_minor": line["amount_minor"],
        "currency": line["currency"],
        "minor_digits": line["minor_digits"],
        "formatted": cells.get("amount") or fmt.cell(line, "amount"),
    }
    doc["cells"] = cells
    return doc


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# -- plain text --------------------------------------------------------------------------


def _clean(text: str) -> str:
    """No control characters on a terminal: a name could carry an escape sequence."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\u00a0\u202f" else "\ufffd" for ch in text)


def _width(text: str) -> int:
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return width


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def to_text(layout: Layout) -> str:
    """Aligned columns for a terminal: a header block, the table, the totals."""
    fmt = Formatter(layout)
    columns = layout.profile.columns
    heads = [_clean(fmt.words[c]) for c in columns]
    table = rows(layout, fmt)
    cells = {id(r): [_clean(c) for c in r.cells] for r in table if r.kind == "line"}
    widths = [_width(h) for h in heads]
    for r in table:
        if r.kind == "line":
            for i, c in enumerate(cells[id(r)]):
                widths[i] = max(widths[i], _width(c))
    money = columns.index("amount")
    span = list(range(money)) if money else list(range(1, len(columns)))
    for r in table:
        if r.kind != "line":
            widths[money] = max(widths[money], _width(r.amount))
    labels = {id(r): "  " * r.level + _clean(r.label) for r in table if r.kind != "line"}
    if span:
        room = sum(widths[i] for i in span) + len(_GAP) * (len(span) - 1)
        need = max((_width(s) for s in labels.values()), default=0)
        if need > room:
            widths[span[-1]] += need - room
        room = sum(widths[i] for i in span) + len(_GAP) * (len(span) - 1)
    right = [c in _NUMERIC for c in columns]

    def line(values: list[str]) -> str:
        return _GAP.join(_pad(v, widths[i], right[i]) for i, v in enumerate(values)).rstrip()

    def labelled(label: str, amount: str) -> str:
        amount = _pad(amount, widths[money], True)
        if not span:
            return amount
        label = _pad(label, room, False)
        return (f"{label}{_GAP}{amount}" if money else f"{amount}{_GAP}{label}").rstrip()

    total_width = sum(widths) + len(_GAP) * (len(widths) - 1)
    head_width = max(_width(_clean(k)) for k, _ in fmt.header())
    out = [_clean(fmt.title()), ""]
    out += [f"{_pad(_clean(k), head_width, False)}  {_clean(v)}" for k, v in fmt.header()]
    out += ["", line(heads), "-" * total_width]
    ruled = False
    for r in table:
        if r.kind == "line":
            out.append(line(cells[id(r)]))
        elif r.kind == "group":
            out.append(labels[id(r)].rstrip())
        else:
            if r.kind == "total" and not ruled:
                out.append("=" * total_width)
                ruled = True
            out.append(labelled(labels[id(r)], r.amount))
    return "\n".join(out) + "\n"


# -- HTML and PDF ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("broker", "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def to_html(layout: Layout) -> str:
    """A standalone HTML page (styles inline, nothing fetched); every value escaped."""
    fmt = Formatter(layout)
    columns = layout.profile.columns
    money = columns.index("amount")
    return (
        _environment()
        .get_template("statement.html")
        .render(
            title=fmt.title(),
            header=fmt.header(),
            lang=fmt.locale.language,
            draft=fmt.layout.statement.get("status") != "finalized",
            columns=[
                {"label": fmt.words[c], "css": "num" if c in _NUMERIC else c} for c in columns
            ],
            rows=rows(layout, fmt),
            before=money,
            after=len(columns) - money - 1,
        )
    )


def _no_fetch(url: str, *args, **kwargs):
    raise ValueError(f"a statement fetches nothing ({url})")


def to_pdf(layout: Layout) -> bytes:
    """The HTML page printed to PDF by WeasyPrint (imported on first use: it is slow to load)."""
    import logging

    from weasyprint import HTML

    # WeasyPrint warns on every PDF when the system's HarfBuzz lacks its subsetter (it falls
    # back to fontTools, with the same result): not the user's concern.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    return HTML(string=to_html(layout), url_fetcher=_no_fetch).write_pdf()


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
