"""The console's delivery pages: an award's progress and throughput chart (live), the rating
form, a provider's reputation over time, statements and their PDF; each for the parties the
API shows them to."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from billing_world import award, publish_bytes_tariff, report
from console_client import Browser, field_errors
from fastapi.testclient import TestClient
from marketplace import T0
from sqlalchemy import select

from broker import statements
from broker.api import create_app
from broker.currency import Money
from broker.models import DeliveryJob, JobEvent, Rating


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _delivering(world) -> tuple[int, int]:
    """alice's award from north with two usage reports 10 s apart (1,000,000 then 3,500,000
    bytes out: 2 Mbit/s between them): (award id, job id)."""
    store, m = world.m.store, world.m
    publish_bytes_tariff(store, m, world.north, "anonymize", T0 - timedelta(days=1))
    job = award(store, m.actor("user", world.alice), world.north, price=500, at=T0)
    report(store, m, world.north, job, 1, 1_000_000, T0 + timedelta(seconds=10))
    report(store, m, world.north, job, 2, 3_500_000, T0 + timedelta(seconds=20))
    with store.read() as s:
        return s.get_one(DeliveryJob, job).award_id, job


def test_a_job_reported_once_at_its_end_still_shows_its_rate(app, keys, world):
    """A file's job is reported once, with its completion: its rate is drawn from the
    delivery's start (its ``start`` transition) at nothing delivered."""
    store, m = world.m.store, world.m
    publish_bytes_tariff(store, m, world.north, "anonymize", T0 - timedelta(days=1))
    job = award(store, m.actor("user", world.alice), world.north, price=500, at=T0)
    with store.write() as s:
        s.add(
            JobEvent(
                job_id=job,
                event="start",
                from_status="claimed",
                to_status="running",
                token=1,
                daemon="node-1",
                at=T0 + timedelta(seconds=5),
            )
        )
    report(store, m, world.north, job, 1, 2_500_000, T0 + timedelta(seconds=15))
    with store.read() as s:
        award_id = s.get_one(DeliveryJob, job).award_id
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    chart = alice.http.get(f"/awards/{award_id}/throughput.svg").text
    assert "10 seconds since the delivery started: 2" in chart  # 2,500,000 B in 10 s
    assert "no data yet" not in chart


def test_an_awards_page_shows_its_delivery_and_throughput_to_its_parties_only(app, keys, world):
    award_id, _ = _delivering(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get(f"/awards/{award_id}").text
    assert re.search(r'data-live="bytes_out">3,500,000<', page)
    assert re.search(r'data-live="reports">2<', page)
    assert "<td>10.0</td><td>2.000</td>" in page  # the chart's values as a table
    chart = alice.http.get(f"/awards/{award_id}/throughput.svg")
    assert chart.headers["content-type"].startswith("image/svg+xml")
    assert "<title" in chart.text and "10 seconds since the delivery started: 2" in chart.text
    for who, want in (("north", 200), ("home", 200), ("bob", 403), ("south", 403)):
        b = Browser(app)
        b.sign_in(keys[who])
        api = TestClient(app, headers={"Authorization": f"Bearer {keys[who]}"})
        assert api.get(f"/v1/awards/{award_id}").status_code == want, who
        assert b.http.get(f"/awards/{award_id}").status_code == want, who
        assert b.http.get(f"/awards/{award_id}/throughput.svg").status_code == want, who
        assert b.http.get(f"/awards/{award_id}/events").status_code == want, who


def test_a_new_usage_report_arrives_as_a_server_sent_event(app, keys, world):
    award_id, _ = _delivering(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    with alice.http.stream("GET", f"/awards/{award_id}/events") as stream:
        data = next(line for line in stream.iter_lines() if line.startswith("data:"))
    assert '"reports":2' in data.replace(" ", "") and '"bytes_out":3500000' in data.replace(" ", "")


def test_the_rating_form_rates_the_other_party_and_refuses_a_bad_score(app, keys, world, store):
    award_id, _ = _delivering(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    alice.get(f"/awards/{award_id}")
    refused = alice.post(f"/awards/{award_id}/rating", {"score": "101", "comment": ""})
    assert refused.status_code == 422 and "0 to 100" in field_errors(refused.text)["score"]
    assert (
        alice.post(f"/awards/{award_id}/rating", {"score": "90", "comment": "fine"}).status_code
        == 303
    )
    assert "Your rating: 90 of 100" in alice.get(f"/awards/{award_id}").text
    north = Browser(app)
    north.sign_in(keys["north"])
    north.get(f"/awards/{award_id}")
    assert north.post(f"/awards/{award_id}/rating", {"score": "70"}).status_code == 303
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    bob.get("/requests")
    assert bob.post(f"/awards/{award_id}/rating", {"score": "0"}).status_code == 403
    with store.read() as s:
        rows = s.execute(
            select(Rating.direction, Rating.user_id, Rating.score).where(
                Rating.award_id == award_id
            )
        ).all()
    assert sorted(rows) == [("payment", world.alice, 70), ("service", world.alice, 90)]


def test_a_providers_page_draws_its_reputation_week_by_week(app, keys, world, store):
    award_id, _ = _delivering(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    before = alice.get(f"/providers/{world.north}").text
    assert before.count("<td>0.500</td>") == 13  # no ratings: the prior, every week
    alice.get(f"/awards/{award_id}")
    alice.post(f"/awards/{award_id}/rating", {"score": "100"})
    after = alice.get(f"/providers/{world.north}").text
    assert after.count("<td>0.500</td>") == 12  # the weeks before the rating
    last = re.findall(r"<tr><td>0</td><td>([0-9.]+)</td></tr>", after)
    assert last and float(last[0]) > 0.5
    chart = alice.http.get(f"/providers/{world.north}/reputation.svg").text
    assert "reputation over 12 weeks" in chart and chart.count("<rect x=") == 13


def test_a_providers_page_draws_its_measured_delivery_week_by_week(app, keys, world, store):
    """Jobs judged two weeks ago (9 of 10 windows met) and this week (4 of 4, and one without
    windows) are drawn in their weeks; the weeks between have no point, and another
    provider's card has none of it."""
    from broker.clock import utcnow
    from broker.models import JobMeasurement

    store_, m = world.m.store, world.m
    publish_bytes_tariff(store_, m, world.north, "anonymize", T0 - timedelta(days=1))
    now = utcnow()
    judged = [
        (now - timedelta(weeks=2, hours=1), 10, 9, True),
        (now - timedelta(hours=1), 4, 4, True),
        (now - timedelta(hours=2), 0, 0, False),
    ]
    for at, windows, met, honoured in judged:
        job = award(store_, m.actor("user", world.alice), world.north, price=500, at=T0)
        with store.write() as s:
            s.add(
                JobMeasurement(
                    job_id=job,
                    provider_id=world.north,
                    outcome="done",
                    token=1,
                    bytes=1,
                    packets=1,
                    windows=windows,
                    windows_met=met,
                    errors=0,
                    honoured=honoured,
                    score_ppm=met * 1_000_000 // windows if windows else 1_000_000,
                    created_at=at,
                )
            )
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get(f"/providers/{world.north}").text
    table = page.split('data-testid="measured-history"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(-?\d+)</td><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>", table)
    assert len(rows) == 13
    by_week = {int(w): (int(jobs), met, kept) for w, jobs, met, kept in rows}
    assert by_week[-2] == (1, "9 of 10 (90.0%)", "1 of 1")
    assert by_week[0] == (2, "4 of 4 (100.0%)", "1 of 2")
    assert all(by_week[w][0] == 0 for w in by_week if w not in (-2, 0))
    chart = alice.http.get(f"/providers/{world.north}/measured.svg").text
    assert "-2 weeks from now: 0.9; 0 weeks from now: 1" in chart  # mean scores
    assert chart.count("<rect x=") == 2  # a marker for each week drawn
    assert ">-12</text>" in chart  # the axis spans the 12 weeks, gaps and all
    south = alice.http.get(f"/providers/{world.south}/measured.svg").text
    assert "no data yet" in south


def test_statements_are_listed_shown_by_profile_and_printed_for_their_user_only(
    app, keys, world, store
):
    _delivering(world)
    statements.close_period(
        store.write,
        world.m.actor("provider", world.home),
        world.home,
        "2030-01",
        now=datetime(2030, 2, 1, 1, tzinfo=UTC),
    )
    with store.read() as s:
        (listed,) = statements.list_statements(s, world.m.actor("user", world.alice))
        statement_id = listed.id
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    assert f'href="/statements/{statement_id}"' in alice.get("/statements").text
    page = alice.get(f"/statements/{statement_id}").text
    assert f"/statements/{statement_id}/document?format=pdf" in page
    html = alice.http.get(f"/statements/{statement_id}/document")
    assert (
        html.status_code == 200
        and "frame-ancestors 'self'" in html.headers["content-security-policy"]
    )
    pdf = alice.http.get(f"/statements/{statement_id}/document?format=pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    bob = Browser(app)
    bob.sign_in(keys["bob"])
    assert f'href="/statements/{statement_id}"' not in bob.get("/statements").text
    for path in (f"/statements/{statement_id}", f"/statements/{statement_id}/document"):
        assert bob.http.get(path).status_code == 403


def test_a_negotiation_opened_countered_and_accepted_in_the_console(app, keys, world):
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    start = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    made = alice.post(
        "/requests/new",
        {
            "services": "anonymize",
            "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "max_rate": "10",
        },
    )
    request_path = made.headers["location"]
    page = alice.get(request_path).text
    assert f'<option value="{world.north}"' in page  # a candidate of another network
    terms = {"provider_id": str(world.north), "mode": "user", "deadline_in": "60"}
    refused = alice.post(f"{request_path}/negotiation", {**terms, "opening_price": "1.234"})
    assert refused.status_code == 422
    assert "at most 2 decimal" in field_errors(refused.text)["opening_price"]
    opened = alice.post(f"{request_path}/negotiation", terms)
    assert opened.status_code == 303
    path = opened.headers["location"]
    alice.get(path)
    assert alice.post(f"{path}/moves", {"action": "offer", "price": "0.50"}).status_code == 303
    page = alice.get(path).text
    moves = re.findall(r"<li>Round \d+: the (\w+) \((\w+)\) offered <strong>([^<]+)</strong>", page)
    assert ("buyer", "user", "0.50 EUR") in moves
    assert moves[-1][0] == "seller"  # the provider's price policy answered at once
    assert "Accept " + moves[-1][2] in page
    assert alice.post(f"{path}/moves", {"action": "accept"}).status_code == 303
    done = alice.get(path).text
    assert "agreed" in done and f"Agreed price</dt><dd>{moves[-1][2]}" in done
    assert 'status-awarded">awarded<' in alice.get(request_path).text
    # Parties only, as the API: bob and south are refused, north (the seller) sees it.
    negotiation_id = path.rsplit("/", 1)[1]
    for who, want in (("bob", 403), ("south", 403), ("north", 200), ("home", 200)):
        b = Browser(app)
        b.sign_in(keys[who])
        api = TestClient(app, headers={"Authorization": f"Bearer {keys[who]}"})
        assert api.get(f"/v1/negotiations/{negotiation_id}").status_code == want, who
        assert b.http.get(path).status_code == want, who
        assert (f'href="{path}"' in b.get("/negotiations").text) == (want == 200), who


def test_the_account_page_shows_the_apis_credit_decision(app, keys, world):
    _delivering(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    page = alice.get("/account").text
    api = TestClient(app, headers={"Authorization": f"Bearer {keys['alice']}"})
    now = api.get(f"/v1/users/{world.alice}/credit").json()
    shown = re.search(r'data-testid="credit">(.*?)</dl>', page, re.S).group(1)
    limit = Money(now["limit_minor"], now["currency"])
    owed = Money(now["owed_minor"], now["currency"])
    assert f"<dt>Limit</dt><dd>{limit}</dd>" in shown and f"<dt>Owed</dt><dd>{owed}</dd>" in shown
    assert f"<dt>Score</dt><dd>{now['score']}</dd>" in shown
    north = Browser(app)
    north.sign_in(keys["north"])
    assert north.http.get("/account").status_code == 403


def test_lists_name_the_providers_they_link(app, keys, world, store):
    """Awards, a request's page and the jobs list show a provider's name, not its id."""
    award_id, _ = _delivering(world)
    alice = Browser(app)
    alice.sign_in(keys["alice"])
    awards = alice.get("/awards").text
    assert f'<a href="/providers/{world.north}">north</a>' in awards
    request_id = int(re.search(r'href="/requests/(\d+)"', alice.get(f"/awards/{award_id}").text)[1])
    page = alice.get(f"/requests/{request_id}").text
    assert f'<a href="/providers/{world.home}">home</a>' in page
    assert f'<a href="/providers/{world.north}">north</a>' in page
    north = Browser(app)
    north.sign_in(keys["north"])
    jobs = north.get("/awards").text.split("Delivery jobs", 1)[1]
    assert "<td>north</td>" in jobs
