"""The market half of ``pktx demo``, played over the broker's HTTP API only: an operator sets
up networks, providers and users; alice's phone asks for a service chain its home provider
lacks; a sealed-bid auction among three providers closes a few seconds later; the winner's
daemon (another process) takes the job, delivers it and reports its usage; both sides rate;
the charges land on alice's statement for the period under way.

Each participant is an ``httpx`` client with its own API key, so each call is made with the
rights that participant has (a provider can bid only for itself, alice sees only her own).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from engine.cli.demo_stage import DemoFailed

# (name, per Mbit/s per hour in minor units, reservation in millionths of the list price):
# three providers of another network that can deliver what the home provider cannot.
BIDDERS = (("far-a", 12, 800_000), ("far-b", 10, 900_000), ("far-c", 15, 700_000))
# Their tariffs for bytes past the award's data cap, per MB (exact: rounded once per line).
TARIFF_PER_MB = ("0.03", "0.025", "0.04")
AUCTION_S = 3.0  # how long the auction takes bids
# Alice's two segmentation profiles (claim c12): the same charges, presented two ways.
PROFILES = {
    "by-service": {
        "group_by": ["service", "kind"],
        "detail": ["detail", "summary"],
        "columns": ["date", "provider", "kind", "quantity", "amount"],
    },
    "by-recipient": {
        "group_by": ["recipient"],
        "columns": ["date", "provider", "kind", "description", "amount"],
        "sort": [{"key": "amount", "order": "desc"}],
        "locale": "de_DE",
        "timezone": "Europe/Berlin",
    },
}


def money(minor: int | None, currency: str = "EUR") -> str:
    return f"{(minor or 0) / 100:,.2f} {currency}"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def checked(r: httpx.Response, *statuses: int) -> dict:
    """The answer's JSON, or a `DemoFailed` naming the call and the broker's message."""
    if r.status_code not in (statuses or (200, 201)):
        raise DemoFailed(
            f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text[:500]}"
        )
    return r.json() if r.content else {}


@dataclass
class Market:
    """The participants (a client each), and what the round made."""

    url: str
    admin: httpx.Client
    clients: dict[str, httpx.Client] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # principal -> API key
    ids: dict[str, int] = field(default_factory=dict)  # name -> id
    request: dict = field(default_factory=dict)
    auction: dict = field(default_factory=dict)
    award: dict = field(default_factory=dict)
    winner: str = ""

    def client(self, name: str) -> httpx.Client:
        return self.clients[name]

    def make(self, path: str, body: dict) -> int:
        return checked(self.admin.post(path, json=body), 201)["id"]

    def key(self, principal: str, kind: str, ident: int) -> None:
        token = checked(
            self.admin.post("/v1/keys", json={"kind": kind, "id": ident, "label": "pktx demo"}), 201
        )["token"]
        self.keys[principal] = token
        self.clients[principal] = _client(self.url, token)

    def close(self) -> None:
        for c in [self.admin, *self.clients.values()]:
            c.close()


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def set_up(url: str, admin_token: str, services: list[str], out: Callable[[str], object]) -> Market:
    """The operator's part: two networks, the home provider and three bidders (each with a
    tariff for bytes past the data cap), alice and bob with a phone each, their credit
    histories, and a key for every one."""
    m = Market(url, _client(url, admin_token))
    m.keys["admin"] = admin_token
    home_net = m.make("/v1/networks", {"name": "home-net"})
    far_net = m.make("/v1/networks", {"name": "far-net"})
    m.ids["home-isp"] = m.make(
        "/v1/providers",
        {
            "network_id": home_net,
            "name": "home-isp",
            "services": ["identity", "checksum"],
            "capacity_bps": 10**10,
            "currency": "EUR",
            "per_gb_minor": 50,
            "per_mbps_hour_minor": 8,
            "reservation_ppm": 800_000,
        },
    )
    m.key("home-isp", "provider", m.ids["home-isp"])
    now = datetime.now(UTC)
    for (name, per_hour, reserve), per_mb in zip(BIDDERS, TARIFF_PER_MB, strict=True):
        pid = m.ids[name] = m.make(
            "/v1/providers",
            {
                "network_id": far_net,
                "name": name,
                "services": [*services, "decrypt", "checksum"],
                "capacity_bps": 10**10,
                "currency": "EUR",
                "per_gb_minor": 100,
                "per_mbps_hour_minor": per_hour,
                "reservation_ppm": reserve,
            },
        )
        m.key(name, "provider", pid)
        checked(
            m.client(name).post(
                f"/v1/providers/{pid}/tariffs",
                json={
                    "services": services,
                    "currency": "EUR",
                    "connect_fee": "0",
                    "active_from": (now - timedelta(days=1)).isoformat(),
                    "dimensions": {
                        "bytes": {
                            "rate_unit": 1_000_000,
                            "increment": 1,
                            "tiers": [{"up_to": None, "price": per_mb}],
                        }
                    },
                },
            ),
            201,
        )
    for user, score, limit in (("alice", 760, 50_000), ("bob", 420, 2_000)):
        uid = m.ids[user] = m.make(
            "/v1/users", {"name": user, "home_provider_id": m.ids["home-isp"]}
        )
        m.key(user, "user", uid)
        phone = m.ids[f"{user}-phone"] = m.make(f"/v1/users/{uid}/devices", {"name": "phone"})
        m.key(f"{user}'s phone", "device", phone)
        # Their credit histories as the home provider took them at sign-up: alice has a good
        # external score, bob a poor one and a small limit.
        checked(
            m.admin.put(
                f"/v1/users/{uid}/credit/profile",
                json={"external_score": score, "prior_limit_minor": limit},
            )
        )
    checked(
        m.admin.post(
            f"/v1/users/{m.ids['alice']}/phone-numbers",
            json={"number": "+14155552671", "device_id": m.ids["alice-phone"]},
        ),
        201,
    )
    out(
        f"   the operator sets up two networks, home-isp and three providers of far-net "
        f"({', '.join(n for n, *_ in BIDDERS)}) with their tariffs, alice and bob with a "
        f"phone each, and an API key for each of them ({len(m.keys)} keys)\n"
    )
    credit = checked(m.client("alice").get(f"/v1/users/{m.ids['alice']}/credit"))
    reasons = "; ".join(r["reason"] for r in credit.get("reasons", [])) or "none"
    out(
        f"   alice's credit at home-isp ({credit['model_kind']} model "
        f"v{credit['model_version']}): score {credit['score']}, limit "
        f"{money(credit['limit_minor'], credit['currency'])}, bandwidth grant "
        f"+{credit['bandwidth_grant_pct']}%; what pulls it down: {reasons}\n"
    )
    return m


def list_price(per_mbps_hour_minor: int, rate_bps: int, seconds: int) -> int:
    """A block's list price (as broker.pricing computes it): per Mbit/s per hour, pro rata,
    rounded up."""
    return _ceil_div(seconds * rate_bps * per_mbps_hour_minor, 3600 * 1_000_000)


def auction_the_request(
    m: Market,
    services: list[str],
    rate_bps: int,
    data_cap_bytes: int,
    source: str,
    sink: str,
    out: Callable[[str], object],
) -> None:
    """Alice's phone asks; home-isp lacks the chain, so alice auctions the request; bob is
    refused by his credit check; the three bidders ask their reservation prices; the auction
    closes and awards the job."""
    # The block starts when the auction closes: the winner's daemon delivers from then on.
    closes = datetime.now(UTC) + timedelta(seconds=AUCTION_S)
    starts = closes
    ends = starts + timedelta(hours=1)
    body = {
        "services": services,
        "starts_at": starts.isoformat(),
        "ends_at": ends.isoformat(),
        "max_rate_bps": rate_bps,
        "data_cap_bytes": data_cap_bytes,
        "source": source,
        "sink": sink,
    }
    phone = m.client("alice's phone")
    m.request = checked(
        phone.post(
            "/v1/requests",
            json={
                **body,
                "device_id": m.ids["alice-phone"],
                "members": [
                    {"kind": "phone", "value": "+14155552671"},
                    {"kind": "device", "value": m.ids["alice-phone"]},
                ],
            },
        ),
        201,
    )
    out(
        f"   POST /v1/requests: alice's phone asks home-isp for {','.join(services)}, one hour "
        f"from {starts:%H:%M:%S} UTC at up to {rate_bps / 1e6:,.0f} Mbit/s with "
        f"{data_cap_bytes:,} bytes in the price, from {source} to {sink}, for herself and "
        f"her phone number: {m.request['status']} ({m.request.get('reason', '')})\n"
    )
    listed = {name: list_price(per_hour, rate_bps, 3600) for name, per_hour, _ in BIDDERS}
    reserve = max(listed.values())
    m.auction = checked(
        m.client("alice").post(
            "/v1/auctions",
            json={
                "request_id": m.request["id"],
                "closes_at": closes.isoformat(),
                "reserve_price_minor": reserve,
            },
        ),
        201,
    )
    out(
        f"   POST /v1/auctions: sealed-bid auction {m.auction['id']} opened, reserve "
        f"{money(reserve)}, taking bids until {closes:%H:%M:%S} UTC\n"
    )
    r = m.client("bob's phone").post("/v1/requests", json=body)
    if r.status_code == 201:
        out("   bob's same request was taken (his credit covered it)\n")
    else:
        answer = r.json()
        out(
            f"   bob asks for the same: {r.status_code} {answer.get('error')}: "
            f"{answer.get('message')}\n"
        )
    for name, _per_hour, reserve_ppm in BIDDERS:
        # Under the second-price rule, asking one's true cost is the best a bidder can do.
        ask = _ceil_div(listed[name] * reserve_ppm, 1_000_000)
        bid = checked(
            m.client(name).post(
                f"/v1/auctions/{m.auction['id']}/bids",
                json={"provider_id": m.ids[name], "price_minor": ask},
            ),
            201,
        )
        out(
            f"   POST /v1/auctions/{m.auction['id']}/bids: {name} asks {money(ask)} "
            f"(bid {bid['id']})\n"
        )
    time.sleep(max(0.0, (closes - datetime.now(UTC)).total_seconds()) + 0.05)
    m.auction = checked(m.client("alice").post(f"/v1/auctions/{m.auction['id']}/close"))
    out(
        f"   POST /v1/auctions/{m.auction['id']}/close at {datetime.now(UTC):%H:%M:%S} UTC: "
        f"{m.auction['status']}\n"
    )
    for b in sorted(m.auction["bids"], key=lambda b: b.get("rank") or 99):
        rep = b["reputation"]
        paid = f", paid {money(b['payment_minor'])}" if b.get("won") else ""
        out(
            f"     {b['provider']}: asks {money(b['price_minor'])}, reputation "
            f"{rep['score']:.2f} of {rep['count']} rating(s), rank {b['rank']}{paid}\n"
        )
    awards = checked(m.client("alice").get("/v1/awards"))["items"]
    m.award = next(a for a in awards if a["request_id"] == m.request["id"])
    m.winner = next(n for n, i in m.ids.items() if i == m.award["provider_id"])
    out(
        f"   award {m.award['id']}: {m.winner} delivers for "
        f"{money(m.award['price_minor'], m.award['currency'])} (second price); delivery job "
        f"{m.award['job']['id']} queued for its daemons\n"
    )


def follow_the_job(
    m: Market, alive: Callable[[], None], out: Callable[[str], object], timeout: float = 120.0
) -> dict:
    """Watch the job through the winner's eyes (GET /v1/jobs/{id}, its usage) and print each
    transition and usage report as it appears, until it is done or failed."""
    job_id = m.award["job"]["id"]
    provider = m.client(m.winner)
    seen, reports = 0, 0
    t0 = time.monotonic()
    while True:
        usage = checked(provider.get(f"/v1/jobs/{job_id}/usage"))
        detail = checked(provider.get(f"/v1/jobs/{job_id}"))
        # What happened since the last look, in the broker's order of time.
        news = [
            (
                e["at"],
                f"job {job_id} {e['event']}: {e['from_status']} -> "
                f"{e['to_status']} (token {e['token']}"
                f"{', daemon ' + e['daemon'] if e['daemon'] else ''})",
            )
            for e in detail["events"][seen:]
        ]
        seen = len(detail["events"])
        if usage["reports"] > reports:
            reports = usage["reports"]
            news.append(
                (
                    usage["usage_at"] or "",
                    f"usage report {usage['last_sequence']}: "
                    f"{usage['packets_out']:,} packets, "
                    f"{usage['bytes_out']:,} bytes out",
                )
            )
        for at, text in sorted(news):
            out(f"   {at[11:23]}  {text}\n")
        if detail["job"]["status"] in ("done", "failed"):
            return {**detail, "usage": usage}
        alive()
        if time.monotonic() - t0 > timeout:
            raise DemoFailed(f"job {job_id} is still {detail['job']['status']} after {timeout:g} s")
        time.sleep(0.2)


def show_delivery(m: Market, job: dict, out: Callable[[str], object]) -> None:
    usage, measured = job["usage"], job["measured"] or {}
    spec = job["job"].get("spec") or {}
    chain = ",".join(spec.get("services") or [])
    limit = (
        f", at most {spec['max_rate_bps'] / 1e6:,.0f} Mbit/s" if spec.get("max_rate_bps") else ""
    )
    out(
        f"   job {job['job']['id']} {job['job']['status']}: through {chain}{limit}: "
        f"{usage['packets_out']:,} of {usage['packets_in']:,} packets, "
        f"{usage['bytes_out']:,} bytes out in {usage['reports']} usage report(s)\n"
    )
    for service, counters in usage["services"].items():
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items())[:6])
        out(f"   {service}: {shown}\n")
    what = {
        "price": "the award's price",
        "bytes": f"bytes past the data cap, by {m.winner}'s tariff",
    }
    for c in usage["charges"]:
        out(
            f"   charged to alice for the job: {what.get(c['kind'], c['kind'])} "
            f"{money(c['amount_minor'], c['currency'])}\n"
        )
    if measured:
        out(
            f"   measured by the broker: {measured['bytes']:,} bytes, block honoured: "
            f"{measured['block_honoured']}, errors {measured['errors']}, score "
            f"{measured['score']:.2f}\n"
        )


def rate_the_round(m: Market, out: Callable[[str], object]) -> dict:
    """Each side rates the other; the winner's card (GET /v1/providers/{id}) shows both its
    reputation and its measured record, as its next auctions will."""
    award_id = m.award["id"]
    checked(
        m.client("alice").post(
            f"/v1/awards/{award_id}/ratings", json={"score": 95, "comment": "every packet arrived"}
        ),
        201,
    )
    checked(
        m.client(m.winner).post(
            f"/v1/awards/{award_id}/ratings", json={"score": 100, "user_id": m.ids["alice"]}
        ),
        201,
    )
    card = checked(m.client("alice").get(f"/v1/providers/{m.award['provider_id']}"))
    rep = card["reputation"]
    out(
        f"   POST /v1/awards/{award_id}/ratings: alice rates the service 95/100, {m.winner} "
        f"rates her payment 100/100; {m.winner}'s card now shows reputation "
        f"{rep['score']:.2f} of {rep['count']} rating(s) and its deliveries: "
        f"{card['delivery']['summary']}\n"
    )
    return card


def bill_the_round(m: Market, folder: Path, out: Callable[[str], object]) -> dict:
    """home-isp's billing settings (its margin), alice's profiles and test card, and her
    statement for the period under way (the auction price and the usage charge), laid out by
    each of her profiles and as a PDF."""
    home, alice = m.ids["home-isp"], m.ids["alice"]
    user = m.client("alice")
    checked(
        m.client("home-isp").put(
            f"/v1/providers/{home}/billing-settings",
            json={"period_months": 1, "cutoff_day": 1, "timezone": "UTC", "margin_ppm": 50_000},
        )
    )
    for name, doc in PROFILES.items():
        checked(
            user.put(
                f"/v1/users/{alice}/profiles/{name}",
                json={"profile": doc, "default": name == "by-service"},
            )
        )
    draft = checked(user.get(f"/v1/users/{alice}/statements/current"))
    totals = ", ".join(money(v, c) for c, v in draft["totals"].items())
    out(
        f"   GET /v1/users/{alice}/statements/current: alice's statement from home-isp for "
        f"period {draft['period']} (until {draft['period_end'][:10]}) so far: "
        f"{len(draft['lines'])} line(s), {totals}\n"
    )
    path = f"/v1/users/{alice}/statements/current/render"
    for name in PROFILES:
        r = user.get(path, params={"profile": name, "format": "text"})
        if r.status_code != 200:
            checked(r)
        out(f"\n   alice's statement by her profile '{name}':\n")
        out("".join(f"   | {line}\n" for line in r.text.rstrip("\n").split("\n")))
    pdf = folder / "statement.pdf"
    r = user.get(path, params={"format": "pdf"})
    if r.status_code != 200:
        checked(r)
    pdf.write_bytes(r.content)
    out(f"\n   the statement as a PDF: {pdf}\n")
    card = checked(
        user.post(
            f"/v1/users/{alice}/payment-methods",
            json={"gateway": "test", "token": "tok_visa", "make_default": True},
        ),
        201,
    )
    credit = checked(user.get(f"/v1/users/{alice}/credit"))
    out(
        f"   alice's card on file: {card['brand']} ending {card['last4']} (test gateway); "
        f"her credit now: {money(credit['owed_minor'])} owed, "
        f"{money(credit['available_minor'])} available\n"
    )
    return draft


def close_the_month(m: Market, db_url: str, draft: dict, out: Callable[[str], object]) -> dict:
    """The month ends (the demo moves the market's clock to an hour after the period's end:
    the only step not run in real time, as the period under way ends on the 1st): home-isp's
    month-end run closes the period, alice's default test card pays her statement, and
    home-isp settles with the delivering provider, whether or not she paid (claim c04). The
    operator's commands (``pktx broker billing close``, ``payments collect``, ``settle``) on
    the broker's store, with that time."""
    from datetime import datetime, timedelta

    from sqlalchemy import select

    from broker import ledger
    from broker.actors import actor_for
    from broker.currency import Money
    from broker.models import Admin, Statement
    from broker.payment_jobs import collect
    from broker.settlements import settle_period
    from broker.statements import close_period
    from broker.store import Store

    home, alice = m.ids["home-isp"], m.ids["alice"]
    winner = m.award["provider_id"]
    when = datetime.fromisoformat(draft["period_end"]) + timedelta(hours=1)
    period = draft["period"]
    store = Store(db_url)
    try:
        with store.read() as s:
            admin_id = s.scalar(select(Admin.id).order_by(Admin.id))
            assert admin_id is not None  # the demo's market was seeded with one
            admin = actor_for(s, "admin", admin_id)
        closed = close_period(store.write, admin, home, period, now=when)
        out(
            f"   {when:%Y-%m-%d %H:%M} UTC (the market's clock moved to the month's end): "
            f"home-isp closes period {period}: {closed['statements']} statement(s), "
            f"{closed['lines']} line(s), numbered and sealed\n"
        )
        with store.read() as s:
            statement = s.scalar(
                select(Statement).where(Statement.user_id == alice, Statement.period == period)
            )
            assert statement is not None  # close_period just issued it
            sid, number = statement.id, statement.number
        paid = collect(store, [sid], now=when)
        with store.read() as s:
            st = s.get(Statement, sid)
            assert st is not None
            state, paid_minor = ("paid" if st.paid_at is not None else "unpaid"), st.paid_minor
        out(
            f"   statement {number}: alice's default card (visa ending 4242, the test gateway) "
            f"is charged automatically: {', '.join(f'{n} {k}' for k, n in paid.items())}; "
            f"the statement is {state} ({Money(paid_minor, 'EUR')})\n"
        )
        with store.write() as s:
            settled = settle_period(s, admin, period, now=when)
        for batch in settled["batches"]:
            due = ", ".join(str(Money(v, c)) for c, v in batch["due"].items())
            out(
                f"   settlement batch {batch['number']} home-isp -> {m.winner}: "
                f"{batch['line_count']} line(s), {due} due, {batch['status']}\n"
            )
        with store.read() as s:
            owed = -ledger.balance(s, ledger.payable(home, winner), "EUR")
            cash = ledger.balance(s, ledger.cash(home), "EUR")
            margin = -ledger.balance(s, ledger.revenue(home), "EUR")
        out(
            f"   home-isp's books: {Money(cash, 'EUR')} in cash = its 5% margin "
            f"{Money(margin, 'EUR')}; {Money(owed, 'EUR')} still owed to {m.winner}\n"
        )
        return {"statement": number, "paid": state, "batches": len(settled["batches"])}
    finally:
        store.dispose()
