"""An award that delivered nothing is not paid for (issue 11): its block ended unclaimed or its
daemon failed it before a byte went out, so the award fails and its price is voided, once per
payer, on the statement that takes it; settlement then owes the delivering provider nothing.
A job that delivered part keeps its price. On both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from settlement_world import award, build, close
from sqlalchemy import select

from broker import settlements as se
from broker.awards import make_award, set_job_status
from broker.dispatch import claim, fail, start
from broker.errors import WrongState
from broker.models import (
    Award,
    Charge,
    DeliveryJob,
    JobEvent,
    JobMeasurement,
    ServiceRequest,
    Statement,
    StatementLine,
)
from broker.requests import submit_request

JAN = datetime(2025, 1, 10, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def w(store):
    return build(store, margins={"home-isp": 100_000})


def block_award(
    w, user: str, provider: str, price: int, at: datetime, starts: datetime, hours: int = 1
) -> int:
    """``user``'s block request (``starts`` for ``hours``) awarded to ``provider``."""
    with w.store.write() as s:
        request = submit_request(
            s,
            w.m.actor("user", w.users[user]),
            services="anonymize",
            starts_at=starts,
            ends_at=starts + hours * HOUR,
            max_rate_bps=10**6,
            now=at,
        )
        s.flush()
        request = s.get(ServiceRequest, request.id)
        return make_award(s, request, w.providers[provider], price, source="auction", now=at).id


def charges(w, award_id: int) -> list[tuple[str, int]]:
    with w.store.read() as s:
        return [
            (c.kind, c.amount_minor)
            for c in s.scalars(
                select(Charge).where(Charge.award_id == award_id).order_by(Charge.id)
            )
        ]


def job_of(w, award_id: int):
    """The award's job: (id, status)."""
    with w.store.read() as s:
        return s.execute(
            select(DeliveryJob.id, DeliveryJob.status).where(DeliveryJob.award_id == award_id)
        ).one()


def award_status(w, award_id: int) -> str:
    with w.store.read() as s:
        return s.get(Award, award_id).status


def statement_lines(w, user: str, period: str) -> list[tuple[str, int]]:
    with w.store.read() as s:
        return [
            (line.kind, line.amount_minor)
            for line in s.scalars(
                select(StatementLine)
                .join(Statement, Statement.id == StatementLine.statement_id)
                .where(Statement.user_id == w.users[user], Statement.period == period)
                .order_by(StatementLine.position)
            )
        ]


def owed_to(w, home: str, provider: str) -> int:
    with w.store.read() as s:
        view = se.provider_balance(s, w.m.actor("provider", w.providers[home]), w.providers[home])
    return sum(
        b["owes_minor"] for b in view["balances"] if b["counterparty_id"] == w.providers[provider]
    )


def test_a_block_that_ended_unclaimed_voids_its_price_and_settles_nothing(w):
    voided = block_award(w, "alice", "far-b", 500, JAN, JAN + HOUR)
    kept = award(w, "alice", "far-b", 300, JAN)  # a volume award: no block to end
    far_b = w.m.actor("provider", w.far_b)
    with w.store.write() as s:  # far-b's daemon looks after the block: the job has expired
        got = claim(s, far_b, w.far_b, "node-1", 30, now=JAN + 3 * HOUR)
        assert got.award_id == kept
    assert job_of(w, voided).status == "failed" and award_status(w, voided) == "failed"
    assert charges(w, voided) == [("price", 500), ("void", -500)]
    close(w)
    assert statement_lines(w, "alice", "2025-01") == [
        ("price", 500),
        ("price", 300),
        ("void", -500),
    ]
    with w.store.read() as s:
        line = s.scalar(select(StatementLine).where(StatementLine.kind == "void"))
        assert line.attrs["description"] == f"price voided: award {voided} delivered nothing"
        assert s.scalar(select(Statement.totals).where(Statement.user_id == w.users["alice"])) == {
            "EUR": 300
        }
    # home-isp owes far-b for the award delivered, less its 10%; nothing for the void one
    assert owed_to(w, "home-isp", "far-b") == 270


def test_closing_the_period_expires_blocks_no_daemon_ever_claimed(w):
    voided = block_award(w, "bob", "far-c", 700, JAN, JAN + HOUR)
    close(w)  # far-c runs no daemon: nothing claimed, nothing looked
    job_id, status = job_of(w, voided)
    assert status == "failed" and award_status(w, voided) == "failed"
    with w.store.read() as s:
        assert [
            (e.event, e.from_status, e.to_status)
            for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))
        ] == [("expire", "queued", "failed")]
        assert (
            s.scalar(select(JobMeasurement.outcome).where(JobMeasurement.job_id == job_id))
            == "failed"
        )
    assert statement_lines(w, "bob", "2025-01") == [("price", 700), ("void", -700)]
    assert owed_to(w, "home-isp", "far-c") == 0


def test_a_price_already_on_a_finalized_statement_is_undone_on_the_next(w):
    jan31 = datetime(2025, 1, 31, 20, tzinfo=UTC)
    voided = block_award(w, "alice", "far-b", 500, jan31, datetime(2025, 2, 1, 10, tzinfo=UTC))
    close(w, "2025-01", now=datetime(2025, 2, 1, 0, 30, tzinfo=UTC))  # before the block
    assert job_of(w, voided).status == "queued"
    assert statement_lines(w, "alice", "2025-01") == [("price", 500)]
    close(w, "2025-02")
    assert statement_lines(w, "alice", "2025-02") == [("void", -500)]
    with w.store.read() as s:  # dated when the block ended, not when the close found it
        assert s.scalar(select(Charge.rated_at).where(Charge.kind == "void")) == datetime(
            2025, 2, 1, 11, tzinfo=UTC
        )


def test_a_job_failed_before_a_byte_went_out_is_voided_one_that_delivered_part_is_not(w):
    nothing = block_award(w, "alice", "far-b", 500, JAN, JAN + HOUR)
    part = block_award(w, "carol", "far-b", 400, JAN, JAN + HOUR)
    far_b = w.m.actor("provider", w.far_b)
    at = JAN + HOUR + timedelta(minutes=1)
    with w.store.write() as s:
        for award_id, measured in ((nothing, {}), (part, {"bytes": 1500, "packets": 3})):
            job = claim(s, far_b, w.far_b, "node-1", 30, now=JAN + HOUR / 2)
            assert job.award_id == award_id
            start(s, far_b, job.id, job.token, now=JAN + HOUR / 2)
            fail(s, far_b, job.id, job.token, "the sink refused", measured, now=at)
    assert charges(w, nothing) == [("price", 500), ("void", -500)]
    assert charges(w, part) == [("price", 400)]
    assert award_status(w, nothing) == award_status(w, part) == "failed"


def test_a_void_is_written_once_and_a_voided_job_is_not_reopened(w):
    voided = block_award(w, "alice", "far-b", 500, JAN, JAN + HOUR)
    job_id, _ = job_of(w, voided)
    far_b = w.m.actor("provider", w.far_b)
    for _ in range(2):  # by hand, twice: one void
        with w.store.write() as s:
            set_job_status(s, far_b, job_id, "failed", now=JAN + 2 * HOUR)
    close(w)
    assert charges(w, voided) == [("price", 500), ("void", -500)]
    with w.store.write() as s, pytest.raises(WrongState, match="price was voided"):
        set_job_status(s, far_b, job_id, "queued", now=JAN + 3 * HOUR)
    assert job_of(w, voided).status == "failed"


def test_a_job_abandoned_by_its_daemon_past_the_block_fails_with_what_it_reported(w):
    voided = block_award(w, "alice", "far-b", 500, JAN, JAN + HOUR)
    far_b = w.m.actor("provider", w.far_b)
    with w.store.write() as s:
        job = claim(s, far_b, w.far_b, "node-1", 30, now=JAN)
        start(s, far_b, job.id, job.token, now=JAN)
        job_id = job.id
    # the daemon died; long after the block (and the lease) ended, the period closes
    close(w)
    with w.store.read() as s:
        assert s.get(DeliveryJob, job_id).status == "failed"
        assert [
            (e.event, e.from_status)
            for e in s.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.event == "expire")
            )
        ] == [("expire", "running")]
    assert charges(w, voided) == [("price", 500), ("void", -500)]
