"""The statement of the period under way in the console (``/statements/current``): what the
API's ``/v1/users/{id}/statements/current`` holds, laid out, as PDF and as charts; to whom the
API shows it, and refused as the API refuses."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from billing_world import award, publish_bytes_tariff, report
from console_client import Browser
from fastapi.testclient import TestClient

from broker.api import create_app
from broker.clock import utcnow
from broker.currency import Money


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _charged(world) -> None:
    """alice's award from north at 5.00 EUR and 2,000,000 bytes reported a minute ago, in the
    period under way: on no statement yet."""
    store, m = world.m.store, world.m
    now = utcnow()
    publish_bytes_tariff(store, m, world.north, "anonymize", now - timedelta(days=1))
    job = award(
        store, m.actor("user", world.alice), world.north, price=500, at=now - timedelta(minutes=2)
    )
    report(store, m, world.north, job, 1, 2_000_000, now - timedelta(minutes=1))


def _signed(app, token: str) -> Browser:
    b = Browser(app)
    b.sign_in(token)
    return b


def test_a_users_statement_so_far_is_the_apis_laid_out_with_its_pdf_and_charts(app, keys, world):
    _charged(world)
    api = TestClient(app, headers={"Authorization": f"Bearer {keys['alice']}"})
    draft = api.get(f"/v1/users/{world.alice}/statements/current").json()
    ((currency, total),) = draft["totals"].items()
    assert total > 500  # the price and the bytes
    alice = _signed(app, keys["alice"])
    assert 'href="/statements/current"' in alice.get("/statements").text
    page = alice.get("/statements/current").text
    summary = re.search(r'data-testid="current-summary">(.*?)</p>', page, re.S).group(1)
    assert str(Money(total, currency)) in summary and f"({len(draft['lines'])} lines)" in summary
    assert draft["period"] in page
    assert 'name="profile"' not in page  # no profile saved: nothing to choose from
    saved = api.put(
        f"/v1/users/{world.alice}/profiles/by-provider",
        json={"profile": {"group_by": ["provider"]}, "default": False},
    )
    assert saved.status_code in (200, 201), saved.text
    page = alice.get("/statements/current?profile=by-provider").text
    assert '<option value="by-provider" selected>by-provider</option>' in page
    assert "profile=by-provider&amp;format=pdf" in page  # the PDF laid out the same way
    by_provider = page.split('data-testid="charges-by-provider"', 1)[1].split("</table>", 1)[0]
    assert "north" in by_provider and str(Money(total, currency)) in by_provider
    pdf = alice.http.get("/statements/current/document?format=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"
    html = alice.http.get("/statements/current/document").text
    assert html == api.get(f"/v1/users/{world.alice}/statements/current/render").text
    chart = alice.http.get("/statements/current/charges.svg?by=provider").text
    assert chart.startswith("<svg") and f"north: {Money(total, currency)}" in chart


@pytest.mark.parametrize("who", ["alice", "home", "admin", "bob", "north", "south"])
def test_a_users_statement_so_far_is_shown_to_whom_the_api_shows_it(app, keys, world, who):
    _charged(world)
    api = TestClient(app, headers={"Authorization": f"Bearer {keys[who]}"})
    want = api.get(f"/v1/users/{world.alice}/statements/current").status_code
    assert want == (200 if who in ("alice", "home", "admin") else 403)
    console = _signed(app, keys[who])
    for path in ("", "/document", "/document?format=pdf", "/charges.svg"):
        got = console.http.get(f"/statements/current{path}", params={"user": world.alice})
        assert got.status_code == want, (who, path)
        if want == 403:
            assert "5.00 EUR" not in got.text and "%PDF" not in got.text


def test_a_provider_names_the_user_and_bad_names_are_refused_not_crashed(app, keys, world):
    _charged(world)
    home = _signed(app, keys["home"])
    assert 'data-testid="current-form"' in home.get("/statements").text
    refused = home.http.get("/statements/current")
    assert refused.status_code == 422 and "name one" in refused.text
    assert home.http.get("/statements/current?user=99999").status_code == 404
    for bad in ("0", "-1", str(2**64), "x"):
        assert home.http.get(f"/statements/current?user={bad}").status_code == 400, bad
    page = home.get(f"/statements/current?user={world.alice}").text
    assert f"user={world.alice}&amp;format=pdf" in page  # the links keep the user
