"""The web console in a real browser: Debian's headless Chromium driven by Selenium against
``pktx broker serve`` on loopback, a market built for the test. A user makes a request and
auctions it, two providers bid from two browsers, the close reaches their open pages as a
server-sent event, the user sees the award, the price and the reputations; another user's
pages show none of it; forms refuse bad input beside the field and forged CSRF tokens.

Every page visited is kept as a screenshot and written under the test's tmp folder
(``screenshots/``) when the test fails. Skipped where ``chromium``/``chromedriver`` are not
installed (.ci/run installs them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from locations import ROOT
from marketplace import Market

from benchmarks.node_world import BrokerProcess
from broker.actors import issue_key
from broker.store import Store

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver"
)
CLOSES_IN = 12  # seconds from the auction's opening to its close: time for two bids


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """``pktx broker serve`` over a market: network "home" (provider home, identity only;
    users alice and bob), network "north" (providers north and south, every service); a key
    for each."""
    broker = BrokerProcess(tmp_path_factory.mktemp("console-broker"))
    store = Store(broker.db)
    m = Market(store)
    home_net, north_net = m.network("home"), m.network("north")
    ids = {"home": m.provider(home_net, "home", services=("identity",))}
    ids["north"], ids["south"] = m.provider(north_net, "north"), m.provider(north_net, "south")
    ids["alice"], ids["bob"] = m.user("alice", ids["home"]), m.user("bob", ids["home"])
    with store.write() as s:
        keys = {
            name: issue_key(s, m.admin, "user" if name in ("alice", "bob") else "provider", i)[1]
            for name, i in ids.items()
        }
    store.dispose()
    broker.start()
    world = type("Console", (), {"url": broker.url, "keys": keys, "ids": ids, "db": broker.db})
    yield world
    broker.stop()


class Page:
    """One browser (its own cookies), signed in as someone; every page it shows is kept as a
    screenshot for the failure report."""

    def __init__(self, base: str, name: str, shots: list, *, width: int = 1280) -> None:
        """A browser on the console at ``base``, its screenshots named after ``name``."""
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            f"--window-size={max(width, 500)},1000",
        ):
            options.add_argument(argument)
        if width < 500:  # headless windows are 500 px at least: a phone is emulated
            options.add_experimental_option(
                "mobileEmulation", {"deviceMetrics": {"width": width, "height": 800}}
            )
        self.driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        self.driver.implicitly_wait(0)
        self.base, self.name, self.shots = base, name, shots

    def shot(self, what: str) -> None:
        self.shots.append((f"{len(self.shots):02d}-{self.name}-{what}", self.driver))
        self.shots[-1] = (self.shots[-1][0], self.driver.get_screenshot_as_png())

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.shot(path.strip("/").replace("/", "-") or "home")

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self) -> str:
        return self.find("main").text

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            box = self.find(f"#{name}")
            box.clear()
            box.send_keys(value)

    def submit(self, button: str) -> None:
        self.driver.find_element(By.XPATH, f"//button[normalize-space()='{button}']").click()
        self.shot(button.split()[0].lower())

    def wait_for(self, what, timeout: float = 15.0, message: str = ""):
        try:
            # A page that reloads itself (the close) may go stale under the look: look again.
            return WebDriverWait(
                self.driver,
                timeout,
                poll_frequency=0.2,
                ignored_exceptions=(StaleElementReferenceException,),
            ).until(what)
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(message or "timed out") from None

    def sign_in(self, key: str) -> None:
        self.open("/signin")
        self.fill(api_key=key)
        self.find("#api_key").send_keys(Keys.ENTER)  # the keyboard alone signs in
        self.wait_for(lambda d: "/signin" not in d.current_url, 10, "sign-in did not finish")
        self.shot("signed-in")

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browsers(market, request, tmp_path):
    """``browsers(name, width=...)`` opens a browser; on failure every page they showed is
    written to ``<tmp_path>/screenshots/*.png``."""
    shots: list = []
    opened: list[Page] = []

    def open_browser(name: str, *, width: int = 1280, base: str | None = None) -> Page:
        page = Page(base or market.url, name, shots, width=width)
        opened.append(page)
        return page

    yield open_browser
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        folder = tmp_path / "screenshots"
        folder.mkdir(exist_ok=True)
        for page in opened:
            with contextlib.suppress(Exception):  # a browser that died has nothing to show
                page.shot("at-failure")
        for name, png in shots:
            (folder / f"{name}.png").write_bytes(png)
        print(f"console screenshots: {folder}")
    for page in opened:
        page.close()


def test_a_request_goes_to_auction_two_providers_bid_and_the_user_sees_the_award(market, browsers):
    alice = browsers("alice", width=375)  # a phone's width
    north, south = browsers("north"), browsers("south")
    for page, who in ((alice, "alice"), (north, "north"), (south, "south")):
        page.sign_in(market.keys[who])

    alice.open("/requests/new")
    alice.fill(max_price="50.00")
    alice.submit("Make the request")
    assert "/requests/" in alice.driver.current_url
    assert "brokering" in alice.find("[data-testid=request-status]").text
    request_path = alice.driver.current_url.removeprefix(market.url)
    alice.fill(reserve_price="20", closes_in=str(CLOSES_IN))
    alice.submit("Open the auction")
    auction_path = alice.driver.current_url.removeprefix(market.url)
    assert auction_path.startswith("/auctions/")
    opened = time.monotonic()
    assert "open" in alice.find("[data-testid=auction-status]").text
    # Nothing wider than the phone's screen: tables scroll inside their own box.
    assert alice.driver.execute_script("return window.innerWidth") == 375
    assert alice.driver.execute_script("return document.documentElement.scrollWidth") <= 375

    for page, price in ((north, "12.00"), (south, "9.00")):
        page.open("/auctions")
        listed = page.find("[data-testid=auctions-open]")
        assert "(0 ratings)" in listed.text  # the buyer's payment reputation
        listed.find_element(By.CSS_SELECTOR, f'a[href="{auction_path}"]').click()
        page.fill(price=price)
        page.submit("Send the bid")
        assert f"{price} EUR" in page.find("[data-testid=bids]").text, page.text()

    # Alice's page learns of the bids without a reload, and shows no price before the close.
    alice.wait_for(
        lambda d: d.find_element(By.CSS_SELECTOR, '[data-live="bid_count"]').text == "2",
        message="the bid count did not arrive by server-sent events",
    )
    alice.open(auction_path)  # the bidders' table is drawn with the page
    assert "north" in alice.text() and "south" in alice.text()
    assert "12.00 EUR" not in alice.text() and "9.00 EUR" not in alice.text()
    assert "no measured deliveries yet" in alice.find("[data-testid=bidders]").text

    time.sleep(max(0.0, CLOSES_IN + 0.5 - (time.monotonic() - opened)))
    alice.open(auction_path)
    alice.submit("Close the auction and award")
    assert "closed" in alice.find("[data-testid=auction-status]").text
    won = alice.find("tr.won").text
    assert "south" in won and "won" in won and "12.00 EUR" in won  # second price: north's ask
    assert "(0 ratings)" in won  # the reputation it was scored with

    # North's open page hears of the close and reloads itself with the result.
    north.wait_for(
        lambda d: "closed" in d.find_element(By.CSS_SELECTOR, "[data-testid=auction-status]").text,
        message="the close did not reach the provider's open page",
    )
    north.shot("closed")
    assert "lost" in north.find("[data-testid=bids]").text

    alice.open("/awards")
    awards = alice.find("[data-testid=awards]").text
    assert f"auction #{auction_path.rsplit('/', 1)[1]}" in awards and "12.00 EUR" in awards
    south.open("/awards")
    assert "12.00 EUR" in south.find("[data-testid=awards]").text

    # The delivery: the user watches its award while the winner's daemon (here, the test
    # through the API with south's key) reports usage; the numbers move without a reload.
    alice.find("[data-testid=awards] a[href^='/awards/']").click()
    alice.shot("award")
    job = int(alice.find("[data-testid=progress]").text.split("job #")[1].split()[0])
    started = datetime.now(UTC) - timedelta(seconds=4)
    for sequence, sent in ((1, 1_000_000), (2, 3_500_000)):
        answer = httpx.post(
            f"{market.url}/v1/jobs/{job}/usage",
            json={
                "sequence": sequence,
                "bytes_out": sent,
                "packets_out": sent // 1000,
                "at": (started + timedelta(seconds=2 * sequence)).isoformat(),
            },
            headers={"Authorization": f"Bearer {market.keys['south']}"},
        )
        assert answer.status_code == 201, answer.text
    alice.wait_for(
        lambda d: d.find_element(By.CSS_SELECTOR, '[data-live="bytes_out"]').text == "3,500,000",
        message="the delivery's progress did not arrive by server-sent events",
    )
    alice.shot("progress")
    assert "?v=" in alice.find("img[data-live-chart]").get_attribute("src")  # drawn again
    alice.fill(score="90", comment="as promised")
    alice.submit("Send the rating")
    assert "Your rating: 90 of 100" in alice.find("[data-testid=rated]").text

    # The statement the award's price is on (the period under way: nothing is closed yet),
    # and its PDF, fetched by the page's own session.
    alice.open("/statements")
    alice.find("[data-testid=current]").click()
    alice.shot("statement")
    statement_path = alice.driver.current_url.removeprefix(market.url)
    assert "12.00 EUR" in alice.find("[data-testid=current-summary]").text
    assert "12.00 EUR" in alice.find("[data-testid=charges-by-provider]").text
    pdf = alice.driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0], {credentials: "same-origin"}).then(async (r) => {
          const head = new Uint8Array(await r.arrayBuffer()).slice(0, 5);
          done([r.status, r.headers.get("content-type"), String.fromCharCode(...head)]);
        }).catch((e) => done(["failed", String(e)]));""",
        alice.find("[data-testid=pdf]").get_attribute("href"),
    )
    assert pdf == [200, "application/pdf", "%PDF-"], pdf

    # Another user sees none of it: not the request, not the auction, not the award.
    bob = browsers("bob")
    bob.sign_in(market.keys["bob"])
    bob.open(statement_path)  # his own period: nothing of alice's
    assert "12.00 EUR" not in bob.text()
    assert "nothing" in bob.find("[data-testid=current-summary]").text
    for path in (request_path, auction_path):
        bob.open(path)
        assert bob.find("h1").text == "Not yours to see"
        assert "anonymize" not in bob.text() and "EUR" not in bob.text()
    for path in ("/requests", "/awards", "/auctions"):
        bob.open(path)
        assert request_path not in bob.driver.page_source
        assert auction_path not in bob.driver.page_source
        assert "12.00 EUR" not in bob.text()


def test_forms_refuse_bad_input_beside_the_field_and_forged_csrf_tokens(market, browsers):
    bob = browsers("bob")
    bob.sign_in(market.keys["bob"])
    bob.open("/requests")
    before = bob.text()

    bob.open("/requests/new")
    bob.fill(max_rate="ten", max_price="1.234")
    bob.submit("Make the request")
    for field, said in (("max_rate", "not a number"), ("max_price", "at most 2 decimal")):
        box, error = bob.find(f"#{field}"), bob.find(f"#{field}-error")
        assert said in error.text and error.is_displayed()
        assert box.get_attribute("aria-invalid") == "true"
        assert f"{field}-error" in box.get_attribute("aria-describedby")
        assert error.location["y"] > box.location["y"]  # right under its field

    for forge in (
        "document.querySelector('main input[name=csrf_token]').value = 'forged'",
        "document.querySelector('main input[name=csrf_token]').remove()",
    ):
        bob.open("/requests/new")
        bob.driver.execute_script(forge)
        bob.submit("Make the request")
        assert bob.find("h1").text == "Form refused"
        assert "security token" in bob.text()
    bob.open("/requests")
    assert bob.text() == before  # nothing was made

    # Signing out ends the session: the pages send the browser back to sign in.
    bob.submit("Sign out")
    bob.open("/requests")
    assert bob.driver.current_url.endswith("/signin")


def test_the_demos_market_in_the_console(browsers, tmp_path):
    """``pktx demo --serve``: the user of the demo's round sees its auction, closed, with
    every bid, the winner and the reputations. The picture is the README's
    (``PKTX_DOCS_SCREENSHOT=1`` writes it to docs/console.png)."""
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "engine.cli", "demo", "--dir", str(tmp_path / "demo")),
            *("--packets", "500", "--flows", "5", "--serve"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert demo.stdout is not None
        said = []
        for line in demo.stdout:
            said.append(line)
            if line.startswith("   bob's phone "):
                break
        text = "".join(said)
        url = text.split("its web console is at ", 1)[1].split(" ", 1)[0].rstrip("/")
        alice_key = next(line.split()[-1] for line in said if line.startswith("   alice "))
        alice = browsers("demo-alice", base=url)
        alice.sign_in(alice_key)
        alice.open("/auctions")
        alice.find("[data-testid=auctions-closed] a[href^='/auctions/']").click()
        alice.shot("auction")
        bids = alice.find("[data-testid=bids]")
        rows = bids.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 3 and len(bids.find_elements(By.CSS_SELECTOR, "tr.won")) == 1
        assert "ratings)" in bids.text and "EUR" in bids.text
        picture = alice.driver.get_screenshot_as_png()
        (tmp_path / "console.png").write_bytes(picture)
        if os.environ.get("PKTX_DOCS_SCREENSHOT"):
            (ROOT / "docs" / "console.png").write_bytes(picture)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
