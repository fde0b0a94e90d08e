"""The market half of ``pktx demo``: a request brokered by sealed-bid auction to an award and a
delivery job, then, once the engine has delivered it, the job closed and both sides rated.

Everything goes through the broker's domain functions on a SQLite store in the demo's folder,
as the HTTP API would. The market runs on a clock of its own (each step's ``now`` is given), so
that the auction can open, take bids and close in an instant; the delivery itself is real. The
clock is set in the middle of last month, so that the billing period the round falls in is over
and its statement can be closed today.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from broker.actors import Actor, actor_for
from broker.auctions import close_auction, open_auction, submit_bid
from broker.awards import list_awards, list_jobs, set_job_status
from broker.clock import utcnow
from broker.credit import CreditLimitExceeded, decide, set_profile
from broker.currency import Money
from broker.directory import (
    add_device,
    add_phone_number,
    create_admin,
    create_network,
    create_provider,
    create_user,
)
from broker.models import Provider
from broker.pricing import list_price, reservation_price
from broker.reputation import rate
from broker.requests import submit_request
from broker.store import Store
from broker.tariff_book import publish_tariff
from broker.views import auction_view, provider_view

MINUTE = timedelta(minutes=1)
# (name, per Mbit/s per hour, reservation in millionths of the list price): three providers of
# another network that can deliver what the home provider cannot.
BIDDERS = (("far-a", 12, 800_000), ("far-b", 10, 900_000), ("far-c", 15, 700_000))
# Their tariffs for bytes past the award's data cap, per MB (exact: rounded once per line).
TARIFF_PER_MB = ("0.03", "0.025", "0.04")


@dataclass
class MarketRound:
    store: Store
    user: Actor
    winner: Actor
    winner_name: str
    award_id: int
    job_id: int
    spec: dict
    price: Money
    clock: datetime
    admin_id: int
    user_home: int


def demo_clock(now: datetime | None = None) -> datetime:
    """Noon on the 15th of last month: the market round's simulated start."""
    now = now or utcnow()
    first = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=15)


def broker_a_request(path: Path, services: list[str], rate_bps: int, data_cap_bytes: int,
                     out: Callable[[str], object]) -> MarketRound:
    """Build a small market in ``path`` and run one request through it to a delivery job.
    The bidders publish tariffs for what goes past the request's data cap."""
    store = Store(f"sqlite:///{path}")
    t0 = demo_clock()
    with store.write() as s:
        admin = Actor("admin", create_admin(s, "demo").id)
        home_net = create_network(s, admin, "home-net").id
        far_net = create_network(s, admin, "far-net").id  # the providers that bid
        home = create_provider(s, admin, network_id=home_net, name="home-isp",
                               services=["identity", "checksum"], capacity_bps=10**10,
                               currency="EUR", per_gb_minor=50, per_mbps_hour_minor=8,
                               reservation_ppm=800_000, concession_beta_ppm=1_000_000,
                               mode="policy").id
        bidders = [create_provider(s, admin, network_id=far_net, name=name,
                                   services=[*services, "decrypt", "checksum"],
                                   capacity_bps=10**10, currency="EUR", per_gb_minor=100,
                                   per_mbps_hour_minor=per_hour, reservation_ppm=reserve,
                                   concession_beta_ppm=1_000_000, mode="policy").id
                   for name, per_hour, reserve in BIDDERS]
        for pid, per_mb in zip(bidders, TARIFF_PER_MB, strict=True):
            publish_tariff(s, actor_for(s, "provider", pid), pid, {
                "services": services, "currency": "EUR", "connect_fee": "0",
                "active_from": (t0 - timedelta(days=1)).isoformat(),
                "dimensions": {"bytes": {"rate_unit": 1_000_000, "increment": 1,
                                         "tiers": [{"up_to": None, "price": per_mb}]}}},
                now=t0)
        alice = create_user(s, admin, name="alice", home_provider_id=home).id
        phone = add_device(s, admin, user_id=alice, name="phone").id
        add_phone_number(s, admin, user_id=alice, number="+14155552671", device_id=phone)
        device, user = actor_for(s, "device", phone), actor_for(s, "user", alice)
        # Their credit histories as the home provider took them at sign-up: alice has a good
        # external score, bob a poor one and a small limit.
        set_profile(s, admin, alice, external_score=760, prior_limit_minor=50_000, now=t0)
        bob = create_user(s, admin, name="bob", home_provider_id=home).id
        bob_phone = actor_for(s, "device", add_device(s, admin, user_id=bob, name="phone").id)
        set_profile(s, admin, bob, external_score=420, prior_limit_minor=2_000, now=t0)
    with store.write() as s:
        [credit] = decide(s, [alice], now=t0)
        reasons = "; ".join(r["reason"] for r in credit.reasons) or "none"
        out(f"   alice's credit at home-isp ({credit.model_kind} model v{credit.model_version})"
            f": score {credit.score}, limit {Money(credit.limit_minor, credit.currency)}, "
            f"bandwidth grant +{credit.bandwidth_grant_pct}%; what pulls it down: {reasons}\n")

    with store.write() as s:
        request = submit_request(
            s, device, services=services, device_id=phone, starts_at=t0 + 10 * MINUTE,
            ends_at=t0 + 70 * MINUTE, max_rate_bps=rate_bps, data_cap_bytes=data_cap_bytes,
            members=[{"kind": "phone", "value": "+14155552671"},
                     {"kind": "device", "value": phone}], now=t0)
        out(f"   on {t0:%Y-%m-%d %H:%M} UTC alice's phone asks home-isp for "
            f"{','.join(services)}, one hour at up to {rate_bps / 1e6:,.0f} Mbit/s with "
            f"{data_cap_bytes:,} bytes in the price, for herself and her phone number: "
            f"{request.status} ({request.reason})\n")
        listed = {p: list_price(s.get(Provider, p).policy, request) for p in bidders}
        reserve = max(listed.values())
        auction = open_auction(s, user, request.id, closes_at=t0 + 5 * MINUTE,
                               reserve_price_minor=reserve, now=t0 + MINUTE)
        auction_id = auction.id
    out(f"   sealed-bid auction {auction_id} opened, reserve {Money(reserve, 'EUR')}\n")
    try:
        with store.write() as s:
            submit_request(s, bob_phone, services=services, starts_at=t0 + 10 * MINUTE,
                           ends_at=t0 + 70 * MINUTE, max_rate_bps=rate_bps,
                           data_cap_bytes=data_cap_bytes, now=t0)
        out("   bob's same request was taken (his credit covered it)\n")
    except CreditLimitExceeded as refused:
        out(f"   bob asks for the same: refused by his credit check: it would cost up to "
            f"{refused.amount}, past his available credit of {refused.available} (score "
            f"{refused.score}, limit {refused.limit})\n")
    for pid in bidders:
        with store.write() as s:
            actor = actor_for(s, "provider", pid)
            policy = s.get(Provider, pid).policy
            # Under the second-price rule, asking one's true cost is the best a bidder can do.
            ask = reservation_price(policy, listed[pid])
            submit_bid(s, actor, auction_id, provider_id=pid, price_minor=ask,
                       now=t0 + 2 * MINUTE)
    with store.write() as s:
        close_auction(s, user, auction_id, now=t0 + 5 * MINUTE)
    with store.read() as s:
        view = auction_view(s, user, auction_id, now=t0 + 5 * MINUTE)
        for b in view["bids"]:
            rep = b["reputation"]
            paid = f", paid {Money(b['payment_minor'], 'EUR')}" if b["won"] else ""
            out(f"     {b['provider']}: asks {Money(b['price_minor'], 'EUR')}, reputation "
                f"{rep['score']:.2f} of {rep['count']} rating(s), rank {b['rank']}{paid}\n")
        award = list_awards(s, user)[0]
        winner = actor_for(s, "provider", award.provider_id)
        winner_name = s.get(Provider, award.provider_id).name
        job = list_jobs(s, winner, award.provider_id)[0]
        price = Money(award.price_minor, award.currency)
        round_ = MarketRound(store, user, winner, winner_name, award.id, job.id,
                             dict(job.spec), price, t0 + 5 * MINUTE, admin.id, home)
    out(f"   award {round_.award_id}: {winner_name} delivers for {price} "
        f"(second price); delivery job {round_.job_id} queued for its daemon\n")
    return round_


def settle_delivery(round_: MarketRound, usage: dict, out: Callable[[str], object]) -> None:
    """The winner's daemon reports the delivery's usage record, rated by its tariff, and the
    job done; each side rates the other."""
    from broker.usage import report_usage

    store = round_.store
    with store.write() as s:
        set_job_status(s, round_.winner, round_.job_id, "running", now=round_.clock)
    counters = {"packets_in": usage["packets_in"], "packets_out": usage["packets_out"],
                "bytes_in": usage["bytes_in"], "bytes_out": usage["bytes_out"],
                "seconds": -(-usage["duration_ns"] // 1_000_000_000)}
    with store.write() as s:
        report, _ = report_usage(s, round_.winner, round_.job_id, 1, counters,
                                 at=round_.clock + MINUTE, now=round_.clock + MINUTE)
    charged = Money(report["charged_minor"], report["currency"] or "EUR")
    out(f"   {round_.winner_name} reports the usage record: {counters['bytes_out']:,} bytes "
        f"out, rated by its tariff version {report['tariff_version']}: {charged} for the "
        f"bytes past the data cap\n")
    with store.write() as s:
        set_job_status(s, round_.winner, round_.job_id, "done", now=round_.clock + MINUTE)
    later = round_.clock + 2 * MINUTE
    with store.write() as s:
        rate(s, round_.user, round_.award_id, 95, comment="every packet arrived", now=later)
        rate(s, round_.winner, round_.award_id, 100, now=later)
    with store.read() as s:
        card = provider_view(s, next(iter(round_.winner.provider_ids)), now=later)
    rep = card["reputation"]
    out(f"   job {round_.job_id} done ({usage['bytes_out']:,} bytes delivered); alice rated "
        f"the service 95/100 and {card['name']} rated her payment 100/100; {card['name']}'s "
        f"reputation, shown in its next auctions: {rep['score']:.2f} of {rep['count']} "
        f"rating(s)\n")


def bill_the_round(round_: MarketRound, folder: Path, out: Callable[[str], object]) -> Path:
    """home-isp closes the billing period; alice's statement (the auction price and the usage
    charge from the provider that served her) is shown by two of her profiles and written as
    a PDF. Returns the PDF's path."""
    from broker.profile_book import put_profile
    from broker.statements import (
        close_period,
        list_statements,
        rendered,
        set_billing_settings,
    )

    store = round_.store
    home = round_.user_home
    with store.write() as s:
        # home-isp keeps 5% of what other providers charge its users (its margin).
        set_billing_settings(s, Actor("admin", round_.admin_id), home, period_months=1,
                             cutoff_day=1, timezone="UTC", margin_ppm=50_000)
        for name, doc in PROFILES.items():
            put_profile(s, round_.user, round_.user.user_id, name, doc,
                        default=name == "by-service")
    closed = close_period(store.write, Actor("admin", round_.admin_id), home,
                          f"{round_.clock:%Y-%m}")
    out(f"   home-isp closes period {closed['period']}: {closed['statements']} statement(s), "
        f"{closed['lines']} line(s), sent to alice's phone as an event\n")
    pdf = folder / "statement.pdf"
    with store.read() as s:
        statement = list_statements(s, round_.user)[0]
        for name in PROFILES:
            out(f"\n   alice's statement by her profile '{name}':\n")
            text = rendered(s, statement, name, "text")
            out("".join(f"   | {line}\n" for line in text.rstrip("\n").split("\n")))
        pdf.write_bytes(rendered(s, statement, "by-service", "pdf"))
        statement_id = statement.id
    out(f"\n   the statement as a PDF: {pdf}\n")
    pay_and_settle(round_, statement_id, out)
    store.dispose()
    return pdf


def pay_and_settle(round_: MarketRound, statement_id: int,
                   out: Callable[[str], object]) -> None:
    """alice pays her statement with a test card (the test gateway: no network); home-isp
    settles the period with far-b, whether or not she paid (claim c04)."""
    from broker import ledger
    from broker.payment_methods import add_method
    from broker.payments import gateways_of, pay
    from broker.settlements import settle_period

    store = round_.store
    gateways = gateways_of(store)
    with store.write() as s:
        card = add_method(s, round_.user, round_.user.user_id, gateways("test"),
                          token="tok_visa", make_default=True)
        card_text = f"{card.brand} ending {card.last4}"
    payment = pay(store, round_.user, statement_id, idempotency_key=f"demo-{statement_id}")
    out(f"   alice pays statement 1 with her test card ({card_text}): {payment.status}, "
        f"{Money(payment.amount_minor, payment.currency)}\n")
    admin = Actor("admin", round_.admin_id)
    with store.write() as s:
        settled = settle_period(s, admin, f"{round_.clock:%Y-%m}")
    with store.read() as s:
        for batch in settled["batches"]:
            due = ", ".join(str(Money(m, c)) for c, m in batch["due"].items())
            out(f"   settlement batch {batch['number']} home-isp -> {round_.winner_name}: "
                f"{batch['line_count']} line(s), {due} due, {batch['status']}\n")
        home, winner = round_.user_home, next(iter(round_.winner.provider_ids))
        owed = -ledger.balance(s, ledger.payable(home, winner), "EUR")
        cash = ledger.balance(s, ledger.cash(home), "EUR")
        margin = -ledger.balance(s, ledger.revenue(home), "EUR")
    out(f"   home-isp's books: {Money(cash, 'EUR')} in cash = its 5% margin "
        f"{Money(margin, 'EUR')}; {Money(owed, 'EUR')} still owed to {round_.winner_name}\n")


# Alice's two segmentation profiles (claim c12): the same charges, presented two ways.
PROFILES = {
    "by-service": {"group_by": ["service", "kind"], "detail": ["detail", "summary"],
                   "columns": ["date", "provider", "kind", "quantity", "amount"]},
    "by-recipient": {"group_by": ["recipient"], "columns": ["date", "provider", "kind",
                                                           "description", "amount"],
                     "sort": [{"key": "amount", "order": "desc"}], "locale": "de_DE",
                     "timezone": "Europe/Berlin"},
}
