"""Credit by linear prediction (claims c02, c03, c04) and more bandwidth from history (c11):
the scorecard's scaling exactly, the limit and the grant monotone, a fit on a synthetic
population recovering its true coefficients and ordering limits as true risk does, features of
a payment history from the store, the prior model deciding while outcomes are few and a fitted
one after a retrain, the credit check refusing a request past the available credit (and
leaving users without a credit profile alone), and two users with the same request getting
different max rates (in the request and in the delivery job)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from locations import ROOT
from marketplace import past_award
from sqlalchemy import func, select

from benchmarks.credit_load import TRUE, populate
from broker import credit, payment_jobs
from broker.bandwidth import granted_rate
from broker.credit import (
    FEATURES,
    PRIOR,
    CreditLimitExceeded,
    bandwidth_grant,
    credit_limit,
    score_points,
)
from broker.currency import Money
from broker.models import (
    Award,
    Charge,
    CreditDecision,
    CreditModel,
    DeliveryJob,
    ServiceRequest,
    Statement,
    StatementLine,
    User,
)
from broker.requests import submit_request

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


# -- the arithmetic ---------------------------------------------------------------------------


def test_scorecard_scaling_is_exact():
    assert score_points(0.05) == 600  # odds 19:1, the base
    assert score_points(0.025641) == 650  # odds 38:1, doubled: +50 points
    assert score_points(1 / 39) == 650
    assert score_points(0.5) == 600 - round(50 * math.log2(19))  # odds 1:1
    assert score_points(np.array([0.05, 1 / 39, 1 / 77])).tolist() == [600, 650, 700]


def test_the_limit_is_monotone_in_score_and_usage():
    assert credit_limit(500, 10_000, 0) == 0
    assert credit_limit(600, 10_000, 0) == 10_000
    assert credit_limit(700, 10_000, 1_000) == 2 * 12_000
    assert credit_limit(900, 10_000, 0) == credit_limit(800, 10_000, 0) == 30_000
    for spend in (0, 100, 5_000):
        limits = [credit_limit(s, 10_000, spend) for s in range(300, 900, 7)]
        assert limits == sorted(limits)
    for score in (450, 560, 650, 790):
        limits = [credit_limit(score, 10_000, spend) for spend in range(0, 10_000, 333)]
        assert limits == sorted(limits)


def test_the_bandwidth_policy():
    assert bandwidth_grant(700, 12) == 50
    assert bandwidth_grant(679, 12) == 25
    assert bandwidth_grant(700, 5) == 25
    assert bandwidth_grant(700, 2) == 0
    assert bandwidth_grant(619, 12) == 0


# -- the fit on a synthetic population ----------------------------------------------------------

# The fit is within this of every true coefficient on 40,000 users (the standard errors there
# are about 0.02-0.06; 0.2 leaves room for a bad draw, never for a wrong sign or a lost feature).
TOLERANCE = 0.2


def synthetic(n: int, seed: int = 11) -> tuple[np.ndarray, dict]:
    """``n`` users' features drawn as such features fall (shares in [0, 1], counts, scores),
    and true coefficients unlike the prior's, so the fit cannot pass by staying at the prior."""
    rng = np.random.default_rng(seed)
    cols = {
        "late_share": rng.beta(0.6, 3, n),
        "months_late": np.minimum(rng.exponential(0.6, n), 6),
        "unpaid_share": rng.beta(0.3, 6, n),
        "history": np.log1p(rng.integers(0, 24, n)),
        "tenure_years": rng.uniform(0, 10, n),
        "spend_cv": np.minimum(rng.gamma(2, 0.25, n), 3),
        "services": rng.integers(1, 8, n).astype(float),
        "foreign_share": rng.uniform(0, 1, n),
        "ext_score": rng.normal(0, 0.9, n),
        "utilisation": np.minimum(rng.gamma(2, 0.3, n), 2),
    }
    true = {
        "intercept": 2.0,
        "late_share": -1.8,
        "months_late": -0.6,
        "unpaid_share": -1.5,
        "history": 0.4,
        "tenure_years": 0.12,
        "spend_cv": -0.5,
        "services": 0.1,
        "foreign_share": -0.4,
        "ext_score": 1.1,
        "utilisation": -0.9,
    }
    return np.column_stack([cols[f] for f in FEATURES]), true


def test_a_fit_recovers_the_true_coefficients_and_limits_follow_true_risk():
    x, true = synthetic(40_000)
    rng = np.random.default_rng(5)
    p_true = credit.p_default(true, x)
    y = (rng.random(len(x)) >= p_true).astype(float)  # 1: paid on time
    fitted = credit.fit(x, y)
    for name in ("intercept", *FEATURES):
        assert abs(fitted[name] - true[name]) < TOLERANCE, (name, fitted[name], true[name])
    assert credit.auc(y, 1 - credit.p_default(fitted, x)) > 0.7

    # Limits by the fitted model (the same prior limit and spend for all) order users as their
    # true risk does: by decile of true risk, the mean limit falls from each decile to the next
    # (until it reaches nothing: the riskiest get no credit at all).
    scores = score_points(credit.p_default(fitted, x))
    limits = np.asarray([credit_limit(int(s), 10_000, 1_000) for s in scores])
    deciles = np.array_split(np.argsort(p_true), 10)
    means = [limits[d].mean() for d in deciles]
    assert all(a > b or a == b == 0 for a, b in itertools.pairwise(means)), means
    assert means[0] > 2 * means[4] > 0 == means[-1]
    ranks = np.argsort(np.argsort(p_true)), np.argsort(np.argsort(-limits))
    assert np.corrcoef(*ranks)[0, 1] > 0.8


# -- the store ----------------------------------------------------------------------------------


def history(
    store,
    user_id: int,
    home: int,
    paid: list,
    *,
    amount: int = 1_000,
    start: datetime = datetime(2029, 1, 1, tzinfo=UTC),
    provider: int | None = None,
):
    """Monthly finalized statements of one charge each for ``user_id``, due 14 days after the
    month; ``paid`` per month: days after the due date it was paid (negative: early), or None
    (never)."""
    with store.write() as s:
        number = (s.scalar(select(func.max(Statement.number))) or 0) + 1
        for m, days in enumerate(paid):
            begin = start + timedelta(days=31 * m)
            end = begin + timedelta(days=30)
            award = past_award(
                s, user_id, provider or home, begin + timedelta(days=2), price=amount
            )
            charge = Charge(
                user_id=user_id,
                provider_id=provider or home,
                home_provider_id=home,
                award_id=award.id,
                kind="price",
                amount_minor=amount,
                currency="EUR",
                minor_digits=2,
                rated_at=begin + timedelta(days=2),
            )
            s.add(charge)
            s.flush()
            due = end + timedelta(days=14)
            paid_at = None if days is None else due + timedelta(days=days)
            st = Statement(
                home_provider_id=home,
                user_id=user_id,
                period=f"{begin.year}-{begin.month:02d}",
                period_start=begin,
                period_end=end,
                status="finalized",
                number=number + m,
                totals={"EUR": amount},
                line_count=1,
                content_sha256="0" * 64,
                finalized_at=end,
                due_at=due,
                paid_minor=amount if paid_at else 0,
                paid_at=paid_at,
            )
            s.add(st)
            s.flush()
            s.add(
                StatementLine(
                    statement_id=st.id,
                    position=1,
                    charge_id=charge.id,
                    kind="price",
                    amount_minor=amount,
                    currency="EUR",
                    minor_digits=2,
                    at=charge.rated_at,
                    attrs={},
                )
            )
        s.flush()


def profile(
    store, market, user_id: int, score: int | None = None, limit: int = 10_000, now: datetime = NOW
):
    with store.write() as s:
        return credit.set_profile(
            s, market.admin, user_id, external_score=score, prior_limit_minor=limit, now=now
        )


def test_a_user_nothing_is_known_of_scores_the_base_on_the_prior(world, store):
    with store.read() as s:
        signed_up = s.get(User, world.alice).created_at  # no tenure yet
    profile(store, world.m, world.alice, now=signed_up)
    with store.write() as s:
        [d] = credit.decide(s, [world.alice], signed_up)
        assert (d.model_kind, d.model_version, d.p_default_ppm) == ("prior", 1, 50_000)
        assert (d.score, d.limit_minor, d.currency) == (600, 10_000, "EUR")
        assert d.bandwidth_grant_pct == 0 and d.on_time_months == 0
        assert d.inputs["external_score"] is None and d.inputs["late_share"] == 0
        # Decided again with nothing changed: the same decision, not a new row.
        assert credit.decide(s, [world.alice], signed_up)[0].id == d.id
        assert s.query(CreditDecision).count() == 1


def test_features_of_a_payment_history(world, store):
    # on time, 10 days late, on time, never paid; then one charge not yet billed.
    history(store, world.alice, world.home, [-3, 10, -1, None], provider=world.north)
    profile(store, world.m, world.alice, score=700)
    with store.write() as s:
        award = past_award(s, world.alice, world.home, NOW - timedelta(days=3), price=250)
        s.add(
            Charge(
                user_id=world.alice,
                provider_id=world.home,
                home_provider_id=world.home,
                award_id=award.id,
                kind="price",
                amount_minor=250,
                currency="EUR",
                minor_digits=2,
                rated_at=NOW - timedelta(days=3),
            )
        )
    with store.read() as s:
        f = credit.features(s, [world.alice, world.bob], NOW)
    row = dict(zip(FEATURES, f.x[0]))
    assert row["late_share"] == pytest.approx(0.5)
    assert row["unpaid_share"] == pytest.approx(0.25)
    assert row["history"] == pytest.approx(math.log1p(4))
    assert row["ext_score"] == pytest.approx(0.5)
    assert row["foreign_share"] == pytest.approx(4000 / 4250)
    assert row["services"] == 1
    with store.read() as s:
        assert f.exposure_minor[0] == 1_000 + 250 == credit.exposure(s, world.alice)
    assert f.on_time_months[0] == 0  # the last statement was never paid
    assert f.mean_spend_minor[0] == 1_000
    bob = dict(zip(FEATURES, f.x[1]))
    assert bob.pop("tenure_years") > 0 and set(bob.values()) == {0.0}
    with store.write() as s:
        [d] = credit.decide(s, [world.alice], NOW)
    assert d.score < 600 and {r["feature"] for r in d.reasons} >= {"late_share"}
    pulls = [r["log_odds"] for r in d.reasons]
    assert pulls == sorted(pulls) and all(p < 0 for p in pulls)


def test_the_credit_check_refuses_a_request_past_the_available_credit(world, store):
    user = world.m.actor("user", world.alice)
    # Without a credit profile the user's credit is not managed: nothing is checked.
    with store.write() as s:
        submit_request(
            s, user, services="identity", volume_bytes=10**9, max_price_minor=10**9, now=NOW
        )
    profile(store, world.m, world.alice, limit=1_000)
    with store.write() as s:
        owed = credit.exposure(s, world.alice)
        [d] = credit.decide(s, [world.alice], NOW)
    assert owed == 100  # the request above: 1 GB at 100
    available = d.limit_minor - owed
    assert available > 0
    with pytest.raises(CreditLimitExceeded) as refused, store.write() as s:
        submit_request(
            s, user, services="identity", volume_bytes=10**9, max_price_minor=available + 1, now=NOW
        )
    text = str(refused.value)
    assert refused.value.http_status == 409 and refused.value.code == "credit_limit_exceeded"

    def eur(minor):
        return f"{Money(minor, 'EUR')} ({minor} minor units)"

    for number in (
        f"up to {eur(available + 1)}",
        f"available credit of {eur(available)}",
        f"limit {eur(d.limit_minor)}",
        f"score {d.score}",
        "model version 1",
        f"minus {eur(owed)} owed",
    ):
        assert number in text, text
    with store.write() as s:  # nothing of the refused request was written
        assert s.query(ServiceRequest).count() == 1
        # No price limit: the home provider's list price is checked; exactly what is available.
        ok = submit_request(s, user, services="identity", volume_bytes=available * 10**7, now=NOW)
        assert ok.status == "served" and _price(s, ok.id) == available
    with pytest.raises(CreditLimitExceeded), store.write() as s:
        submit_request(s, user, services="identity", volume_bytes=1, now=NOW)


def test_two_users_with_the_same_request_get_different_max_rates(world, store):
    good, poor = world.alice, world.bob
    history(store, good, world.home, [-2] * 8)  # eight months paid on time
    history(store, poor, world.home, [-2, 20, -1, -1])  # once late: 2 months on time since
    profile(store, world.m, good, score=760, limit=10**7)
    profile(store, world.m, poor, score=640, limit=10**7)
    start = NOW + timedelta(hours=1)
    block = {
        "services": "identity",
        "starts_at": start,
        "ends_at": start + timedelta(hours=1),
        "max_rate_bps": 10_000_000,
    }
    with store.write() as s:
        a = submit_request(s, world.m.actor("user", good), now=NOW, **block)
        b = submit_request(s, world.m.actor("user", poor), now=NOW, **block)
        assert (a.status, b.status) == ("served", "served")
        assert (a.bandwidth_grant_pct, a.max_rate_bps, a.base_max_rate_bps) == (
            50,
            15_000_000,
            10_000_000,
        )
        assert (b.bandwidth_grant_pct, b.max_rate_bps, b.base_max_rate_bps) == (0, 10_000_000, None)
        jobs = {j.spec["request_id"]: j.spec for j in s.query(DeliveryJob)}
        assert (jobs[a.id]["max_rate_bps"], jobs[a.id]["bandwidth_grant_pct"]) == (15_000_000, 50)
        assert (jobs[b.id]["max_rate_bps"], jobs[b.id]["bandwidth_grant_pct"]) == (10_000_000, 0)
        # The grant is not charged for: the same price for the same request.
        assert a.members and _price(s, a.id) == _price(s, b.id)
    # The good user pays its next statement late: the grant is withdrawn on its next request.
    history(store, good, world.home, [30], start=datetime(2029, 9, 5, tzinfo=UTC))
    with store.write() as s:
        c = submit_request(s, world.m.actor("user", good), now=NOW, **block)
        assert (c.bandwidth_grant_pct, c.max_rate_bps) == (0, 10_000_000)
    # ... and from what it was granted before and has not had delivered yet.
    assert granted_rates(store, a.id) == (0, 10_000_000, 10_000_000, 10_000_000, 0)


def granted_rates(store, request_id: int) -> tuple:
    """A request's grant and max rate, its award's, and its job spec's rate and grant."""
    with store.read() as s:
        r = s.get(ServiceRequest, request_id)
        award = s.scalar(select(Award).where(Award.request_id == request_id))
        job = s.scalar(select(DeliveryJob).where(DeliveryJob.award_id == award.id))
        return (
            r.bandwidth_grant_pct,
            r.max_rate_bps,
            award.max_rate_bps,
            job.spec["max_rate_bps"],
            job.spec["bandwidth_grant_pct"],
        )


def test_an_overdue_statement_withdraws_the_grant_from_jobs_not_yet_delivered(world, store):
    """The payments job rates a statement unpaid past its due date; the user's credit is
    decided again and its grant comes off the queued job, not off a finished one."""
    good = world.alice
    history(store, good, world.home, [-2] * 8)
    profile(store, world.m, good, score=760, limit=10**7)
    start = NOW + timedelta(hours=1)
    block = {
        "services": "identity",
        "starts_at": start,
        "ends_at": start + timedelta(hours=1),
        "max_rate_bps": 10_000_000,
    }
    with store.write() as s:
        queued = submit_request(s, world.m.actor("user", good), now=NOW, **block).id
        done = submit_request(s, world.m.actor("user", good), now=NOW, **block).id
        s.scalar(
            select(DeliveryJob)
            .join(Award, Award.id == DeliveryJob.award_id)
            .where(Award.request_id == done)
        ).status = "done"
    assert granted_rates(store, queued) == (50, 15_000_000, 15_000_000, 15_000_000, 50)
    # A statement left unpaid: due 14 days after its month, long before NOW + 60 days.
    history(store, good, world.home, [None], start=NOW - timedelta(days=50))
    report = payment_jobs.run_due(store, now=NOW + timedelta(days=60))
    assert report["rated_overdue"] >= 1 and report["credit_decided"] == 1
    with store.read() as s:
        grant = s.scalar(
            select(CreditDecision.bandwidth_grant_pct)
            .where(CreditDecision.user_id == good)
            .order_by(CreditDecision.id.desc())
            .limit(1)
        )
    assert grant < 50
    rate = granted_rate(10_000_000, grant)
    assert granted_rates(store, queued) == (grant, rate, rate, rate, grant)
    assert granted_rates(store, done)[2:] == (15_000_000, 15_000_000, 50)  # as delivered


def _price(s, request_id: int) -> int:
    from broker.models import Award

    return s.query(Award).filter(Award.request_id == request_id).one().price_minor


def test_retrain_keeps_the_prior_while_outcomes_are_few_then_fits(store):
    with store.write() as s:
        few = credit.retrain(s, NOW)
        assert (few.model.kind, few.model.version, few.fitted) == ("prior", 1, None)
    pop = populate(store.url, 400, months=4, seed=3)
    at = datetime(2025, 7, 1, tzinfo=UTC)
    with store.read() as s:
        # The columnar training set (numpy over four plain queries) is the aggregate queries'.
        x, y = credit.training_set(s, at)
        x_exact, y_exact = credit.training_set(s, at, exact=True)
        assert x.shape == (1_600, len(FEATURES)) and (y == y_exact).all()
        assert np.allclose(x, x_exact, atol=1e-9)
        assert x[:, FEATURES.index("late_share")].max() > 0
    with store.write() as s:
        done = credit.retrain(s, at)
        assert (done.model.kind, done.model.version) == ("fitted", 2)
        assert done.outcomes == 1_600 and done.defaults == pop.late
        assert done.auc > 0.6
        # The generating model's strongest effects come out with their signs.
        assert done.fitted["ext_score"] > 0.4 and done.fitted["late_share"] < 0
        [d] = credit.decide(s, [pop.first_user], at)
        assert (d.model_kind, d.model_version) == ("fitted", 2)
        assert s.query(CreditModel).count() == 2
    assert set(TRUE) <= {"intercept", *FEATURES} and PRIOR["intercept"] == math.log(19)


def test_pktx_broker_credit_retrain_and_show(tmp_path):
    db = f"sqlite:///{tmp_path / 'credit.sqlite3'}"
    pop = populate(db, 300, months=4, seed=5)
    run = [sys.executable, "-m", "engine.cli", "broker", "credit"]
    done = subprocess.run(
        [*run, "retrain", "--db", db],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
        text=True,
    )
    report = json.loads(done.stdout)
    assert (report["model_kind"], report["outcomes"]) == ("fitted", 1_200)  # all are due
    assert 0.5 < report["auc"] <= 1
    rows = {r["feature"]: r for r in report["coefficients"]}
    assert rows["intercept"]["prior"] == round(math.log(19), 4)
    assert rows["ext_score"]["fitted"] > 0 and set(rows) == {"intercept", *FEATURES}
    shown = subprocess.run(
        [*run, "show", "credit-user-0", "--db", db],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
        text=True,
    )
    view = json.loads(shown.stdout)
    assert view["user_id"] == pop.first_user and view["model_kind"] == "fitted"
    assert view["available_minor"] == view["limit_minor"] - view["owed_minor"]
    assert all(r["log_odds"] < 0 for r in view["reasons"])
    missing = subprocess.run(
        [*run, "show", "nobody", "--db", db], cwd=ROOT, capture_output=True, timeout=300, text=True
    )
    assert missing.returncode != 0 and "nobody" in missing.stderr


def test_the_home_provider_extends_credit_for_a_request_another_network_serves(world, store):
    # Claim c04: home offers identity and checksum only, so anonymize goes to other networks;
    # the home provider still checks (and carries) the credit, at the user's price limit.
    profile(store, world.m, world.alice, limit=1_000)
    with store.write() as s:
        [d] = credit.decide(s, [world.alice], NOW)
    user = world.m.actor("user", world.alice)
    with pytest.raises(CreditLimitExceeded), store.write() as s:
        submit_request(
            s,
            user,
            services="anonymize",
            volume_bytes=10**9,
            max_price_minor=d.limit_minor + 1,
            now=NOW,
        )
    with store.write() as s:
        request = submit_request(
            s,
            user,
            services="anonymize",
            volume_bytes=10**9,
            max_price_minor=d.limit_minor,
            now=NOW,
        )
        assert request.status == "brokering"
        # Awarded to north (another network): the charge counts against alice's credit at home.
        from broker.awards import make_award

        make_award(s, request, world.north, 400, source="auction", now=NOW)
    with store.write() as s:
        assert credit.exposure(s, world.alice) == 400
        assert credit.check_credit(s, world.alice, None, "EUR", NOW).exposure_minor == 400


def test_the_grant_reaches_the_auctions_block(world, store):
    # Anonymize is not offered at home: the block goes to auction with the granted rate.
    from broker.auctions import open_auction
    from broker.views import auction_view

    history(store, world.alice, world.home, [-2] * 8)
    profile(store, world.m, world.alice, score=760, limit=10**7)
    start = NOW + timedelta(hours=2)
    user = world.m.actor("user", world.alice)
    with store.write() as s:
        request = submit_request(
            s,
            user,
            services="anonymize",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            max_rate_bps=8_000_000,
            now=NOW,
        )
        assert (request.status, request.max_rate_bps) == ("brokering", 12_000_000)
        auction = open_auction(
            s,
            user,
            request.id,
            closes_at=NOW + timedelta(minutes=30),
            reserve_price_minor=10**6,
            quantity=2,
            now=NOW,
        )
        block = auction_view(s, user, auction.id, now=NOW)["block"]
        assert (block["max_rate_bps"], block["share_rate_bps"]) == (12_000_000, 6_000_000)


def test_the_home_providers_capacity_check_sees_the_granted_rate(world, store):
    # home carries 100 Mbit/s: 80 asked fits, 80 + 50% = 120 granted does not.
    history(store, world.alice, world.home, [-2] * 8)
    profile(store, world.m, world.alice, score=760, limit=10**7)
    start = NOW + timedelta(hours=1)
    block = {
        "services": "identity",
        "starts_at": start,
        "ends_at": start + timedelta(hours=1),
        "max_rate_bps": 80_000_000,
    }
    with store.write() as s:
        granted = submit_request(s, world.m.actor("user", world.alice), now=NOW, **block)
        plain = submit_request(s, world.m.actor("user", world.bob), now=NOW, **block)
        assert (granted.status, granted.max_rate_bps) == ("brokering", 120_000_000)
        assert "needs 120000000" in granted.reason
        assert (plain.status, plain.max_rate_bps) == ("served", 80_000_000)
