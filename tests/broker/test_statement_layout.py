"""Statement layout: every line in exactly one leaf, subtotals per currency that add up, the
same totals under any profile, the order the profile asks for (checked against a naive
comparator), and the statement's faults refused by field."""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statement_factory import lines, make_line, make_statement, profile_docs, sample_statement

from broker.errors import InvalidInput
from broker.profiles import KINDS, Profile
from broker.statement_layout import Group, layout

# -- a naive reading of the rules, to check the layout against ----------------------------


def naive_group_value(line, key, zone):
    if key in ("day", "week", "month"):
        local = line["at"].astimezone(zone).date()
        if key == "day":
            return local
        if key == "month":
            return date(local.year, local.month, 1)
        year, week, _ = local.isocalendar()
        return date.fromisocalendar(year, week, 1)
    if key == "service":
        return tuple(line["services"]) or None
    if key == "recipient":
        return tuple(sorted(set(line["recipients"]))) or None
    return line.get(key)


def naive_sort_value(line, key):
    if key == "date":
        return line["at"]
    if key == "amount":
        return Fraction(line["amount_minor"], 10 ** line["minor_digits"])
    if key == "kind":
        return KINDS.index(line["kind"])
    if key in ("service", "recipient"):
        return naive_group_value(line, key, UTC)
    return line.get(key)


def _compare(a, b, descending=False):
    """None last in either direction."""
    if a is None or b is None:
        return (a is None) - (b is None)
    if a == b:
        return 0
    result = -1 if a < b else 1
    return -result if descending else result


def naive_line_cmp(profile):
    def cmp(x, y):
        for sort in profile.sort:
            c = _compare(
                naive_sort_value(x, sort.key), naive_sort_value(y, sort.key), sort.descending
            )
            if c:
                return c
        return _compare(x["id"], y["id"])

    return cmp


def naive_group_cmp(profile, key, currencies):
    def natural(value):
        return KINDS.index(value) if key == "kind" and value is not None else value

    def cmp(g, h):
        for sort in profile.sort:
            if sort.key == "amount":
                c = _compare(
                    [g.subtotals.get(c, 0) for c in currencies],
                    [h.subtotals.get(c, 0) for c in currencies],
                    sort.descending,
                )
            elif sort.key == key or (sort.key == "date" and key in ("day", "week", "month")):
                c = _compare(natural(g.value), natural(h.value), sort.descending)
            else:
                c = 0
            if c:
                return c
        return _compare(natural(g.value), natural(h.value))

    return cmp


def leaves(lay):
    """(path of groups, lines) for every leaf; one leaf with no path when ungrouped."""
    if not lay.profile.group_by:
        return [((), lay.lines)]
    out = []

    def walk(group: Group, path):
        path = (*path, group)
        if group.groups:
            for child in group.groups:
                walk(child, path)
        else:
            out.append((path, group.lines))

    for group in lay.groups:
        walk(group, ())
    return out


def all_groups(lay):
    stack = list(lay.groups)
    while stack:
        group = stack.pop()
        yield group
        stack.extend(group.groups)


def naive_totals(statement_lines):
    sums = {}
    for line in statement_lines:
        sums[line["currency"]] = sums.get(line["currency"], 0) + line["amount_minor"]
    return sums


def without_zeros(sums):
    return {code: minor for code, minor in sums.items() if minor}


# -- invariants ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(lines(), profile_docs())
def test_every_line_lands_in_exactly_one_leaf(statement_lines, doc):
    profile = Profile.from_json(doc)
    lay = layout(make_statement(statement_lines), profile)
    placed = [line["id"] for _, members in leaves(lay) for line in members]
    assert sorted(placed) == sorted(line["id"] for line in statement_lines)
    assert [line["id"] for line in lay.iter_lines()] == placed
    zone = profile.zone
    for path, members in leaves(lay):
        assert len(path) == len(profile.group_by)
        for group in path:  # every line of a leaf has the values of the groups above it
            for line in members:
                assert naive_group_value(line, group.key, zone) == group.value


@settings(max_examples=150, deadline=None)
@given(lines(), profile_docs())
def test_subtotals_are_the_sums_of_their_lines(statement_lines, doc):
    lay = layout(make_statement(statement_lines), Profile.from_json(doc))
    for group in all_groups(lay):
        assert without_zeros(group.subtotals) == without_zeros(naive_totals(group.iter_lines()))
        assert list(group.subtotals) == sorted(group.subtotals)
        if group.groups:
            summed = {}
            for child in group.groups:
                for code, minor in child.subtotals.items():
                    summed[code] = summed.get(code, 0) + minor
            assert dict(group.subtotals) == summed
    assert dict(lay.totals) == naive_totals(statement_lines)


@settings(max_examples=150, deadline=None)
@given(lines(), profile_docs(), profile_docs())
def test_any_two_profiles_give_the_same_totals(statement_lines, doc_a, doc_b):
    statement = make_statement(statement_lines)
    a = layout(statement, Profile.from_json(doc_a))
    b = layout(statement, Profile.from_json(doc_b))
    assert dict(a.totals) == dict(b.totals) == naive_totals(statement_lines)
    top_a = {}
    for group in a.groups:
        for code, minor in group.subtotals.items():
            top_a[code] = top_a.get(code, 0) + minor
    if a.groups:
        assert top_a == dict(a.totals)


@settings(max_examples=100, deadline=None)
@given(lines(), profile_docs(), st.data())
def test_sorting_never_changes_totals_or_subtotals(statement_lines, doc, data):
    statement = make_statement(statement_lines)
    resorted = dict(doc, sort=data.draw(profile_docs())["sort"])
    a = layout(statement, Profile.from_json(doc))
    b = layout(statement, Profile.from_json(resorted))

    def by_path(lay):
        return {
            tuple(g.value for g in path): (
                dict(path[-1].subtotals) if path else None,
                sorted(line["id"] for line in members),
            )
            for path, members in leaves(lay)
        }

    assert by_path(a) == by_path(b)
    assert dict(a.totals) == dict(b.totals)


@settings(max_examples=150, deadline=None)
@given(lines(), profile_docs(), st.randoms(use_true_random=False))
def test_order_is_as_asked_and_deterministic(statement_lines, doc, rnd):
    profile = Profile.from_json(doc)
    statement = make_statement(statement_lines)
    lay = layout(statement, profile)
    cmp = naive_line_cmp(profile)
    for _, members in leaves(lay):
        for x, y in pairwise(members):
            assert cmp(x, y) < 0, (x, y)
    currencies = sorted(lay.totals)
    siblings = [lay.groups] + [g.groups for g in all_groups(lay) if g.groups]
    for group_list in siblings:
        if group_list:
            gcmp = naive_group_cmp(profile, group_list[0].key, currencies)
            for g, h in pairwise(group_list):
                assert gcmp(g, h) < 0, (g.value, h.value)
    shuffled = list(statement_lines)
    rnd.shuffle(shuffled)
    again = layout(make_statement(shuffled), profile)
    assert [line["id"] for line in again.iter_lines()] == [line["id"] for line in lay.iter_lines()]


@settings(max_examples=80, deadline=None)
@given(lines(max_size=10), profile_docs())
def test_detail_and_summary_per_level(statement_lines, doc):
    profile = Profile.from_json(doc)
    lay = layout(make_statement(statement_lines), profile)
    for group in all_groups(lay):
        expected = all(d == "detail" for d in profile.detail[: group.level + 1])
        assert group.expanded == expected


# -- the rules, by example ----------------------------------------------------------------


def test_several_recipients_group_together_in_a_stable_order():
    statement = make_statement(
        [
            make_line(1, recipients=["bob", "+4917012345678"]),
            make_line(2, recipients=["+4917012345678", "bob", "bob"]),
            make_line(3, recipients=["bob"]),
            make_line(4, recipients=[]),
        ]
    )
    lay = layout(statement, Profile(name="r", group_by=("recipient",)))
    assert [(g.label, [line["id"] for line in g.lines]) for g in lay.groups] == [
        ("+4917012345678, bob", [1, 2]),
        ("bob", [3]),
        ("(none)", [4]),
    ]


def test_a_line_without_device_or_phone_falls_under_none_in_its_language():
    statement = make_statement([make_line(1, device=None, phone=None), make_line(2)])
    lay = layout(statement, Profile(name="d", group_by=("device", "phone"), locale="de_DE"))
    assert [g.label for g in lay.groups] == ["alice-phone", "(keine)"]
    assert lay.groups[1].value is None and lay.groups[1].groups[0].label == "(keine)"


def test_a_service_chain_groups_whole_and_in_order():
    statement = make_statement(
        [
            make_line(1, services=["anonymize", "encrypt"]),
            make_line(2, services=["encrypt", "anonymize"]),
            make_line(3, services=["anonymize", "encrypt"]),
        ]
    )
    lay = layout(statement, Profile(name="s", group_by=("service",)))
    assert [(g.label, len(g.lines)) for g in lay.groups] == [
        ("anonymize > encrypt", 2),
        ("encrypt > anonymize", 1),
    ]


def test_calendar_groups_are_in_the_profiles_time_zone():
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # 1 December, 00:30 in Berlin
    statement = make_statement(
        [make_line(1, at=late), make_line(2, at=datetime(2026, 11, 2, 9, tzinfo=UTC))]
    )
    utc = layout(statement, Profile(name="m", group_by=("month",)))
    berlin = layout(
        statement,
        Profile(
            name="m", group_by=("month", "week", "day"), timezone="Europe/Berlin", locale="de_DE"
        ),
    )
    assert [g.label for g in utc.groups] == ["November 2026"]
    assert [g.label for g in berlin.groups] == ["November 2026", "Dezember 2026"]
    december = berlin.groups[1]
    assert december.groups[0].value == date(2026, 11, 30)  # ISO week 49 starts on Monday
    assert december.groups[0].label == "KW 49, 2026"
    assert december.groups[0].groups[0].label == "01.12.2026"


def test_kinds_in_their_own_order_and_groups_by_amount():
    statement = make_statement(
        [
            make_line(1, 5, kind="credit"),
            make_line(2, 100, kind="bytes"),
            make_line(3, 7, kind="price"),
            make_line(4, 900, provider="far-c"),
            make_line(5, 50, provider=None),
        ]
    )
    by_kind = layout(statement, Profile(name="k", group_by=("kind",)))
    assert [g.value for g in by_kind.groups] == ["price", "bytes", "credit"]
    by_amount = layout(
        statement,
        Profile(name="a", group_by=("provider",), sort=({"key": "amount", "order": "desc"},)),
    )
    assert [g.label for g in by_amount.groups] == ["far-c", "far-b", "(none)"]
    by_name = layout(
        statement,
        Profile(name="n", group_by=("provider",), sort=({"key": "provider", "order": "desc"},)),
    )
    assert [g.label for g in by_name.groups] == ["far-c", "far-b", "(none)"]
    assert [line["id"] for line in by_name.groups[1].lines] == [1, 2, 3]  # then by date


def test_ties_break_by_line_id():
    statement = make_statement(
        [make_line(i, 100, at=datetime(2026, 11, 5, tzinfo=UTC)) for i in (9, 3, 7, 1)]
    )
    lay = layout(
        statement, Profile(name="t", group_by=(), sort=({"key": "amount", "order": "desc"},))
    )
    assert [line["id"] for line in lay.lines] == [1, 3, 7, 9]


def test_credits_subtract():
    statement = make_statement(
        [
            make_line(1, 1000),
            make_line(2, -4950, kind="credit", corrects={"statement_number": 6, "line_id": 40}),
        ]
    )
    lay = layout(statement, Profile(name="k", group_by=("kind",)))
    assert dict(lay.totals) == {"EUR": -3950}
    assert [dict(g.subtotals) for g in lay.groups] == [{"EUR": 1000}, {"EUR": -4950}]


def test_a_total_without_lines_and_the_sample():
    empty = layout(make_statement([], totals={"EUR": 0}), DEFAULT_PROFILE_FOR_TESTS)
    assert dict(empty.totals) == {"EUR": 0} and empty.minor_digits["EUR"] == 2
    sample = layout(sample_statement(), DEFAULT_PROFILE_FOR_TESTS)
    assert dict(sample.totals) == {"EUR": 1234567 + 2500 + 40 - 4950, "JPY": 700, "KWD": 1234567}
    assert dict(sample.minor_digits) == {"EUR": 2, "JPY": 0, "KWD": 3}


DEFAULT_PROFILE_FOR_TESTS = Profile(name="p")


# -- bad statements -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(totals={"EUR": 1}), "totals.EUR"),
        (lambda s: s.update(totals={"EUR": 1234, "JPY": 5}), "totals.JPY"),
        (lambda s: s["lines"][1].update(minor_digits=3), "lines[1].minor_digits"),
        (lambda s: s["lines"][1].update(at=datetime(2026, 11, 3)), "lines[1].at"),
        (lambda s: s["lines"][1].update(amount_minor=1.5), "lines[1].amount_minor"),
        (lambda s: s["lines"][1].update(amount_minor=True), "lines[1].amount_minor"),
        (lambda s: s["lines"][1].update(id=1), "lines[1].id"),
        (lambda s: s["lines"][0].update(currency=None), "lines[0].currency"),
        (lambda s: s.update(lines=None), "lines"),
    ],
)
def test_a_faulty_statement_names_its_field(change, field):
    statement = make_statement([make_line(1, 1000), make_line(2, 234)])
    change(statement)
    with pytest.raises(InvalidInput) as exc:
        layout(statement, DEFAULT_PROFILE_FOR_TESTS)
    assert exc.value.field == field, str(exc.value)


# -- speed --------------------------------------------------------------------------------


def test_ten_thousand_lines_lay_out_in_linear_time():
    rnd = random.Random(5)
    big = make_statement(
        [
            make_line(
                i,
                rnd.randint(-100, 10**6),
                provider=f"p{i % 40}",
                device=rnd.choice([None, "a", "b"]),
                kind=rnd.choice(KINDS),
            )
            for i in range(1, 10_001)
        ]
    )
    profile = Profile(
        name="deep",
        group_by=("provider", "device", "day", "kind"),
        sort=({"key": "amount", "order": "desc"}, {"key": "date"}),
    )
    start = time.perf_counter()
    lay = layout(big, profile)
    elapsed = time.perf_counter() - start
    assert sum(1 for _ in lay.iter_lines()) == 10_000
    assert elapsed < 3.0, f"{elapsed:.2f} s for 10,000 lines"  # about 0.1 s unloaded
