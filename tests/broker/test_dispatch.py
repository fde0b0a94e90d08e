"""Dispatch over HTTP (issue 11): daemons claim jobs under leases with fencing tokens, every
transition is recorded, a stale token writes nothing, and the measured delivery is kept."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
from apiclient import refused, volume_job
from sqlalchemy import func, select, update

from broker.models import DeliveryJob, UsageReport

MEASURED = {"bytes": 10**9, "packets": 700_000, "windows": 100, "windows_met": 98, "errors": 0}


def claim(client: httpx.Client, provider: int, daemon: str, **kw) -> httpx.Response:
    return client.post(
        f"/v1/providers/{provider}/jobs/claim",
        json={"daemon": daemon, "wait_s": 0, "lease_s": 30, **kw},
    )


def post(
    client: httpx.Client, job: int, action: str, key: str | None = None, **body
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/v1/jobs/{job}/{action}", json=body, headers=headers)


def report(
    client: httpx.Client, job: int, sequence: int, token: int | None, **counters
) -> httpx.Response:
    return client.post(
        f"/v1/jobs/{job}/usage", json={"sequence": sequence, "token": token, **counters}
    )


def events(api, job: int) -> list[tuple]:
    r = api.home_key.get(f"/v1/jobs/{job}")
    assert r.status_code == 200, r.text
    return [
        (e["event"], e["from_status"], e["to_status"], e["token"], e["daemon"])
        for e in r.json()["events"]
    ]


def lapse(store, job: int) -> None:
    """The job's lease ran out a second ago (as after a daemon's long pause)."""
    with store.write() as s:
        s.execute(
            update(DeliveryJob)
            .where(DeliveryJob.id == job)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def token_of(client: httpx.Client) -> str:
    return client.headers["Authorization"].split(" ", 1)[1]


def test_a_daemon_claims_renews_starts_reports_and_completes_a_job(api):
    job = volume_job(api)
    r = claim(api.home_key, api.home, "node-1", lease_s=60)
    assert r.status_code == 200, r.text
    claimed = r.json()
    assert claimed["job"]["id"] == job and claimed["job"]["status"] == "claimed"
    assert claimed["token"] == claimed["job"]["token"] == 1
    assert claimed["job"]["daemon"] == "node-1"
    assert claimed["reported"]["sequence"] == 0 and claimed["reported"]["bytes_out"] == 0
    assert claimed["job"]["spec"]["volume_bytes"] == 10**9
    beat = post(api.home_key, job, "heartbeat", token=1, lease_s=120)
    assert beat.status_code == 200, beat.text
    assert beat.json()["cancelled"] is False and beat.json()["status"] == "claimed"
    assert beat.json()["lease_expires_at"] > claimed["lease_expires_at"]
    assert "max_rate_bps" in beat.json() and "min_rate_bps" in beat.json()
    assert post(api.home_key, job, "start", token=1).json()["status"] == "running"
    assert report(api.home_key, job, 1, 1, bytes_out=MEASURED["bytes"]).status_code == 201
    done = post(api.home_key, job, "complete", "c1", token=1, measured=MEASURED)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done"
    # A retry after a lost answer: the same answer, with the key or without it.
    assert (
        post(api.home_key, job, "complete", "c1", token=1, measured=MEASURED).json() == done.json()
    )
    assert post(api.home_key, job, "complete", token=1, measured=MEASURED).json() == done.json()
    award = api.alice.get("/v1/awards").json()["items"][0]
    assert award["status"] == "delivered"
    assert events(api, job) == [
        ("claim", "queued", "claimed", 1, "node-1"),
        ("start", "claimed", "running", 1, "node-1"),
        ("complete", "running", "done", 1, "node-1"),
    ]
    detail = api.alice.get(f"/v1/jobs/{job}").json()  # the award's parties read it
    assert detail["measured"]["windows_met_share"] == 0.98
    assert detail["measured"]["block_honoured"] is True and detail["measured"]["score"] == 0.98
    assert claim(api.home_key, api.home, "node-1").status_code == 204
    refused(post(api.home_key, job, "heartbeat", token=1), None, 409)  # done: nothing to renew
    refused(post(api.home_key, job, "start", token=1), None, 409)


def test_a_final_report_goes_with_the_completion_in_one_call_both_or_neither(api):
    """``complete`` with ``report``: the report taken in and the job done in one transaction;
    sent again, the same answer and the report not counted twice; a report the broker refuses
    (counters going down) or a stale token leaves the job running and nothing stored."""
    job = volume_job(api)
    assert claim(api.home_key, api.home, "node-1").status_code == 200
    assert post(api.home_key, job, "start", token=1).status_code == 200
    assert report(api.home_key, job, 1, 1, bytes_out=100, packets_out=1).status_code == 201
    below = post(
        api.home_key,
        job,
        "complete",
        token=1,
        measured=MEASURED,
        report={"sequence": 2, "bytes_out": 50, "packets_out": 1},
    )
    refused(below, "bytes_out")
    refused(
        post(
            api.home_key,
            job,
            "complete",
            token=1,
            measured=MEASURED,
            report={"sequence": 2, "bytes_out": 200, "token": 9},
        ),
        "report.token",
    )
    refused(
        post(
            api.home_key,
            job,
            "complete",
            token=2,
            measured=MEASURED,
            report={"sequence": 2, "bytes_out": 200},
        ),
        None,
        409,
    )
    usage = api.home_key.get(f"/v1/jobs/{job}/usage").json()
    assert (usage["status"], usage["reports"], usage["bytes_out"]) == ("running", 1, 100)
    final = {"sequence": 2, "bytes_out": MEASURED["bytes"], "packets_out": MEASURED["packets"]}
    done = post(api.home_key, job, "complete", "c1", token=1, measured=MEASURED, report=final)
    assert done.status_code == 200 and done.json()["status"] == "done", done.text
    again = post(api.home_key, job, "complete", token=1, measured=MEASURED, report=final)
    assert again.json() == done.json()
    assert (
        report(
            api.home_key, job, 2, 1, **{k: v for k, v in final.items() if k != "sequence"}
        ).status_code
        == 200
    )
    usage = api.home_key.get(f"/v1/jobs/{job}/usage").json()
    assert (usage["reports"], usage["last_sequence"], usage["bytes_out"]) == (
        2,
        2,
        MEASURED["bytes"],
    )
    assert [e[0] for e in events(api, job)] == ["claim", "start", "complete"]


def test_the_measured_record_is_on_the_providers_card(api):
    before = api.alice.get(f"/v1/providers/{api.home}").json()["delivery"]
    assert before["jobs"] == 0 and before["summary"] == "no measured deliveries yet"
    for windows_met, action in ((98, "complete"), (100, "complete"), (0, "fail")):
        job = volume_job(api)
        token = claim(api.home_key, api.home, "node-1").json()["token"]
        extra = {"error": "the sink went away"} if action == "fail" else {}
        r = post(
            api.home_key,
            job,
            action,
            token=token,
            measured={**MEASURED, "windows_met": windows_met},
            **extra,
        )
        assert r.status_code == 200, r.text
    card = api.bob.get(f"/v1/providers/{api.home}").json()["delivery"]
    assert card["jobs"] == 3 and card["windows"] == 300 and card["windows_met"] == 198
    assert card["windows_met_share"] == 0.66
    assert card["failed_share"] == round(1 / 3, 6)
    assert card["summary"].startswith("met its minimum rate in 66.0% of windows over 3 jobs")


def test_a_provider_key_cannot_claim_or_move_another_providers_jobs(api):
    job = volume_job(api)
    refused(claim(api.north_key, api.home, "node-x"), None, 403)
    refused(claim(api.alice, api.home, "node-x"), None, 403)
    assert claim(api.home_key, api.home, "node-1").status_code == 200
    for action, body in (
        ("heartbeat", {}),
        ("start", {}),
        ("handback", {}),
        ("complete", {"measured": MEASURED}),
    ):
        refused(post(api.north_key, job, action, token=1, **body), None, 403)
    refused(report(api.north_key, job, 1, 1, bytes_out=5), None, 403)
    refused(api.north_key.get(f"/v1/jobs/{job}"), None, 403)


def test_bad_claims_are_refused_naming_the_field(api):
    for body, field in (
        ({"lease_s": 4}, "lease_s"),
        ({"lease_s": 301}, "lease_s"),
        ({"wait_s": 31}, "wait_s"),
        ({"daemon": ""}, "daemon"),
    ):
        r = api.home_key.post(
            f"/v1/providers/{api.home}/jobs/claim", json={"daemon": "node-1", **body}
        )
        assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_two_daemons_claiming_at_once_never_share_a_job(api):
    jobs = sorted(volume_job(api) for _ in range(6))
    key = token_of(api.home_key)
    got: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def daemon(name: str) -> None:
        client, mine = api.client(key), []
        start.wait()
        while (r := claim(client, api.home, name)).status_code == 200:
            mine.append(r.json()["job"]["id"])
            assert r.json()["token"] == 1
        assert r.status_code == 204, r.text
        got[name] = mine

    threads = [threading.Thread(target=daemon, args=(f"node-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = sorted(j for mine in got.values() for j in mine)
    assert len(got) == 4 and claimed == jobs  # each job once, none left
    for job in jobs:
        assert [e[0] for e in events(api, job)] == ["claim"]


def test_a_lapsed_lease_goes_to_another_daemon_and_fences_the_old_one(api, store):
    job = volume_job(api)
    assert claim(api.home_key, api.home, "node-1").json()["token"] == 1
    assert post(api.home_key, job, "start", token=1).status_code == 200
    assert report(api.home_key, job, 1, 1, bytes_out=100, packets_out=2).status_code == 201
    lapse(store, job)
    # The daemon that lost it waits while the provider's others may take it.
    assert claim(api.home_key, api.home, "node-1").status_code == 204
    r = claim(api.home_key, api.home, "node-2")
    assert r.status_code == 200, r.text
    assert r.json()["token"] == 2 and r.json()["job"]["daemon"] == "node-2"
    assert r.json()["reported"]["sequence"] == 1 and r.json()["reported"]["bytes_out"] == 100
    # The old daemon wakes up: every call under token 1 is refused and writes nothing.
    for response in (
        post(api.home_key, job, "heartbeat", token=1),
        post(api.home_key, job, "start", token=1),
        post(api.home_key, job, "complete", token=1, measured=MEASURED),
        post(api.home_key, job, "fail", token=1, error="late"),
        post(api.home_key, job, "handback", token=1),
        report(api.home_key, job, 2, 1, bytes_out=500, packets_out=9),
    ):
        refused(response, "token", 409)
        assert response.json()["error"] == "lease_lost"
    with store.read() as s:
        assert (
            s.scalar(select(func.count()).select_from(UsageReport).where(UsageReport.job_id == job))
            == 1
        )
    # The new daemon resumes the cumulative counters and finishes.
    assert report(api.home_key, job, 2, 2, bytes_out=500, packets_out=9).status_code == 201
    assert post(api.home_key, job, "start", token=2).status_code == 200
    assert post(api.home_key, job, "complete", token=2, measured=MEASURED).status_code == 200
    assert events(api, job) == [
        ("claim", "queued", "claimed", 1, "node-1"),
        ("start", "claimed", "running", 1, "node-1"),
        ("lapse", "running", "queued", 1, "node-1"),
        ("claim", "queued", "claimed", 2, "node-2"),
        ("start", "claimed", "running", 2, "node-2"),
        ("complete", "running", "done", 2, "node-2"),
    ]
    assert api.home_key.get(f"/v1/jobs/{job}").json()["measured"]["token"] == 2


def test_a_lapsed_lease_nobody_took_is_still_the_daemons(api, store):
    job = volume_job(api)
    claim(api.home_key, api.home, "node-1")
    lapse(store, job)
    beat = post(api.home_key, job, "heartbeat", token=1, lease_s=30)
    assert beat.status_code == 200, beat.text
    assert claim(api.home_key, api.home, "node-2").status_code == 204


def test_a_handed_back_job_is_claimed_again_by_another_daemon(api):
    job = volume_job(api)
    claim(api.home_key, api.home, "node-1")
    back = post(api.home_key, job, "handback", token=1, reason="draining")
    assert back.status_code == 200 and back.json()["status"] == "queued", back.text
    assert post(api.home_key, job, "handback", token=1, reason="draining").json() == back.json()
    refused(report(api.home_key, job, 1, 1, bytes_out=5), "token", 409)
    assert claim(api.home_key, api.home, "node-1").status_code == 204
    again = claim(api.home_key, api.home, "node-2")
    assert again.status_code == 200 and again.json()["token"] == 2
    refused(post(api.home_key, job, "handback", token=1), "token", 409)
    assert events(api, job)[1] == ("handback", "claimed", "queued", 1, "node-1")
    assert api.home_key.get(f"/v1/jobs/{job}").json()["events"][1]["detail"] == "draining"


def test_a_waiting_claim_gets_a_job_awarded_meanwhile(api):
    wait_s = 10
    answer: dict = {}

    def waiting() -> None:
        began = time.monotonic()
        r = claim(api.client(token_of(api.home_key)), api.home, "node-1", wait_s=wait_s)
        answer.update(status=r.status_code, body=r.json(), took=time.monotonic() - began)

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(0.5)
    job = volume_job(api)
    t.join(wait_s + 5)
    assert answer["status"] == 200 and answer["body"]["job"]["id"] == job
    assert answer["took"] < wait_s


def test_a_claim_with_nothing_to_claim_waits_then_answers_204(api):
    began = time.monotonic()
    assert claim(api.home_key, api.home, "node-1", wait_s=1).status_code == 204
    assert time.monotonic() - began >= 1


def test_the_status_route_still_sets_a_status_by_hand_and_records_it(api):
    job = volume_job(api)
    r = api.home_key.post(f"/v1/jobs/{job}/status", json={"status": "picked"})
    assert r.status_code == 200 and r.json()["status"] == "claimed", r.text
    listed = api.home_key.get(f"/v1/providers/{api.home}/jobs?status=picked").json()["items"]
    assert [j["id"] for j in listed] == [job]
    assert events(api, job) == [("status", "queued", "claimed", 0, None)]


def test_the_daemon_protocol_is_in_the_openapi_document(served):
    doc = httpx.get(f"{served.url}/openapi.json").json()
    paths = doc["paths"]
    claimed = paths["/v1/providers/{provider_id}/jobs/claim"]["post"]["responses"]
    assert {"200", "204", "403", "409", "422"} <= set(claimed)
    for action in ("heartbeat", "start", "complete", "fail", "handback"):
        operation = paths[f"/v1/jobs/{{job_id}}/{action}"]["post"]
        assert "409" in operation["responses"]
    assert "token" in doc["components"]["schemas"]["UsageIn"]["properties"]
    assert "delivery" in doc["components"]["schemas"]["ProviderOut"]["properties"]
