"""Paying a statement in a real browser (Debian's headless Chromium, as
test_console_browser.py): a user at phone width pays by a card its issuer holds for 3-D
Secure, authenticates, and sees the statement paid; nothing on the page is wider than the
phone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_world import award
from marketplace import T0, Market
from test_console_browser import CHROMIUM, DRIVER, browsers  # noqa: F401 (a fixture)

from benchmarks.node_world import BrokerProcess
from broker import payment_methods, statements
from broker.actors import issue_key
from broker.payment_gateway import gateway
from broker.store import Store

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver"
)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """``pktx broker serve`` over alice's finalized statement of January 2030 (north's award
    at 5.00 EUR) and a card of hers that its issuer holds for 3-D Secure; her key."""
    broker = BrokerProcess(tmp_path_factory.mktemp("console-money"))
    store = Store(broker.db)
    m = Market(store)
    home = m.provider(m.network("home"), "home", services=("identity",))
    north = m.provider(m.network("north"), "north")
    alice = m.user("alice", home)
    award(store, m.actor("user", alice), north, price=500, at=T0)
    statements.close_period(
        store.write,
        m.actor("provider", home),
        home,
        "2030-01",
        now=datetime(2030, 2, 1, 1, tzinfo=UTC),
    )
    with store.write() as s:
        payment_methods.add_method(
            s,
            m.actor("user", alice),
            alice,
            gateway("test", store),
            token="tok_authenticationRequired",
        )
        key = issue_key(s, m.admin, "user", alice)[1]
    store.dispose()
    broker.start()
    yield type("MoneyConsole", (), {"url": broker.url, "key": key})
    broker.stop()


def test_a_user_pays_a_statement_with_3d_secure_at_phone_width(market, browsers):  # noqa: F811
    phone = browsers("alice", width=375)
    phone.sign_in(market.key)
    phone.open("/statements")
    phone.find('table[data-testid="statements"] a').click()
    phone.wait_for(lambda d: "Pay by card" in phone.text(), 10, "no pay form")
    assert "5.00 EUR" in phone.find('[data-testid="payment-state"]').text
    phone.submit("Pay")
    outcome = phone.wait_for(lambda d: phone.find('[data-testid="outcome"]'), 10, "no outcome")
    assert "pending" in outcome.text and "authenticate" in outcome.text
    phone.submit("Authenticate and pay")
    phone.wait_for(
        lambda d: "succeeded" in phone.find('[data-testid="outcome"]').text, 10, "not paid"
    )
    assert "paid" in phone.find('[data-testid="payment-state"]').text
    assert "Pay by card" not in phone.text()
    wide = phone.driver.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert wide <= 0, f"the page is {wide} px wider than the phone"
