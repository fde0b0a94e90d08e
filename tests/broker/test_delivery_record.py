"""The measured delivery record: jobs judged against their awards, a provider's record, its
place beside the ratings in auctions and in the auction's score; unclaimed blocks expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from marketplace import HOUR, T0, past_award
from sqlalchemy import select

from broker.auctions import close_auction, open_auction, submit_bid
from broker.delivery_record import GRACE, delivery_records, judge
from broker.dispatch import claim
from broker.errors import InvalidInput
from broker.models import Award, Bid, DeliveryJob, JobEvent, JobMeasurement
from broker.reputation import ReputationPolicy
from broker.requests import submit_request
from broker.store import alembic_config
from broker.views import auction_view, provider_view

OPEN, CLOSE = T0 - 2 * HOUR, T0 - HOUR


def block_award(**kw) -> Award:
    terms = {
        "starts_at": T0,
        "ends_at": T0 + HOUR,
        "volume_bytes": None,
        "data_cap_bytes": 10**9,
        "min_rate_bps": 10**6,
    }
    return Award(**{**terms, **kw})


@pytest.mark.parametrize(
    ("measured", "outcome", "honoured", "score"),
    [
        (
            {"windows": 100, "windows_met": 98, "started_at": T0, "ended_at": T0 + HOUR},
            "done",
            True,
            980_000,
        ),
        (
            {"windows": 100, "windows_met": 98, "started_at": T0 + GRACE, "ended_at": T0 + HOUR},
            "done",
            True,
            980_000,
        ),
        # started too late: the block was not honoured, the score halved
        (
            {
                "windows": 100,
                "windows_met": 98,
                "started_at": T0 + GRACE + timedelta(seconds=1),
                "ended_at": T0 + HOUR,
            },
            "done",
            False,
            490_000,
        ),
        # ended early, but the volume (the data cap) was delivered
        (
            {
                "windows": 10,
                "windows_met": 10,
                "started_at": T0,
                "ended_at": T0 + HOUR / 2,
                "bytes": 10**9,
            },
            "done",
            True,
            1_000_000,
        ),
        (
            {
                "windows": 10,
                "windows_met": 10,
                "started_at": T0,
                "ended_at": T0 + HOUR / 2,
                "bytes": 10**9 - 1,
            },
            "done",
            False,
            500_000,
        ),
        ({}, "done", False, 500_000),  # no times: the block's time cannot have been honoured
        (
            {"windows": 10, "windows_met": 10, "started_at": T0, "ended_at": T0 + HOUR},
            "failed",
            False,
            0,
        ),
    ],
)
def test_a_job_is_judged_against_its_block(measured, outcome, honoured, score):
    judged = judge(block_award(), measured, outcome=outcome)
    assert (judged["honoured"], judged["score_ppm"]) == (honoured, score)


def test_a_volume_job_is_honoured_by_delivering_the_volume():
    award = Award(starts_at=None, ends_at=None, volume_bytes=1000, data_cap_bytes=None)
    assert judge(award, {"bytes": 1000}, outcome="done")["honoured"] is True
    assert judge(award, {"bytes": 999}, outcome="done")["score_ppm"] == 500_000


def test_impossible_measurements_are_refused_naming_the_field():
    for measured, field in (
        ({"windows": 1, "windows_met": 2}, "measured.windows_met"),
        ({"bytes": -1}, "measured.bytes"),
        ({"started_at": T0, "ended_at": T0 - HOUR}, "measured.ended_at"),
    ):
        with pytest.raises(InvalidInput) as caught:
            judge(block_award(), measured, outcome="done")
        assert caught.value.field == field


def measured_jobs(store, user: int, provider: int, scores: list[int], *, outcome="done"):
    """Finished jobs of ``provider`` with measured deliveries of these scores (ppm)."""
    with store.write() as s:
        for score in scores:
            award = past_award(s, user, provider, OPEN)
            job = DeliveryJob(
                award_id=award.id,
                provider_id=provider,
                status=outcome,
                spec={},
                updated_at=OPEN,
                token=1,
            )
            s.add(job)
            s.flush()
            s.add(
                JobMeasurement(
                    job_id=job.id,
                    provider_id=provider,
                    outcome=outcome,
                    token=1,
                    bytes=1,
                    packets=1,
                    windows=100,
                    windows_met=score // 10_000,
                    errors=0,
                    honoured=True,
                    score_ppm=score,
                    created_at=OPEN,
                )
            )


@pytest.fixture
def auction(world):
    """Alice auctions a one-hour block of anonymize; north bids 200, south 210."""
    m = world.m
    alice = m.actor("device", world.alice_phone)
    with m.store.write() as s:
        r = submit_request(
            s,
            alice,
            services="anonymize",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=10_000_000,
            now=OPEN,
        )
        world.auction = open_auction(
            s, alice, r.id, closes_at=CLOSE, reserve_price_minor=500, now=OPEN
        ).id
    for provider, price in ((world.north, 200), (world.south, 210)):
        with m.store.write() as s:
            submit_bid(
                s,
                m.actor("provider", provider),
                world.auction,
                provider_id=provider,
                price_minor=price,
                now=OPEN + HOUR / 2,
            )
    return world


def test_the_measured_record_is_shown_beside_the_ratings_and_enters_the_score(auction):
    w = auction
    measured_jobs(w.m.store, w.bob, w.south, [1_000_000] * 3)
    measured_jobs(w.m.store, w.bob, w.north, [0] * 3, outcome="failed")
    alice = w.m.actor("user", w.alice)
    with w.m.store.read() as s:
        shown = auction_view(s, alice, w.auction, now=OPEN + HOUR)
        card = provider_view(s, w.south)
    bidders = {b["provider"]: b for b in shown["bidders"]}
    assert bidders["south"]["delivery"]["summary"] == (
        "met its minimum rate in 100.0% of windows over 3 jobs; honoured the block in 100.0%"
    )
    assert bidders["north"]["delivery"]["failed_share"] == 1.0
    assert bidders["south"]["reputation"] == {"score": 0.5, "count": 0}  # ratings alone
    assert card["delivery"]["jobs"] == 3
    # Ratings alone would give north the block (200 * 1.5 < 210 * 1.5); measured, south
    # scores 210 * (1 + 0.2) = 252 against north's 200 * (1 + 0.8) = 360.
    with w.m.store.write() as s:
        close_auction(s, alice, w.auction, now=CLOSE)
    with w.m.store.read() as s:
        won = s.execute(
            select(Bid.provider_id, Bid.reputation_ppm, Bid.rating_count).where(Bid.won)
        ).one()
        shown = auction_view(s, alice, w.auction, now=CLOSE)
    assert won == (w.south, 800_000, 0)
    assert [b["provider"] for b in shown["bids"]] == ["south", "north"]
    assert shown["bids"][0]["delivery"]["jobs"] == 3


def test_with_no_weight_the_close_scores_on_ratings_alone(auction):
    w = auction
    measured_jobs(w.m.store, w.bob, w.south, [1_000_000] * 3)
    with w.m.store.write() as s:
        close_auction(
            s,
            w.m.actor("user", w.alice),
            w.auction,
            now=CLOSE,
            policy=ReputationPolicy(measured_weight=0),
        )
    with w.m.store.read() as s:
        assert s.scalar(select(Bid.provider_id).where(Bid.won)) == w.north


def test_a_block_that_ended_unclaimed_is_failed_and_counted(world):
    m = world.m
    with m.store.write() as s:
        r = submit_request(
            s,
            m.actor("device", world.alice_phone),
            services="identity",
            starts_at=T0,
            ends_at=T0 + HOUR,
            max_rate_bps=10**6,
            now=OPEN,
        )
        assert r.status == "served"
    home = m.actor("provider", world.home)
    with m.store.write() as s:
        assert claim(s, home, world.home, "node-1", 30, now=T0 + HOUR) is None
    with m.store.read() as s:
        job = s.scalar(select(DeliveryJob))
        assert job.status == "failed"
        assert [(e.event, e.from_status, e.to_status) for e in s.scalars(select(JobEvent))] == [
            ("expire", "queued", "failed")
        ]
        record = delivery_records(s, [world.home])[world.home]
        assert (record.jobs, record.failed) == (1, 1)


def test_migration_0010_turns_picked_into_claimed(store, world):
    m = world.m
    with m.store.write() as s:
        submit_request(
            s,
            m.actor("device", world.alice_phone),
            services="identity",
            volume_bytes=10**6,
            now=OPEN,
        )
    with store.engine.connect() as conn:
        cfg = alembic_config(store.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
        conn.exec_driver_sql("UPDATE delivery_jobs SET status = 'picked'")
        conn.commit()
    store.upgrade()
    with store.read() as s:
        assert s.scalar(select(DeliveryJob.status)) == "claimed"
        assert s.scalar(select(DeliveryJob.token)) == 0
