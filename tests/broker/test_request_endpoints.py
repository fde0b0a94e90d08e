"""A request names where its stream comes from and goes to; the award's job carries them to
the delivering provider's daemon. Bad endpoints are refused naming the field, nothing written;
bidders in the auction never see them."""

from __future__ import annotations

import pytest
from apiclient import block, refused
from sqlalchemy import func, select

from broker.endpoints import check_endpoint
from broker.errors import InvalidInput
from broker.models import ServiceRequest


@pytest.mark.parametrize(
    "good",
    [
        "udp://10.0.0.7:9000",
        "zmq://recipient.example:7000",
        "zmq://[::1]:7000",
        "iface:eth0",
        "iface:veth1?snaplen=96",
        "in.pcap",
        "jobs/demo/out.pcapng",
    ],
)
def test_good_endpoints(good):
    assert check_endpoint(good, field="sink") == good


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "../x.pcap",
        "a/../../b",
        "http://x:80",
        "udp://host",
        "udp://host:0",
        "udp://host:70000",
        "iface:name-longer-than-15",
        "file://x",
        "a b.pcap",
        "",
        "zmq://ho st:1",
    ],
)
def test_bad_endpoints(bad):
    with pytest.raises(InvalidInput) as caught:
        check_endpoint(bad, field="source")
    assert caught.value.field == "source"


def test_the_job_spec_carries_the_endpoints_and_the_bidders_do_not_see_them(api, market):
    body = block(source="udp://10.1.2.3:9000", sink="zmq://10.9.8.7:7000")
    r = api.alice.post("/v1/requests", json=body)
    assert r.status_code == 201, r.text
    request = r.json()
    assert (request["source"], request["sink"]) == ("udp://10.1.2.3:9000", "zmq://10.9.8.7:7000")
    assert request["status"] == "brokering"  # anonymize is not offered at home
    auction = api.alice.post(
        "/v1/auctions",
        json={
            "request_id": request["id"],
            "closes_at": body["starts_at"],
            "reserve_price_minor": 100_000,
        },
    )
    assert auction.status_code == 201, auction.text
    seen = api.north_key.get(f"/v1/auctions/{auction.json()['id']}").text
    assert "10.1.2.3" not in seen and "10.9.8.7" not in seen
    before = _requests(market)
    refused(api.alice.post("/v1/requests", json=block(sink="/etc/cron.d/x")), "sink")
    refused(api.alice.post("/v1/requests", json=block(source="udp://host")), "source")
    assert _requests(market) == before


def test_an_award_queues_a_job_whose_spec_names_the_endpoints(world, store):
    from billing_world import VOLUME

    from broker.awards import make_award
    from broker.models import DeliveryJob
    from broker.requests import submit_request

    with store.write() as s:
        r = submit_request(
            s,
            world.m.actor("device", world.alice_phone),
            services="anonymize",
            volume_bytes=VOLUME,
            source="in.pcap",
            sink="out/alice.pcap",
        )
        s.flush()
        make_award(
            s, s.get(ServiceRequest, r.id), world.north, 500, source="auction", now=r.created_at
        )
        spec = s.scalar(select(DeliveryJob.spec).order_by(DeliveryJob.id.desc()).limit(1))
    assert (spec["source"], spec["sink"]) == ("in.pcap", "out/alice.pcap")


def _requests(market) -> int:
    with market.store.read() as s:
        return s.scalar(select(func.count()).select_from(ServiceRequest))
