"""The dashboard page in a real headless Chromium, against the real service on a 1 s cadence.

Chromium is driven over the DevTools protocol (tools/screenshot.py). Screenshots of each view are
saved in artifacts/ for a person to look at. Without Chromium on PATH these tests fail, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SERVICE_START_TIMEOUT = 60.0  # seconds until the first values are published
PAGE_TIMEOUT = 30.0  # seconds for the page to reach a state it must reach
MOSCOW_OFFSET = timedelta(hours=3)


def _load_browser_module() -> ModuleType:
    path = ROOT / "tools" / "screenshot.py"
    spec = importlib.util.spec_from_file_location("dashboard_browser_tools", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


browser_tools = _load_browser_module()
Chromium = browser_tools.Chromium
BrowserError = browser_tools.BrowserError
DASHBOARD_READY = browser_tools.DASHBOARD_READY

# Everything the assertions need from the page, read in one go so it is one consistent moment.
PAGE_STATE = """(() => {
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
    weight: tr.querySelector('.weight').textContent,
  }));
  return {
    cards, rows,
    conn: document.querySelector('#conn').dataset.state,
    theme: document.documentElement.dataset.theme || '',
    background: getComputedStyle(document.body).backgroundColor,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  };
})()"""


def get_json(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.load(response)


def signed(x: float, digits: int) -> str:
    """The page's signed number: '+' for gains, a real minus sign for losses, none for zero."""
    shown = float(f"{x:.{digits}f}")
    sign = "+" if shown > 0 else "−" if shown < 0 else ""
    return f"{sign}{abs(x):,.{digits}f}"


def moscow_clock(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return (moment + MOSCOW_OFFSET).strftime("%H:%M:%S") + " MSK"


def luminance(css_colour: str) -> float:
    """Rough 0..1 brightness of an 'rgb(r, g, b)' string."""
    r, g, b = (int(part) for part in css_colour[css_colour.index("(") + 1 : -1].split(",")[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


class Service:
    """`index-ticker serve` as a child process on a port of its own."""

    def __init__(self, port: int, log_path: Path, redis_url: str | None = None) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.redis_url = redis_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "streaming.cli", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--cadence", "1"]
        command += ["--log-level", "warning"]
        if self.redis_url:
            command += ["--redis-url", self.redis_url]
        env = {**os.environ, "INDEX_TICKER_INGEST_TOKEN": "dashboard-test-token"}
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


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    try:
        binary: str = browser_tools.find_chromium()
    except BrowserError as error:
        missing = str(error)
    else:
        return binary
    pytest.fail(f"the dashboard tests need Chromium: {missing}", pytrace=False)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One in-memory service for the read-only page tests."""
    running = Service(free_port(), tmp_path_factory.mktemp("service") / "service.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser(chromium_binary: str) -> Iterator[Any]:
    with Chromium(chromium_binary) as chromium:
        yield chromium


def open_dashboard(browser: Any, service: Service, **view: Any) -> dict[str, Any]:
    browser.open(service.base + "/", **view)
    try:
        browser.wait_for(DASHBOARD_READY, timeout=PAGE_TIMEOUT)
        browser.wait_for(
            "[...document.querySelectorAll('canvas')].every((c) => Number(c.dataset.points) > 0)",
            timeout=PAGE_TIMEOUT,
        )
    except BrowserError as error:
        pytest.fail(f"{error}\nservice log:\n{service.log()}")
    state: dict[str, Any] = browser.evaluate(PAGE_STATE)
    return state


def moved_on(previous: dict[str, Any], by: int = 1) -> str:
    """JS: every card shows a publication `by` seq later than before, and its chart has grown."""
    checks = [
        f"((c) => Number(c.dataset.seq) >= {card['seq'] + by}"
        f" && Number(c.querySelector('canvas').dataset.points) > {card['points']})"
        f"(document.querySelector('.card[data-code={code}]'))"
        for code, card in previous["cards"].items()
    ]
    return " && ".join(checks)


def test_cards_show_the_published_values(browser: Any, service: Service) -> None:
    page = open_dashboard(browser, service)
    assert page["conn"] == "live"
    latest = {item["code"]: item for item in get_json(service.base, "/v1/indices")}
    assert set(page["cards"]) == {"IMOEX", "RTSI"}
    for code, card in page["cards"].items():
        # The page may lag the API by an update; compare with the publication it shows.
        assert card["seq"] <= latest[code]["seq"]
        at = quote(card["time"])
        shown = get_json(service.base, f"/v1/indices/{code}/history?since={at}&until={at}")
        assert shown["count"] == 1, shown
        published = shown["values"][0]
        assert published["seq"] == card["seq"]
        assert card["value"] == f"{published['value']:,.2f}"
        assert card["change"] == signed(published["change"], 2)
        assert card["change_percent"] == f"({signed(published['change_percent'], 2)}%)"
        assert card["previous_close"] == f"{published['previous_close']:,.2f}"
        assert card["published"] == moscow_clock(published["time"])
        change = published["change"]
        assert card["dir"] == ("up" if change > 0 else "down" if change < 0 else "flat")
        history = get_json(service.base, f"/v1/indices/{code}/history?limit=10000")
        assert 1 <= card["points"] <= history["count"]
    at = quote(page["cards"]["RTSI"]["time"])
    rtsi = get_json(service.base, f"/v1/indices/RTSI/history?since={at}&until={at}")
    assert page["cards"]["RTSI"]["fx_rate"] == f"{rtsi['values'][0]['fx_rate']:,.4f}"
    assert page["cards"]["IMOEX"]["fx_rate"] == ""  # IMOEX has no FX line on its card


def test_page_follows_live_updates(browser: Any, service: Service) -> None:
    first = open_dashboard(browser, service)
    as_of = "document.querySelector('#constituents-asof').textContent"
    table_at_open = browser.evaluate(as_of)
    browser.wait_for(moved_on(first, by=2), timeout=PAGE_TIMEOUT)
    later = browser.evaluate(PAGE_STATE)
    assert later["conn"] == "live"
    for code in ("IMOEX", "RTSI"):
        assert later["cards"][code]["time"] > first["cards"][code]["time"]
    # The table is fetched again after updates: its as-of time moves on too.
    browser.wait_for(f"{as_of} !== {json.dumps(table_at_open)}", timeout=PAGE_TIMEOUT)
    browser.screenshot(ARTIFACTS / "dashboard-light.png")


def test_constituents_table_matches_the_api_and_sorts(browser: Any, service: Service) -> None:
    page = open_dashboard(browser, service)
    api = get_json(service.base, "/v1/indices/IMOEX/constituents")["constituents"]
    assert sorted(row["secid"] for row in page["rows"]) == sorted(line["secid"] for line in api)
    weights = {line["secid"]: line["weight"] for line in api}
    for row in page["rows"]:
        # Weights drift with prices between two reads; a line keeps its size to 0.1 point.
        assert float(row["weight"]) == pytest.approx(weights[row["secid"]], abs=0.1)
    shown = [float(row["weight"]) for row in page["rows"]]
    assert shown == sorted(shown, reverse=True), "default order is by weight, largest first"

    click = "document.querySelector('#constituents th[data-key={key}] button').click()"
    secids = (
        "[...document.querySelectorAll('#constituents tbody tr')].map((tr) => tr.dataset.secid)"
    )
    browser.evaluate(click.format(key="secid"))
    ascending = browser.evaluate(secids)
    assert ascending == sorted(ascending)
    assert browser.evaluate("document.querySelector('th[data-key=secid]').ariaSort") == "ascending"
    browser.evaluate(click.format(key="secid"))
    assert browser.evaluate(secids) == sorted(ascending, reverse=True)

    browser.evaluate(click.format(key="price"))
    prices = browser.evaluate(
        "[...document.querySelectorAll('#constituents tbody .price')]"
        ".map((td) => Number(td.textContent.replaceAll(',', '')))"
    )
    assert prices == sorted(prices, reverse=True)
    assert len(prices) == len(api)


def test_dark_theme_and_toggle(browser: Any, service: Service) -> None:
    dark = open_dashboard(browser, service, theme="dark")
    browser.screenshot(ARTIFACTS / "dashboard-dark.png")
    assert luminance(dark["background"]) < 0.2, dark["background"]
    browser.evaluate("document.querySelector('#theme-toggle').click()")
    light = browser.evaluate(PAGE_STATE)
    assert light["theme"] == "light"
    assert luminance(light["background"]) > 0.8, light["background"]
    # The choice is remembered for the next visit.
    assert browser.evaluate("localStorage.getItem('theme')") == "light"


def test_phone_width_stacks_cards_without_sideways_scroll(browser: Any, service: Service) -> None:
    page = open_dashboard(browser, service, width=390, height=844, phone=True)
    browser.screenshot(ARTIFACTS / "dashboard-phone.png")
    assert page["scrollWidth"] <= page["innerWidth"] == 390
    first, second = browser.evaluate(
        "[...document.querySelectorAll('.card')].map((c) => c.getBoundingClientRect().toJSON())"
    )
    assert second["top"] >= first["bottom"], "cards stack in one column"
    assert first["width"] == pytest.approx(second["width"])


def test_stale_then_live_again_when_the_service_pauses(browser: Any, service: Service) -> None:
    open_dashboard(browser, service)
    assert service.process is not None
    service.process.send_signal(signal.SIGSTOP)  # the socket stays open but nothing arrives
    try:
        browser.wait_for("document.querySelector('#conn').dataset.state === 'stale'", PAGE_TIMEOUT)
        browser.screenshot(ARTIFACTS / "dashboard-stale.png")
    finally:
        service.process.send_signal(signal.SIGCONT)
    browser.wait_for("document.querySelector('#conn').dataset.state === 'live'", PAGE_TIMEOUT)


def test_reconnects_and_resubscribes_after_a_restart(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    service = Service(free_port(), tmp_path / "service.log", redis_url)
    service.start()
    try:
        before = open_dashboard(browser, service)
        service.stop()
        browser.wait_for(
            "document.querySelector('#conn').dataset.state === 'reconnecting'", PAGE_TIMEOUT
        )
        down = browser.evaluate(PAGE_STATE)
        assert down["cards"]["IMOEX"]["value"] != "—", "values stay on screen while offline"
        service.start()
        # State lives in Redis, so seq goes on from where it was and the chart keeps the day.
        browser.wait_for(moved_on(down), PAGE_TIMEOUT)
        after = browser.evaluate(PAGE_STATE)
        assert after["conn"] == "live"
        for code in ("IMOEX", "RTSI"):
            assert after["cards"][code]["points"] > before["cards"][code]["points"]
    finally:
        service.stop()
