"""Segmentation profiles: the JSON form, the default, and every refusal naming its field."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given, settings
from statement_factory import profile_docs

from broker.errors import InvalidInput
from broker.profiles import (
    COLUMNS,
    DEFAULT_PROFILE,
    GROUP_KEYS,
    MAX_LEVELS,
    MAX_NAME,
    Profile,
    SortKey,
)

DOC = {
    "name": "by service",
    "group_by": ["service", "provider"],
    "detail": ["summary", "detail"],
    "columns": [
        "date",
        "provider",
        "network",
        "service",
        "device",
        "phone",
        "recipient",
        "kind",
        "quantity",
        "amount",
    ],
    "sort": [{"key": "amount", "order": "desc"}],
    "locale": "de_DE",
    "timezone": "Europe/Berlin",
}


def test_the_example_profile_parses():
    profile = Profile.from_json(DOC)
    assert profile.group_by == ("service", "provider")
    assert profile.detail == ("summary", "detail")
    assert profile.sort == (SortKey("amount", "desc"),)
    assert profile.locale == "de_DE" and profile.timezone == "Europe/Berlin"
    assert profile.babel_locale.language == "de"
    assert Profile.from_json(profile.to_json()) == profile


def test_the_default_profile():
    assert DEFAULT_PROFILE.group_by == ("provider",)
    assert DEFAULT_PROFILE.detail == ("detail",)
    assert (DEFAULT_PROFILE.locale, DEFAULT_PROFILE.timezone) == ("en_US", "UTC")
    assert "amount" in DEFAULT_PROFILE.columns


def test_defaults_and_normal_forms():
    profile = Profile.from_json(
        {"name": "  mine  ", "group_by": ["kind", "month"], "detail": "summary", "locale": "de-DE"}
    )
    assert profile.name == "mine"
    assert profile.detail == ("summary", "summary")  # one entry per level
    assert profile.locale == "de_DE"
    assert profile.sort == (SortKey("date", "asc"),)
    assert Profile.from_json({"name": "flat", "group_by": []}).detail == ()


def test_the_constructor_checks_as_from_json_does():
    assert Profile(name="x", group_by=("kind", "day")).detail == ("detail", "detail")
    with pytest.raises(InvalidInput) as exc:
        Profile(name="x", group_by=("provider", "colour"))
    assert exc.value.field == "group_by[1]"
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_PROFILE.locale = "de_DE"


def _with(path: str, value: object) -> dict:
    doc = copy.deepcopy(DOC)
    target, *rest = path.split(".")
    if rest:
        doc[target][0][rest[0]] = value
    elif value is _DELETE:
        del doc[target]
    else:
        doc[target] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("name", _DELETE), "name"),
        (("name", ""), "name"),
        (("name", "   "), "name"),
        (("name", 7), "name"),
        (("name", "x" * (MAX_NAME + 1)), "name"),
        (("name", "tab\there"), "name"),
        (("group_by", ["service", "provider", "colour"]), "group_by[2]"),
        (("group_by", ["service", "service"]), "group_by[1]"),
        (("group_by", "service"), "group_by"),
        (("group_by", [7]), "group_by[0]"),
        (("group_by", [*GROUP_KEYS[:MAX_LEVELS], GROUP_KEYS[MAX_LEVELS]]), "group_by"),
        (("detail", "full"), "detail"),
        (("detail", ["summary"]), "detail"),
        (("detail", ["summary", "brief"]), "detail[1]"),
        (("detail", 3), "detail"),
        (("columns", ["date", "colour", "amount"]), "columns[1]"),
        (("columns", ["amount", "amount"]), "columns[1]"),
        (("columns", ["date", "provider"]), "columns"),
        (("columns", []), "columns"),
        (("sort", [{"key": "amount"}, {"key": "colour"}]), "sort[1].key"),
        (("sort", [{"key": "amount"}, {"key": "amount", "order": "desc"}]), "sort[1].key"),
        (("sort.order", "down"), "sort[0].order"),
        (("sort.direction", "desc"), "sort[0].direction"),
        (("sort", ["amount"]), "sort[0]"),
        (("sort", "amount"), "sort"),
        (("locale", "xx_YY"), "locale"),
        (("locale", "not a locale"), "locale"),
        (("locale", ""), "locale"),
        (("locale", None), "locale"),
        (("timezone", "Mars/Olympus"), "timezone"),
        (("timezone", "../../etc/passwd"), "timezone"),
        (("timezone", ""), "timezone"),
        (("timezone", 1), "timezone"),
        (("colour", "blue"), "colour"),
    ],
)
def test_each_fault_names_its_field(change, field):
    with pytest.raises(InvalidInput) as exc:
        Profile.from_json(_with(*change))
    assert exc.value.field == field, str(exc.value)
    assert exc.value.http_status == 422


def test_not_an_object():
    with pytest.raises(InvalidInput) as exc:
        Profile.from_json(["provider"])
    assert exc.value.field == "profile"


def test_every_key_and_column_is_accepted():
    for key in GROUP_KEYS:
        assert Profile.from_json({"name": key, "group_by": [key]}).group_by == (key,)
    assert Profile.from_json({"name": "all", "columns": list(COLUMNS)}).columns == COLUMNS
    assert (
        len(Profile.from_json({"name": "deep", "group_by": list(GROUP_KEYS[:MAX_LEVELS])}).group_by)
        == MAX_LEVELS
    )


@settings(max_examples=60, deadline=None)
@given(profile_docs())
def test_random_valid_profiles_round_trip(doc):
    profile = Profile.from_json(doc)
    assert Profile.from_json(profile.to_json()) == profile
    assert len(profile.detail) == len(profile.group_by)
