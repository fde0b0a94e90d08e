"""Participants and their keys: validation, uniqueness, hashing, who may do what."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from broker.actors import Actor, actor_for, authenticate, issue_key, revoke_key
from broker.directory import (
    add_device,
    add_phone_number,
    create_network,
    create_provider,
    create_user,
    parse_e164,
    update_provider,
)
from broker.errors import AlreadyExists, InvalidInput, NotAuthenticated, NotFound, NotYours
from broker.models import ApiKey


def test_phone_numbers_are_stored_in_e164(world):
    m = world.m
    phone = m.phone(world.alice, "+44 20 7946 0958", device_id=world.alice_phone)
    with m.store.read() as s:
        from broker.models import PhoneNumber

        assert s.get(PhoneNumber, phone).e164 == "+442079460958"
    assert parse_e164("030 12345678", "DE") == "+493012345678"


@pytest.mark.parametrize("number", ["12345", "+1 555 0100", "not a number", "+99 123"])
def test_invalid_phone_numbers_are_refused_naming_the_field(number):
    with pytest.raises(InvalidInput) as err:
        parse_e164(number)
    assert err.value.field == "number" and err.value.http_status == 422


def test_a_phone_number_is_registered_once(world):
    world.m.phone(world.alice, "+14155552671")
    with pytest.raises(AlreadyExists):
        world.m.phone(world.bob, "+1 415 555 2671")


def test_a_device_of_another_user_cannot_carry_ones_number(world):
    with pytest.raises(NotYours):
        world.m.phone(world.alice, "+14155552671", device_id=world.bob_phone)


def test_names_are_unique_and_checked(world):
    with pytest.raises(AlreadyExists, match="network 'home-net' exists"):
        world.m.network("home-net")
    with pytest.raises(InvalidInput) as err:
        world.m.network("  ")
    assert err.value.field == "name"


def test_provider_offer_is_validated(market):
    net = market.network("n")
    with pytest.raises(InvalidInput, match="unknown service") as err:
        market.provider(net, "p", services=("teleport",))
    assert err.value.field == "services"
    with pytest.raises(InvalidInput) as err:
        market.provider(net, "p", currency="EURO")
    assert err.value.field == "currency"
    with pytest.raises(InvalidInput) as err:
        market.provider(net, "p", per_gb=1.5)
    assert err.value.field == "per_gb_minor"


def test_only_an_admin_creates_networks(world):
    alice = world.m.actor("user", world.alice)
    with world.m.store.write() as s, pytest.raises(NotYours):
        create_network(s, alice, "mine")


def test_a_network_adds_providers_only_to_itself(world):
    north = world.m.actor("network", world.north_net)
    with world.m.store.write() as s:
        p = create_provider(
            s,
            north,
            network_id=world.north_net,
            name="north-2",
            services="identity",
            capacity_bps=1,
            currency="EUR",
            per_gb_minor=1,
            per_mbps_hour_minor=1,
        )
        assert p.network_id == world.north_net
    with world.m.store.write() as s, pytest.raises(NotYours):
        create_provider(
            s,
            north,
            network_id=world.south_net,
            name="spy",
            services="identity",
            capacity_bps=1,
            currency="EUR",
            per_gb_minor=1,
            per_mbps_hour_minor=1,
        )


def test_a_provider_onboards_its_customers_and_changes_its_offer(world):
    home = world.m.actor("provider", world.home)
    with world.m.store.write() as s:
        carol = create_user(s, home, name="carol", home_provider_id=world.home)
        assert carol.home_provider_id == world.home
        with pytest.raises(NotYours):
            create_user(s, home, name="dave", home_provider_id=world.north)
        p = update_provider(
            s, home, world.home, services="identity,inspect", per_gb_minor=7, mode="manual"
        )
        assert p.service_names == ("identity", "inspect") and p.policy.per_gb_minor == 7
        with pytest.raises(InvalidInput):
            update_provider(s, home, world.home, colour="blue")
        with pytest.raises(NotYours):
            update_provider(s, home, world.north, capacity_bps=1)


def test_a_user_adds_its_own_devices_only(world):
    alice = world.m.actor("user", world.alice)
    with world.m.store.write() as s:
        assert add_device(s, alice, user_id=world.alice, name="laptop").user_id == world.alice
        with pytest.raises(NotYours):
            add_device(s, alice, user_id=world.bob, name="laptop")
        with pytest.raises(NotFound):
            add_device(s, world.m.admin, user_id=999, name="x")
        with pytest.raises(AlreadyExists):
            add_device(s, alice, user_id=world.alice, name="laptop")
        add_phone_number(s, alice, user_id=world.alice, number="+33 1 42 68 53 00")


def test_keys_are_stored_hashed_and_authenticate(world):
    m = world.m
    with m.store.write() as s:
        key, token = issue_key(s, m.admin, "device", world.alice_phone, "alice's phone")
        prefix = key.prefix
    assert token.startswith(f"pktx_{prefix}_")
    with m.store.read() as s:
        stored = s.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        assert token not in (stored.secret_sha256, stored.prefix, stored.label)
        actor = authenticate(s, token)
    assert actor == Actor(
        "device", world.alice_phone, user_id=world.alice, device_id=world.alice_phone
    )
    with m.store.read() as s:
        for bad in (
            None,
            "",
            "pktx_nope",
            token[:-1] + ("A" if token[-1] != "A" else "B"),
            f"pktx_{'0' * 12}_secret",
        ):
            with pytest.raises(NotAuthenticated):
                authenticate(s, bad)
    with m.store.write() as s:
        revoke_key(s, m.actor("user", world.alice), prefix)
    with m.store.read() as s, pytest.raises(NotAuthenticated, match="revoked"):
        authenticate(s, token)


def test_who_may_issue_keys(world):
    m = world.m
    alice, north = m.actor("user", world.alice), m.actor("network", world.north_net)
    with m.store.write() as s:
        issue_key(s, alice, "device", world.alice_phone)
        issue_key(s, north, "provider", world.north)
        with pytest.raises(NotYours):
            issue_key(s, alice, "device", world.bob_phone)
        with pytest.raises(NotYours):
            issue_key(s, north, "provider", world.south)
        with pytest.raises(NotYours):
            issue_key(s, alice, "admin", m.admin.id)
        with pytest.raises(InvalidInput):
            issue_key(s, m.admin, "martian", 1)


def test_a_network_key_speaks_for_all_its_providers(world):
    north = world.m.actor("network", world.north_net)
    assert north.speaks_for_provider(world.north)
    assert not north.speaks_for_provider(world.south)


def test_a_key_authenticates_as_its_principal_of_every_kind(world):
    """`authenticate` reads the principal in the key's own query; it must come out as the
    actor `actor_for` makes of it."""
    m = world.m
    phone = m.phone(world.alice, "+14155552671", device_id=world.alice_phone)
    bare_phone = m.phone(world.bob, "+14155552672")
    principals = [
        ("admin", m.admin.id),
        ("network", world.north_net),
        ("provider", world.south),
        ("user", world.bob),
        ("device", world.alice_phone),
        ("phone_number", phone),
        ("phone_number", bare_phone),
    ]
    with m.store.write() as s:
        tokens = [issue_key(s, m.admin, kind, ident)[1] for kind, ident in principals]
    with m.store.read() as s:
        for (kind, ident), token in zip(principals, tokens):
            assert authenticate(s, token) == actor_for(s, kind, ident)
