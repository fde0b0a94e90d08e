"""Sealed service parameters over HTTP (issue 11): a provider publishes its daemons' sealing key;
a request names its secret parameters; its job waits until the requester posts the box sealed
to that key; the box goes to one caller only, the provider's claiming daemon that holds the
key, and is in no other answer; everyone else is refused as everywhere in the API."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from apiclient import provider_body, refused
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import update

from broker.models import Award
from engine.daemon.sealing import SealingKey, binding, seal

KEY_HEX = "5e" * 32


def fresh_key() -> SealingKey:
    return SealingKey(X25519PrivateKey.generate())


@pytest.fixture
def sealing(api):
    """Network "vault": provider ``vault`` (identity, encrypt, anonymize) with a key, user carol
    at home there with a key; the daemons' key pair of vault; provider ``north`` as the
    outsider."""
    a = api
    net = a.make("/v1/networks", {"name": "vault"})
    a.vault = a.make(
        "/v1/providers", provider_body(net, "vault", ("identity", "encrypt", "anonymize"))
    )
    a.vault_key = a.key("provider", a.vault)
    a.carol_id = a.make("/v1/users", {"name": "carol", "home_provider_id": a.vault})
    a.carol = a.key("user", a.carol_id)
    a.pair = fresh_key()
    r = a.vault_key.put(f"/v1/providers/{a.vault}/sealing-key", json={"public_key": a.pair.public})
    assert r.status_code == 200, r.text
    return a


def _request(a, **extra) -> tuple[dict, dict]:
    r = a.carol.post(
        "/v1/requests",
        json={
            "services": ["encrypt"],
            "volume_bytes": 10**6,
            "sealed_params": ["encrypt.key"],
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    request = r.json()
    assert request["status"] == "served" and request["sealed_params"] == ["encrypt.key"]
    award = next(
        w for w in a.carol.get("/v1/awards").json()["items"] if w["request_id"] == request["id"]
    )
    return request, award


def _claim(client, provider, **kw):
    return client.post(
        f"/v1/providers/{provider}/jobs/claim",
        json={"daemon": "node-1", "wait_s": 0, "lease_s": 30, **kw},
    )


def test_the_providers_key_is_published_by_its_own_key_and_replaced_only_on_purpose(sealing):
    a = sealing
    again = a.vault_key.put(
        f"/v1/providers/{a.vault}/sealing-key", json={"public_key": a.pair.public}
    )
    assert again.status_code == 200 and again.json()["fingerprint"] == a.pair.fingerprint
    other = fresh_key()
    clash = a.vault_key.put(
        f"/v1/providers/{a.vault}/sealing-key", json={"public_key": other.public}
    )
    refused(clash, "public_key", 409)
    assert a.pair.fingerprint in clash.json()["message"]
    assert (
        a.north_key.put(
            f"/v1/providers/{a.vault}/sealing-key", json={"public_key": other.public}
        ).status_code
        == 403
    )
    assert (
        a.carol.put(
            f"/v1/providers/{a.vault}/sealing-key", json={"public_key": other.public}
        ).status_code
        == 403
    )
    refused(
        a.vault_key.put(f"/v1/providers/{a.vault}/sealing-key", json={"public_key": "!" * 44}),
        "public_key",
    )
    assert a.carol.get(f"/v1/providers/{a.vault}/sealing-key").json()["public_key"] == a.pair.public
    assert a.carol.get(f"/v1/providers/{a.north}/sealing-key").status_code == 404
    rotated = a.vault_key.put(
        f"/v1/providers/{a.vault}/sealing-key", json={"public_key": other.public, "replace": True}
    )
    assert rotated.status_code == 200 and rotated.json()["public_key"] == other.public


def test_a_job_waits_for_its_box_which_reaches_only_the_daemon_holding_the_key(sealing):
    a = sealing
    request, award = _request(a)
    job = award["job"]["id"]
    spec = a.vault_key.get(f"/v1/jobs/{job}").json()["job"]["spec"]
    assert spec["sealed_params"] == ["encrypt.key"] and "sealed" not in spec
    # Not claimable before its box, with the key or without.
    assert _claim(a.vault_key, a.vault, sealing_key=a.pair.public).status_code == 204
    assert _claim(a.vault_key, a.vault).status_code == 204
    status = a.carol.get(f"/v1/awards/{award['id']}/sealed-params").json()
    assert status["names"] == ["encrypt.key"] and status["public_key"] == a.pair.public
    assert status["sealed"] is False and status["job_id"] == job
    # Parties see the status; others are refused.
    assert a.vault_key.get(f"/v1/awards/{award['id']}/sealed-params").status_code == 200
    for outsider in (a.north_key, a.bob, a.alice):
        assert outsider.get(f"/v1/awards/{award['id']}/sealed-params").status_code == 403

    box = seal(a.pair.public, {"encrypt.key": KEY_HEX}, binding(award["id"], a.vault))
    body = {"sealed_to": a.pair.public, "box": base64.b64encode(box).decode()}
    # Only the requester (or a payer) seals: not the delivering provider, not strangers.
    for other in (a.vault_key, a.north_key, a.bob, a.admin):
        assert other.put(f"/v1/awards/{award['id']}/sealed-params", json=body).status_code == 403
    stale = fresh_key().public
    refused(
        a.carol.put(f"/v1/awards/{award['id']}/sealed-params", json={**body, "sealed_to": stale}),
        "sealed_to",
        409,
    )
    refused(
        a.carol.put(f"/v1/awards/{award['id']}/sealed-params", json={**body, "box": "not base64!"}),
        "box",
    )
    put = a.carol.put(f"/v1/awards/{award['id']}/sealed-params", json=body)
    assert put.status_code == 200, put.text
    assert put.json()["sealed"] is True and put.json()["size"] == len(box)

    # A daemon without the key, and another provider, get nothing of it.
    assert _claim(a.vault_key, a.vault).status_code == 204
    assert _claim(a.vault_key, a.vault, sealing_key=stale).status_code == 204
    assert _claim(a.north_key, a.vault, sealing_key=a.pair.public).status_code == 403
    claimed = _claim(a.vault_key, a.vault, sealing_key=a.pair.public)
    assert claimed.status_code == 200, claimed.text
    sealed = claimed.json()["sealed"]
    assert sealed["names"] == ["encrypt.key"] and sealed["sealed_to"] == a.pair.public
    opened = a.pair.open(base64.b64decode(sealed["box"]), binding(award["id"], a.vault))
    assert opened == {"encrypt.key": KEY_HEX}
    # The box does not change under a daemon that holds the job.
    refused(a.carol.put(f"/v1/awards/{award['id']}/sealed-params", json=body), None, 409)

    # In no other answer, for anyone.
    b64 = body["box"]
    seen = []
    for client in (a.carol, a.vault_key, a.admin):
        for path in (
            f"/v1/jobs/{job}",
            f"/v1/awards/{award['id']}",
            "/v1/awards",
            f"/v1/requests/{request['id']}",
            f"/v1/awards/{award['id']}/sealed-params",
            f"/v1/jobs/{job}/usage",
        ):
            r = client.get(path)
            seen.append(r.status_code)
            assert b64 not in r.text and b64[:40] not in r.text and KEY_HEX not in r.text
    assert a.vault_key.get(f"/v1/providers/{a.vault}/jobs").text.count(b64[:40]) == 0
    assert 200 in seen
    for outsider in (a.north_key, a.bob):
        assert outsider.get(f"/v1/jobs/{job}").status_code == 403


def test_a_box_is_taken_only_for_a_request_that_named_sealed_parameters(sealing):
    a = sealing
    r = a.carol.post("/v1/requests", json={"services": ["encrypt"], "volume_bytes": 10**6})
    assert r.status_code == 201, r.text
    award = a.carol.get("/v1/awards").json()["items"][0]
    box = seal(a.pair.public, {"encrypt.key": KEY_HEX}, binding(award["id"], a.vault))
    refused(
        a.carol.put(
            f"/v1/awards/{award['id']}/sealed-params",
            json={"sealed_to": a.pair.public, "box": base64.b64encode(box).decode()},
        ),
        None,
        409,
    )
    # Its job is claimable at once, as before sealed parameters existed.
    assert _claim(a.vault_key, a.vault).status_code == 200


@pytest.mark.parametrize(
    "names, why",
    [
        (["encrypt.bind"], "no secret parameter"),
        (["anonymize.key"], "not in the chain"),
        (["encrypt"], "SERVICE.PARAM"),
        ("encrypt.key", "valid list"),
    ],
)
def test_sealed_parameter_names_are_checked_against_the_chain(sealing, names, why):
    r = sealing.carol.post(
        "/v1/requests",
        json={"services": ["encrypt"], "volume_bytes": 10**6, "sealed_params": names},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "sealed_params" and why in r.json()["message"]


def test_a_block_that_ends_before_its_box_arrives_expires(sealing, store):
    a = sealing
    start = datetime.now(UTC) + timedelta(minutes=5)
    _, award = _request(
        a,
        volume_bytes=None,
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(minutes=5)).isoformat(),
        max_rate_bps=1_000_000,
    )
    with store.write() as s:  # the block is over
        s.execute(
            update(Award)
            .where(Award.id == award["id"])
            .values(
                starts_at=datetime.now(UTC) - timedelta(minutes=10),
                ends_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    assert _claim(a.vault_key, a.vault, sealing_key=a.pair.public).status_code == 204
    job = a.carol.get(f"/v1/jobs/{award['job']['id']}").json()
    assert job["job"]["status"] == "failed"
    assert job["events"][-1]["event"] == "expire"
    assert "before its sealed parameters arrived" in job["events"][-1]["detail"]
