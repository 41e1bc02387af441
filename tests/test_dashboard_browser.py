"""The dashboard page in a real headless Chromium, against the real service on a 1 s cadence.

Chromium is driven by Selenium through Debian's chromedriver (package `chromium-driver`), named
explicitly so that nothing is looked up or downloaded. Screenshots of each view are saved in
artifacts/ for a person to look at. Without Chromium these tests are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import free_port
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.system  # real servers, processes or sockets

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SERVICE_START_TIMEOUT = 60.0  # seconds until the first values are published
PAGE_TIMEOUT = 30.0  # seconds for the page to reach a state it must reach
MOSCOW_OFFSET = timedelta(hours=3)
TOKEN = "dashboard-test-token"
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver; Selenium Manager never runs
# The launch flags, exactly: no GPU, no sandbox (root in CI), and no traffic of its own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# The page is ready: live (or told why not), every card has a publication, the table is filled
# and both charts have points.
DASHBOARD_READY = """return (() => {
  const cards = [...document.querySelectorAll('.card')];
  return ['live', 'stale', 'paused'].includes(document.querySelector('#conn')?.dataset.state)
    && cards.length > 0 && cards.every((c) => c.dataset.seq)
    && cards.every((c) => Number(c.querySelector('canvas').dataset.points) > 0)
    && document.querySelectorAll('#constituents tbody tr[data-secid]').length > 0;
})()"""

# Everything the assertions need from the page, read in one go so it is one consistent moment.
PAGE_STATE = """return (() => {
  const text = (root, sel) => (root.querySelector(sel)?.textContent ?? '').trim();
  const cards = {};
  for (const card of document.querySelectorAll('.card')) {
    cards[card.dataset.code] = {
      seq: Number(card.dataset.seq), time: card.dataset.time, dir: card.dataset.dir,
      value: text(card, '[data-field=value]'),
      change: text(card, '[data-field=change]'),
      change_percent: text(card, '[data-field=change_percent]'),
      published: text(card, '[data-field=time]'),
      previous_close: text(card, '[data-field=previous_close]'),
      fx_rate: text(card, '[data-field=fx_rate]'),
      points: Number(card.querySelector('canvas').dataset.points || 0),
    };
  }
  const rows = [...document.querySelectorAll('#constituents tbody tr[data-secid]')].map((tr) => ({
    secid: tr.dataset.secid,
    price: tr.querySelector('.price').textContent,
    change: tr.querySelector('.chg').textContent,
    weight: tr.querySelector('.weight').textContent,
    contribution: tr.querySelector('.contribution').textContent,
    stale: tr.classList.contains('stale') && tr.querySelector('.stale-tag') !== null,
  }));
  const conn = document.querySelector('#conn');
  return {
    cards, rows,
    conn: conn.dataset.state,
    conn_text: conn.textContent.trim(),
    resumed: Number(conn.dataset.resumed || 0),
    asof: document.querySelector('#constituents-asof').textContent,
    theme: document.documentElement.dataset.theme || '',
    background: getComputedStyle(document.body).backgroundColor,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  };
})()"""


def get_json(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.load(response)


def post_json(base: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def signed(x: float, digits: int) -> str:
    """The page's signed number: '+' for gains, a real minus sign for losses, none for zero."""
    shown = float(f"{x:.{digits}f}")
    sign = "+" if shown > 0 else "−" if shown < 0 else ""
    return f"{sign}{abs(x):,.{digits}f}"


def unsigned(text: str) -> float:
    """The number a signed page text stands for."""
    return float(text.replace("−", "-").replace("+", "").replace(",", "").rstrip("%"))


def moscow_clock(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return (moment + MOSCOW_OFFSET).strftime("%H:%M:%S") + " MSK"


def luminance(css_colour: str) -> float:
    """Rough 0..1 brightness of an 'rgb(r, g, b)' string."""
    r, g, b = (int(part) for part in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


class Service:
    """`index-ticker serve` as a child process on a port of its own."""

    def __init__(
        self,
        port: int,
        log_path: Path,
        redis_url: str | None = None,
        feed: str = "simulator",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.redis_url = redis_url
        self.feed = feed
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "streaming.cli", "serve", "--feed", self.feed]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--cadence", "1"]
        command += ["--log-level", "warning"]
        if self.redis_url:
            command += ["--redis-url", self.redis_url]
        command += self.extra
        env = {**os.environ, "INDEX_TICKER_INGEST_TOKEN": TOKEN}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"service exited with {self.process.returncode}:\n{self.log()}")
            try:
                values = get_json(self.base, "/v1/indices")
                if values and all(item.get("value") is not None for item in values):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"no values within {SERVICE_START_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


class Page:
    """One Chromium tab on the dashboard, driven by Selenium."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    def open(
        self,
        service: Service,
        *,
        width: int = 1280,
        height: int = 900,
        phone: bool = False,
        theme: str | None = None,
    ) -> dict[str, Any]:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone}
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        self.driver.get(service.base + "/" + (f"?theme={theme}" if theme else ""))
        self.wait_for(DASHBOARD_READY, what="the dashboard to be ready", service=service)
        return self.state()

    def run(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.run(PAGE_STATE)
        return state

    def wait_for(
        self, script: str, *, what: str, service: Service | None = None, timeout: float = 0
    ) -> None:
        """Wait until the JS `script` returns something truthy; fail naming `what` if it never
        does, with the page's state and the service log."""

        def condition(driver: WebDriver) -> Any:
            return driver.execute_script(script)

        try:
            WebDriverWait(self.driver, timeout or PAGE_TIMEOUT, poll_frequency=0.1).until(condition)
        except TimeoutException:
            log = f"\nservice log:\n{service.log()}" if service else ""
            pytest.fail(f"timed out waiting for {what}; page: {self.state()}{log}")

    def wait_for_conn(self, conn: str, service: Service | None = None) -> None:
        self.wait_for(
            f"return document.querySelector('#conn').dataset.state === {json.dumps(conn)}",
            what=f"connection state {conn!r}",
            service=service,
        )

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.run("return new Promise((done) => requestAnimationFrame(() => done(true)))")
        assert self.driver.save_screenshot(str(path)), f"no screenshot saved to {path}"
        assert path.stat().st_size > 1000, f"{path} is empty"
        return path


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("the dashboard tests need Chromium (Debian: apt-get install chromium)")
    if not Path(CHROMEDRIVER).exists():
        pytest.fail(
            f"Chromium is here but {CHROMEDRIVER} is not: apt-get install chromium-driver",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One in-memory service on the simulated market, for the read-only page tests."""
    running = Service(free_port(), tmp_path_factory.mktemp("service") / "service.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(chromium_binary: str, tmp_path: Path) -> Iterator[Page]:
    options = Options()
    options.binary_location = chromium_binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver_log = tmp_path / "chromedriver.log"
    try:
        driver = webdriver.Chrome(
            options=options,
            service=DriverService(executable_path=CHROMEDRIVER, log_output=str(driver_log)),
        )
    except WebDriverException as error:
        log = driver_log.read_text(errors="replace")[-3000:] if driver_log.exists() else ""
        pytest.fail(f"Chromium did not start: {error.msg}\n{log}", pytrace=False)
    driver.set_script_timeout(PAGE_TIMEOUT)
    try:
        yield Page(driver)
    finally:
        driver.quit()


def moved_on(previous: dict[str, Any], by: int = 1) -> str:
    """JS: every card shows a publication `by` seq later than before, and its chart has grown."""
    checks = [
        f"((c) => Number(c.dataset.seq) >= {card['seq'] + by}"
        f" && Number(c.querySelector('canvas').dataset.points) > {card['points']})"
        f"(document.querySelector('.card[data-code={code}]'))"
        for code, card in previous["cards"].items()
    ]
    return "return " + " && ".join(checks)


def published_at(service: Service, code: str, iso: str) -> dict[str, Any]:
    """The publication of `code` at the grid instant `iso`, from the history API."""
    at = quote(iso)
    shown = get_json(service.base, f"/v1/indices/{code}/history?since={at}&until={at}")
    assert shown["count"] == 1, shown
    value: dict[str, Any] = shown["values"][0]
    return value


def assert_card_matches(card: dict[str, Any], published: dict[str, Any]) -> None:
    assert published["seq"] == card["seq"]
    assert card["value"] == f"{published['value']:,.2f}"
    assert card["change"] == signed(published["change"], 2)
    assert card["change_percent"] == f"({signed(published['change_percent'], 2)}%)"
    assert card["previous_close"] == f"{published['previous_close']:,.2f}"
    assert card["published"] == moscow_clock(published["time"])
    change = published["change"]
    assert card["dir"] == ("up" if change > 0 else "down" if change < 0 else "flat")


def test_cards_show_the_published_values(page: Page, service: Service) -> None:
    state = page.open(service)
    page.screenshot("dashboard-open.png")
    assert state["conn"] == "live"
    latest = {item["code"]: item for item in get_json(service.base, "/v1/indices")}
    assert set(state["cards"]) == {"IMOEX", "RTSI"}
    for code, card in state["cards"].items():
        # The page may lag the API by an update; compare with the publication it shows.
        assert card["seq"] <= latest[code]["seq"]
        assert_card_matches(card, published_at(service, code, card["time"]))
        history = get_json(service.base, f"/v1/indices/{code}/history?limit=10000")
        assert 1 <= card["points"] <= history["count"]
    rtsi = published_at(service, "RTSI", state["cards"]["RTSI"]["time"])
    assert state["cards"]["RTSI"]["fx_rate"] == f"{rtsi['fx_rate']:,.4f}"
    assert state["cards"]["IMOEX"]["fx_rate"] == ""  # IMOEX has no FX line on its card


def test_page_follows_live_updates(page: Page, service: Service) -> None:
    first = page.open(service)
    page.wait_for(moved_on(first, by=2), what="two more publications", service=service)
    later = page.state()
    assert later["conn"] == "live"
    for code in ("IMOEX", "RTSI"):
        assert later["cards"][code]["time"] > first["cards"][code]["time"]
    # The table is fetched again after updates: its as-of time moves on too.
    page.wait_for(
        "return document.querySelector('#constituents-asof').textContent !== "
        + json.dumps(first["asof"]),
        what="the constituents table to refresh",
    )
    page.screenshot("dashboard-light.png")


def test_constituents_table_matches_the_api_and_sorts(page: Page, service: Service) -> None:
    state = page.open(service)
    api = get_json(service.base, "/v1/indices/IMOEX/constituents")["constituents"]
    assert sorted(row["secid"] for row in state["rows"]) == sorted(line["secid"] for line in api)
    weights = {line["secid"]: line["weight"] for line in api}
    for row in state["rows"]:
        # Weights drift with prices between two reads; a line keeps its size to 0.1 point.
        assert float(row["weight"]) == pytest.approx(weights[row["secid"]], abs=0.1)
    shown = [float(row["weight"]) for row in state["rows"]]
    assert shown == sorted(shown, reverse=True), "default order is by weight, largest first"

    click = "document.querySelector('#constituents th[data-key={key}] button').click()"
    secids = (
        "return [...document.querySelectorAll('#constituents tbody tr')]"
        ".map((tr) => tr.dataset.secid)"
    )
    page.run(click.format(key="secid"))
    ascending = page.run(secids)
    assert ascending == sorted(ascending)
    assert page.run("return document.querySelector('th[data-key=secid]').ariaSort") == "ascending"
    page.run(click.format(key="secid"))
    assert page.run(secids) == sorted(ascending, reverse=True)

    page.run(click.format(key="price"))
    prices = page.run(
        "return [...document.querySelectorAll('#constituents tbody .price')]"
        ".map((td) => Number(td.textContent.replaceAll(',', '')))"
    )
    assert prices == sorted(prices, reverse=True)
    assert len(prices) == len(api)

    page.run(click.format(key="contribution"))
    contributions = page.run(
        "return [...document.querySelectorAll('#constituents tbody tr')]"
        ".map((tr) => tr.dataset.contribution).filter((x) => x !== undefined).map(Number)"
    )
    assert contributions == sorted(contributions, reverse=True)


def test_posted_tick_moves_the_page_to_the_api_value(page: Page, tmp_path: Path) -> None:
    """No simulated market: only the tick this test posts moves the indices."""
    service = Service(free_port(), tmp_path / "service.log", feed="none")
    service.start()
    try:
        before = page.open(service)
        # No tick yet today: the feed is silent and every line is stale, valued at its close.
        page.wait_for_conn("stale", service)
        assert "no ticks" in page.state()["conn_text"]
        assert before["rows"] and all(row["stale"] for row in before["rows"])
        assert all(row["contribution"] == "0.00" for row in before["rows"])
        lines = get_json(service.base, "/v1/indices/IMOEX/constituents")["constituents"]
        line = max(lines, key=lambda item: item["weight"])
        secid, price = line["secid"], round(line["price"] * 1.05, 2)

        answer = post_json(service.base, "/v1/ticks", [{"secid": secid, "price": price}])
        assert answer["accepted"] == 1, answer
        page.wait_for(
            "return document.querySelector("
            f"'#constituents tr[data-secid={secid}] .price').textContent === "
            + json.dumps(f"{price:,.2f}"),
            what=f"{secid} at {price} in the table",
            service=service,
        )
        page.wait_for(moved_on(before), what="the publication after the tick", service=service)
        page.wait_for_conn("live", service)
        state = page.state()
        page.screenshot("dashboard-after-tick.png")
        for code, card in state["cards"].items():
            published = published_at(service, code, card["time"])
            assert_card_matches(card, published)
            assert published["change"] > 0, "a 5 % rise of the largest line lifts the index"
            assert card["value"] != before["cards"][code]["value"]
        row = next(row for row in state["rows"] if row["secid"] == secid)
        assert not row["stale"], "a line just traded is not stale"
        assert row["change"] == "+5.00%"
        # The only line that moved makes all of the index's move since the close.
        imoex = published_at(service, "IMOEX", state["cards"]["IMOEX"]["time"])
        assert unsigned(row["contribution"]) == pytest.approx(imoex["change"], abs=0.011)
        others = [r for r in state["rows"] if r["secid"] != secid]
        assert all(r["stale"] and r["contribution"] == "0.00" for r in others)
    finally:
        service.stop()


def test_dark_theme_and_toggle(page: Page, service: Service) -> None:
    dark = page.open(service, theme="dark")
    page.screenshot("dashboard-dark.png")
    assert luminance(dark["background"]) < 0.2, dark["background"]
    page.run("document.querySelector('#theme-toggle').click()")
    light = page.state()
    assert light["theme"] == "light"
    assert luminance(light["background"]) > 0.8, light["background"]
    # The choice is remembered for the next visit.
    assert page.run("return localStorage.getItem('theme')") == "light"


def test_phone_width_stacks_cards_without_sideways_scroll(page: Page, service: Service) -> None:
    state = page.open(service, width=390, height=844, phone=True)
    page.screenshot("dashboard-phone.png")
    assert state["scrollWidth"] <= state["innerWidth"] == 390
    first, second = page.run(
        "return [...document.querySelectorAll('.card')]"
        ".map((c) => c.getBoundingClientRect().toJSON())"
    )
    assert second["top"] >= first["bottom"], "cards stack in one column"
    assert first["width"] == pytest.approx(second["width"])


def test_stale_then_live_again_when_the_service_pauses(page: Page, service: Service) -> None:
    page.open(service)
    assert service.process is not None
    service.process.send_signal(signal.SIGSTOP)  # the socket stays open but nothing arrives
    try:
        page.wait_for_conn("stale", service)
        assert "since update" in page.state()["conn_text"]
        page.screenshot("dashboard-stale.png")
    finally:
        service.process.send_signal(signal.SIGCONT)
    page.wait_for_conn("live", service)


def test_reconnects_and_resumes_by_seq_after_a_restart(
    page: Page, redis_url: str, tmp_path: Path
) -> None:
    service = Service(free_port(), tmp_path / "service.log", redis_url)
    service.start()
    try:
        before = page.open(service)
        page.run("window.sameDocument = true")  # gone if the page reloads
        service.stop()
        page.wait_for_conn("reconnecting", service)
        down = page.state()
        page.screenshot("dashboard-reconnecting.png")
        assert down["cards"]["IMOEX"]["value"] != "—", "values stay on screen while offline"
        service.start()
        # State lives in Redis, so seq goes on from where it was and the chart keeps the day.
        page.wait_for(moved_on(down, by=2), what="updates after the restart", service=service)
        page.wait_for_conn("live", service)
        after = page.state()
        assert page.run("return window.sameDocument === true"), "the page was reloaded"
        assert after["resumed"] >= 2, "both indices resumed from their last seq"
        for code in ("IMOEX", "RTSI"):
            card = after["cards"][code]
            assert card["points"] > before["cards"][code]["points"]
            # Resumed by seq: every publication of the day up to the shown one is on the chart,
            # those made while the page was away included, none twice.
            at = quote(card["time"])
            history = get_json(service.base, f"/v1/indices/{code}/history?until={at}&limit=10000")
            assert history["values"][-1]["seq"] == card["seq"]
            assert card["points"] == history["count"]
            assert_card_matches(card, published_at(service, code, card["time"]))
    finally:
        service.stop()


def closed_session_definition(folder: Path) -> Path:
    """The shipped IMOEX definition with its session hours moved away from now: whatever the day
    and time the test runs, the session is closed (a trading day out of hours, or a holiday)."""
    shipped = ROOT / "streaming" / "data" / "imoex.toml"
    now = datetime.now(UTC) + MOSCOW_OFFSET
    start = (now.hour + 6) % 24 if now.hour < 12 else (now.hour - 10) % 24
    hours = [f"{(start + n) % 24:02d}:00" for n in range(3)]
    lines = []
    for line in shipped.read_text().splitlines():
        key = line.split("=")[0].strip()
        if key == "base":
            line = f'base = "{shipped.parent / "imoex_base.csv"}"'
        elif key in ("opening_auction", "extended"):
            line = f"{key} = []"  # none: left out, the defaults (09:50-10:00, ...) would apply
        elif key in ("continuous_start", "auction_end"):
            line = f'{key} = "{hours[0 if key == "continuous_start" else 2]}"'
        elif key in ("continuous_end", "auction_start"):
            line = f'{key} = "{hours[1]}"'
        lines.append(line)
    path = folder / "closed.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_session_paused_when_the_exchange_is_closed(
    page: Page, redis_url: str, tmp_path: Path
) -> None:
    """Values published around the clock, then the service runs the exchange's session, closed
    now: the last values stay on screen and the page says the session is paused."""
    first = Service(free_port(), tmp_path / "always.log", redis_url)
    first.start()
    first.stop()
    closed = closed_session_definition(tmp_path)
    extra = ("--session", "moex", "--definition", str(closed))
    service = Service(free_port(), tmp_path / "moex.log", redis_url, extra=extra)
    service.start()
    try:
        state = page.open(service)
        page.wait_for_conn("paused", service)  # told by the heartbeat of a quiet connection
        state = page.state()
        page.screenshot("dashboard-paused.png")
        assert state["conn_text"] == "session paused"
        for code, card in state["cards"].items():
            assert_card_matches(card, published_at(service, code, card["time"]))
    finally:
        service.stop()
