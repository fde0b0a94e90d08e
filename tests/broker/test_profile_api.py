"""Segmentation profiles over HTTP (claim c12), on both databases: a user saves several, one
is the default; a statement renders with any of them in JSON, text, HTML and PDF, each with
the same total; faults name their field; no one else reads or renders them."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from apiclient import refused
from test_statement_api import billed

BY_SERVICE = {
    "group_by": ["service", "provider"],
    "detail": ["summary", "detail"],
    "locale": "de_DE",
    "timezone": "Europe/Berlin",
}
BY_RECIPIENT = {
    "group_by": ["recipient"],
    "columns": ["date", "provider", "kind", "amount"],
    "sort": [{"key": "amount", "order": "desc"}],
}


def closed(api, market) -> dict:
    billed(api, market)
    api.home_key.post(f"/v1/providers/{api.home}/billing/close", json={"period": "2025-01"})
    return api.alice.get("/v1/statements").json()["items"][0]


def test_a_user_keeps_profiles_and_one_is_the_default(api, market):
    path = f"/v1/users/{api.alice_id}/profiles"
    r = api.alice.put(f"{path}/by-service", json={"profile": BY_SERVICE, "default": True})
    assert r.status_code == 200, r.text
    assert r.json()["profile"]["group_by"] == ["service", "provider"]
    assert (
        api.alice.put(f"{path}/by-service", json={"profile": BY_SERVICE, "default": True}).json()
        == r.json()
    )
    api.alice.put(f"{path}/by-recipient", json={"profile": BY_RECIPIENT})
    listed = api.alice.get(path).json()
    assert [(p["name"], p["default"]) for p in listed] == [
        ("by-recipient", False),
        ("by-service", True),
    ]
    api.alice.put(f"{path}/by-recipient", json={"profile": BY_RECIPIENT, "default": True})
    assert [(p["name"], p["default"]) for p in api.alice.get(path).json()] == [
        ("by-recipient", True),
        ("by-service", False),
    ]
    assert api.alice.delete(f"{path}/by-service").status_code == 204
    assert api.alice.delete(f"{path}/by-service").status_code == 204  # a retry
    refused(api.alice.get(f"{path}/by-service"), None, 404)
    refused(api.bob.get(path), None, 403)
    refused(api.home_key.put(f"{path}/x", json={"profile": BY_RECIPIENT}), None, 403)


@pytest.mark.parametrize(
    "fault,field",
    [
        ({"group_by": ["provider", "planet"]}, "profile.group_by[1]"),
        ({"group_by": ["day", "day"]}, "profile.group_by[1]"),
        ({"columns": ["date", "colour", "amount"]}, "profile.columns[1]"),
        ({"sort": [{"key": "weight"}]}, "profile.sort[0].key"),
        ({"locale": "xx_YY_ZZ"}, "profile.locale"),
        ({"timezone": "Mars/Olympus"}, "profile.timezone"),
        ({"colour": "blue"}, "profile.colour"),
    ],
)
def test_a_faulty_profile_names_its_field(api, market, fault, field):
    r = api.alice.put(f"/v1/users/{api.alice_id}/profiles/bad", json={"profile": fault})
    refused(r, field)
    assert api.alice.get(f"/v1/users/{api.alice_id}/profiles").json() == []


def test_a_statement_renders_with_any_profile_and_the_same_total(api, market):
    statement = closed(api, market)
    path = f"/v1/users/{api.alice_id}/profiles"
    api.alice.put(f"{path}/by-service", json={"profile": BY_SERVICE})
    api.alice.put(f"{path}/by-recipient", json={"profile": BY_RECIPIENT})
    render = f"/v1/statements/{statement['id']}/render"
    totals = []
    for profile in (None, "by-service", "by-recipient"):
        params = {"format": "json", **({"profile": profile} if profile else {})}
        r = api.alice.get(render, params=params)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        totals.append([(t["currency"], t["amount_minor"]) for t in r.json()["totals"]])
    assert totals == [[("EUR", 760)]] * 3
    german = api.alice.get(render, params={"profile": "by-service", "format": "text"}).text
    assert "7,60\xa0€" in german  # 760 minor units, de_DE
    page = api.alice.get(render, params={"profile": "by-recipient", "format": "html"})
    assert page.headers["content-type"].startswith("text/html") and "€7.60" in page.text
    pdf = api.alice.get(render, params={"format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", "-", "-"], input=pdf.content, capture_output=True, check=True
        ).stdout.decode()
        for amount in ("€5.00", "€2.60", "€7.60"):
            assert amount in text
    refused(api.alice.get(render, params={"profile": "nope"}), None, 404)
    refused(api.alice.get(render, params={"format": "docx"}), "format")
    refused(api.bob.get(render), None, 403)
    refused(api.north_key.get(render), None, 403)
