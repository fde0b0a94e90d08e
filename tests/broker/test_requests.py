"""Service requests: served at home or brokered; validation; members; idempotency; access."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from marketplace import HOUR, T0
from sqlalchemy import func, select

from broker.awards import list_jobs
from broker.errors import IdempotencyKeyReused, InvalidInput, NotFound, NotYours, WrongState
from broker.models import Award, DeliveryJob, ServiceRequest
from broker.requests import (
    cancel_request,
    committed_bps,
    eligible_providers,
    get_request,
    list_requests,
    submit_request,
)


def submit(world, who=None, **kw):
    actor = who or world.m.actor("device", world.alice_phone)
    kw.setdefault("services", "identity,checksum")
    if "volume_bytes" not in kw and "starts_at" not in kw:
        kw.update(starts_at=T0, ends_at=T0 + HOUR)
        kw.setdefault("max_rate_bps", 10_000_000)
    with world.m.store.write() as s:
        r = submit_request(s, actor, now=kw.pop("now", T0 - HOUR), **kw)
        return r.id, r.status, r.reason


def test_the_home_provider_serves_what_it_offers_and_has_room_for(world):
    rid, status, _ = submit(world)
    assert status == "served"
    with world.m.store.read() as s:
        award = s.scalar(select(Award).where(Award.request_id == rid))
        # 10 Mbit/s for an hour at 10 cents per Mbit/s-hour.
        assert (award.provider_id, award.source, award.price_minor) == (world.home, "home", 100)
        assert award.payers[0].user_id == world.alice and award.payers[0].share_minor == 100
        jobs = list_jobs(s, world.m.actor("provider", world.home), world.home)
        assert [j.award_id for j in jobs] == [award.id]
        assert jobs[0].spec["services"] == ["identity", "checksum"]
        assert jobs[0].spec["recipients"] == [{"kind": "device", "value": world.alice_phone}]


def test_a_missing_service_sends_the_request_to_other_networks(world):
    rid, status, reason = submit(world, services="anonymize,checksum")
    assert status == "brokering" and "does not offer anonymize" in reason
    with world.m.store.read() as s:
        others = eligible_providers(s, s.get(ServiceRequest, rid), now=T0 - HOUR)
        assert [p.id for p in others] == [world.north, world.south]


def test_capacity_already_promised_is_not_promised_twice(world):
    # home carries 100 Mbit/s; 60 + 60 overlapping does not fit, a later block does.
    assert submit(world, max_rate_bps=60_000_000)[1] == "served"
    _rid, status, reason = submit(
        world, max_rate_bps=60_000_000, starts_at=T0 + HOUR / 2, ends_at=T0 + 2 * HOUR
    )
    assert status == "brokering" and "40000000 bit/s spare" in reason
    assert (
        submit(world, max_rate_bps=60_000_000, starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR)[1]
        == "served"
    )
    with world.m.store.read() as s:
        # The two served blocks follow one another: at no instant do both run.
        assert committed_bps(s, world.home, T0, T0 + 2 * HOUR, T0) == 60_000_000
        assert committed_bps(s, world.home, T0 + 3 * HOUR, T0 + 4 * HOUR, T0) == 0


def test_a_volume_request_holds_capacity_until_delivered(world):
    assert submit(world, volume_bytes=10**9, max_rate_bps=90_000_000)[1] == "served"
    assert submit(world, max_rate_bps=20_000_000)[1] == "brokering"


def test_a_price_above_the_users_limit_is_brokered(world):
    _rid, status, reason = submit(world, max_price_minor=99)
    assert status == "brokering" and "asks 100, above the limit 99" in reason


def test_a_volume_is_priced_per_gigabyte(world):
    rid, _status, _ = submit(world, volume_bytes=2_500_000_001)
    with world.m.store.read() as s:
        assert s.scalar(select(Award.price_minor).where(Award.request_id == rid)) == 251


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"services": "teleport"}, "services"),
        ({"services": ""}, "services"),
        ({"volume_bytes": 10, "starts_at": T0, "ends_at": T0 + HOUR}, "volume_bytes"),
        ({"starts_at": T0, "ends_at": T0}, "ends_at"),
        ({"starts_at": T0, "ends_at": T0 + HOUR, "max_rate_bps": None}, "max_rate_bps"),
        ({"starts_at": datetime(2030, 1, 1), "ends_at": T0 + HOUR}, "starts_at"),
        (
            {"min_rate_bps": 5, "max_rate_bps": 4, "starts_at": T0, "ends_at": T0 + HOUR},
            "min_rate_bps",
        ),
        ({"volume_bytes": 0}, "volume_bytes"),
        ({"volume_bytes": 10, "data_cap_bytes": 5}, "data_cap_bytes"),
        ({"volume_bytes": 10, "max_price_minor": 1.5}, "max_price_minor"),
        ({"volume_bytes": 10, "currency": "XYZ"}, "currency"),
        ({"volume_bytes": 10, "members": [{"kind": "phone", "value": "123"}]}, "members[0]"),
        ({"volume_bytes": 10, "members": [{"kind": "pigeon", "value": 1}]}, "members[0]"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_stores_nothing(world, kw, field):
    with pytest.raises(InvalidInput) as err:
        submit(world, **kw)
    assert err.value.field == field
    with world.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(ServiceRequest)) == 0


def test_a_block_is_shared_by_phones_devices_and_users(world):
    phone = world.m.phone(world.bob, "+14155552671")
    members = [
        {"kind": "phone", "value": "+1 415 555 2671"},
        {"kind": "phone", "value": "+44 20 7946 0958"},
        {"kind": "device", "value": world.bob_phone},
        {"kind": "user", "value": world.bob},
        {"kind": "address", "value": "udp://198.51.100.7:9000"},
    ]
    rid, _status, _ = submit(world, members=members)
    with world.m.store.read() as s:
        request = s.get(ServiceRequest, rid)
        assert [m.describe() for m in request.members] == [
            {"kind": "phone", "value": "+14155552671"},
            {"kind": "phone", "value": "+442079460958"},
            {"kind": "device", "value": world.bob_phone},
            {"kind": "user", "value": world.bob},
            {"kind": "address", "value": "udp://198.51.100.7:9000"},
        ]
        assert request.members[0].phone_number_id == phone
        assert request.members[1].phone_number_id is None
        job = s.scalar(select(DeliveryJob))
        assert len(job.spec["recipients"]) == 5
    with pytest.raises(NotFound):
        submit(world, members=[{"kind": "device", "value": 999}])


def test_a_retry_with_the_same_key_does_not_request_twice(world):
    first = submit(world, idempotency_key="req-1")
    again = submit(world, idempotency_key="req-1")
    assert first == again
    with world.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(ServiceRequest)) == 1
        assert s.scalar(select(func.count()).select_from(Award)) == 1
    with pytest.raises(IdempotencyKeyReused) as err:
        submit(world, idempotency_key="req-1", max_rate_bps=1)
    assert err.value.http_status == 409
    # Keys are per caller: bob may use the same key for his own request.
    submit(world, who=world.m.actor("user", world.bob), idempotency_key="req-1")


def test_two_overlapping_first_calls_with_one_key_get_one_request(world):
    """The first call holds its transaction open after recording the key; the second starts
    meanwhile. SQLite makes the second wait for the first; PostgreSQL lets it run until its
    insert of the key waits on the first's, then rolls its savepoint back. Either way both
    callers get the first's request, and one request exists."""
    actor = world.m.actor("device", world.alice_phone)
    kw = dict(
        services="identity,checksum",
        starts_at=T0,
        ends_at=T0 + HOUR,
        max_rate_bps=10_000_000,
        now=T0 - HOUR,
        idempotency_key="same",
    )
    recorded, release, got = threading.Event(), threading.Event(), {}

    def first():
        with world.m.store.write() as s:
            got["first"] = submit_request(s, actor, **kw).id
            recorded.set()
            release.wait(30)

    def second():
        with world.m.store.write() as s:
            got["second"] = submit_request(s, actor, **kw).id

    a = threading.Thread(target=first)
    a.start()
    assert recorded.wait(30)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)  # it is waiting: on the write lock (SQLite) or on the key's index (PostgreSQL)
    assert b.is_alive()
    release.set()
    a.join(30)
    b.join(30)
    assert got["first"] == got["second"]
    with world.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(ServiceRequest)) == 1
        assert s.scalar(select(func.count()).select_from(Award)) == 1


def test_only_users_and_their_devices_request(world):
    with pytest.raises(NotYours):
        submit(world, who=world.m.actor("provider", world.north))
    with pytest.raises(NotYours):
        submit(world, who=world.m.actor("user", world.bob), device_id=world.alice_phone)


def test_a_user_cannot_read_another_users_requests(world):
    rid, _, _ = submit(world)
    m = world.m
    with m.store.read() as s:
        assert get_request(s, m.actor("user", world.alice), rid).id == rid
        assert get_request(s, m.actor("provider", world.home), rid).id == rid
        with pytest.raises(NotYours):
            get_request(s, m.actor("user", world.bob), rid)
        with pytest.raises(NotYours):
            get_request(s, m.actor("device", world.bob_phone), rid)
        with pytest.raises(NotYours):
            get_request(s, m.actor("provider", world.north), rid)
        assert list_requests(s, m.actor("user", world.bob)) == []
        assert [r.id for r in list_requests(s, m.actor("user", world.alice))] == [rid]


def test_only_a_pending_request_is_cancelled(world):
    rid, _status, _ = submit(world, services="anonymize")
    alice = world.m.actor("user", world.alice)
    with world.m.store.write() as s:
        assert cancel_request(s, alice, rid).status == "cancelled"
    with world.m.store.write() as s, pytest.raises(WrongState):
        cancel_request(s, alice, rid)


def test_a_retry_after_the_block_ended_still_finds_the_request(world):
    """The answer was lost and the retry comes late: the first call's request, not a 422 for a
    block that is over by now."""
    first = submit(world, idempotency_key="late", now=T0 - HOUR)
    assert submit(world, idempotency_key="late", now=T0 + 2 * HOUR) == first
    with world.m.store.read() as s:
        assert s.scalar(select(func.count()).select_from(ServiceRequest)) == 1
