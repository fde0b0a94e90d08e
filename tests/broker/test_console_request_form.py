"""The console's new-request form takes what the API takes: a data cap, a group request,
the stream's source and sink, sealed parameter names; each refusal beside its field, what was
typed kept (on SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from console_client import Browser, field_errors

from broker.api import create_app
from broker.models import ServiceRequest


@pytest.fixture
def app(store):
    return create_app(store, expire_every=None, event_stream_seconds=1.0, event_poll_seconds=0.1)


def _block(**extra: str) -> dict:
    start = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    return {
        "services": "encrypt",
        "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
        "ends_at": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "max_rate": "10",
        **extra,
    }


@pytest.fixture
def alice(app, keys):
    b = Browser(app)
    b.sign_in(keys["alice"])
    b.get("/requests/new")
    return b


def test_the_form_offers_every_field_the_api_takes(alice):
    page = alice.get("/requests/new").text
    for name in ("data_cap", "group", "source", "sink", "sealed_params"):
        assert f'id="{name}"' in page and f'for="{name}"' in page, name


def test_a_request_with_cap_endpoints_and_sealed_params_is_made_as_the_api_makes_it(alice, store):
    sent = _block(
        data_cap="5000000",
        source="udp://198.51.100.7:9000",
        sink="zmq://203.0.113.5:5555",
        sealed_params="encrypt.key",
    )
    answer = alice.post("/requests/new", sent)
    assert answer.status_code == 303, field_errors(answer.text)
    made = int(answer.headers["location"].rsplit("/", 1)[1])
    with store.read() as s:
        r = s.get_one(ServiceRequest, made)
        assert (r.data_cap_bytes, r.source, r.sink, r.sealed_params) == (
            5_000_000,
            "udp://198.51.100.7:9000",
            "zmq://203.0.113.5:5555",
            "encrypt.key",
        )
    page = alice.get(answer.headers["location"]).text
    assert "5,000,000 bytes" in page and "udp://198.51.100.7:9000" in page
    assert "encrypt.key" in page


def test_a_group_request_waits_for_pledges(alice, store):
    answer = alice.post("/requests/new", _block(services="anonymize", group="yes"))
    assert answer.status_code == 303, field_errors(answer.text)
    made = int(answer.headers["location"].rsplit("/", 1)[1])
    with store.read() as s:
        assert s.get_one(ServiceRequest, made).status == "pledging"


@pytest.mark.parametrize(
    ("extra", "field", "said"),
    [
        ({"source": "udp://198.51.100.7:99999"}, "source", "the port is 1..65535"),
        ({"sink": "ftp://nowhere"}, "sink", "ftp://nowhere"),
        ({"sealed_params": "encrypt.nokey"}, "sealed_params", "no secret parameter"),
        ({"sealed_params": "anonymize.key"}, "sealed_params", "not in the chain"),
        ({"data_cap": "lots"}, "data_cap", "a whole number"),
    ],
)
def test_a_refused_value_is_shown_beside_its_field_and_the_typed_values_kept(
    alice, store, extra, field, said
):
    sent = _block(**{"source": "udp://198.51.100.7:9000", "sealed_params": "encrypt.key", **extra})
    answer = alice.post("/requests/new", sent)
    assert answer.status_code == 422
    errors = field_errors(answer.text)
    assert list(errors) == [field] and said in errors[field], errors
    for name in ("source", "sealed_params", "data_cap", "sink"):
        if name in sent:
            assert f'value="{sent[name]}"' in answer.text, name
    with store.read() as s:
        assert s.query(ServiceRequest).count() == 0


def test_a_data_cap_on_a_volume_is_refused_beside_the_cap(alice):
    sent = {"services": "anonymize", "volume_bytes": "1000000", "data_cap": "5000"}
    answer = alice.post("/requests/new", sent)
    assert answer.status_code == 422
    assert "data cap applies to a block" in field_errors(answer.text)["data_cap"]


def test_a_group_request_takes_pledges_and_the_organizer_closes_them(app, alice, keys, world):
    members = f"user {world.alice}\nuser {world.bob}"
    sent = _block(services="anonymize", group="yes", max_price="40.00", members=members)
    answer = alice.post("/requests/new", sent)
    assert answer.status_code == 303, field_errors(answer.text)
    page = alice.get(answer.headers["location"]).text
    found = re.search(r'href="/groups/(\d+)"', page)
    assert found
    group = f"/groups/{found.group(1)}"
    page = alice.get(group).text
    assert "Close pledging" in page and 'id="max"' in page
    refused = alice.post(f"{group}/pledge", {"max": "1.234"})
    assert refused.status_code == 422 and "decimal" in field_errors(refused.text)["max"]
    assert 'value="1.234"' in refused.text
    assert alice.post(f"{group}/pledge", {"max": "12.50"}, csrf="forged").status_code == 403
    assert alice.post(f"{group}/pledge", {"max": "12.50"}).status_code == 303
    assert "12.50" in alice.get(group).text
    stranger = Browser(app)
    stranger.sign_in(keys["north"])
    assert stranger.get(group).status_code == 403  # the API's group_view refuses it too
    closed = alice.post(f"{group}/close", {})
    assert closed.status_code == 303 and closed.headers["location"].startswith("/requests/")
