"""The Bank of Russia client: XML_daily.asp parsed from recorded files, the CBR 17:00 rule applied
to each rate, and the poller against a local HTTP server replaying a scripted sequence."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streaming.cbr import (
    CbrFeedError,
    CbrPoller,
    CbrPollSettings,
    CbrSource,
    CbrUsdRate,
    PollOutcome,
    daily_url,
    fetch_daily,
    parse_daily,
)
from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.methodology.fx import AddOutcome, CbrRule, FxSchedule, FxStep
from streaming.serve import assemble
from streaming.settings import Settings
from streaming.store.memory import MemoryStore
from tests.factories import small_definition

DATA = Path(__file__).parent / "data" / "cbr"
MSK = timezone(timedelta(hours=3))
MON, TUE = date(2026, 11, 23), date(2026, 11, 24)


def msk(day: date, hour: int, minute: int = 0) -> datetime:
    """A Moscow wall-clock moment as UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=MSK).astimezone(UTC)


def recorded(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- parsing the recorded documents -------------------------------------------------------


def test_parses_usd_value_decimal_comma_and_set_date() -> None:
    quote = parse_daily(recorded("daily_2026-11-21.xml"))
    assert quote.rate_date == date(2026, 11, 21)
    assert quote.value == Decimal("80.1234")
    assert quote.nominal == 1
    assert quote.rate == pytest.approx(80.1234, rel=1e-15)


def test_windows_1251_document_is_decoded() -> None:
    body = recorded("daily_2026-11-24.xml")
    # The recorded file is really windows-1251: Cyrillic names are not valid UTF-8 there.
    assert b'encoding="windows-1251"' in body
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    quote = parse_daily(body)
    assert quote.name == "Доллар США"
    # The same document in UTF-8 reads the same.
    utf8 = body.decode("windows-1251").replace("windows-1251", "utf-8").encode("utf-8")
    assert parse_daily(utf8) == quote


def test_rate_is_value_divided_by_nominal() -> None:
    quote = parse_daily(recorded("usd_nominal_10.xml"))
    assert (quote.value, quote.nominal) == (Decimal("815.4321"), 10)
    assert quote.rate == pytest.approx(81.54321, rel=1e-15)
    assert quote.rate_date == date(2026, 11, 25)


@pytest.mark.parametrize(
    ("name", "expected", "words"),
    [
        ("missing_usd.xml", "Valute[USD]", "no USD rate among 6 currencies (AUD, CNY, EUR"),
        ("malformed.xml", "xml", "malformed XML"),
        ("bad_value.xml", "Valute[USD].Value", "'81.5O00'"),
        ("bad_date.xml", "ValCurs.Date", "DD.MM.YYYY, got '2026-11-25'"),
    ],
)
def test_bad_documents_name_the_field_and_reason(name: str, expected: str, words: str) -> None:
    with pytest.raises(CbrFeedError) as caught:
        parse_daily(recorded(name))
    assert caught.value.field == expected
    assert words in caught.value.reason
    assert str(caught.value).startswith(f"{expected}: ")


def test_other_bad_bodies() -> None:
    cases = {
        b"": "body",
        b"<html><body>Service unavailable</body></html>": "ValCurs",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><ValCurs Date="21.11.2026"/>': (
            "body"
        ),
        b'<ValCurs name="x"><Valute><CharCode>USD</CharCode></Valute></ValCurs>': "ValCurs.Date",
    }
    for body, expected in cases.items():
        with pytest.raises(CbrFeedError) as caught:
            parse_daily(body)
        assert caught.value.field == expected, body
    usd = "<Valute><CharCode>USD</CharCode><Nominal>{n}</Nominal><Value>{v}</Value></Valute>"
    twice = f'<ValCurs Date="21.11.2026">{usd.format(n=1, v="1,0") * 2}</ValCurs>'
    with pytest.raises(CbrFeedError, match=r"Valute\[USD\]: appears 2 times"):
        parse_daily(twice.encode())
    for nominal, value, element in (("0", "80,1", "Nominal"), ("1", "0,0000", "Value")):
        document = f'<ValCurs Date="21.11.2026">{usd.format(n=nominal, v=value)}</ValCurs>'
        with pytest.raises(CbrFeedError, match=rf"Valute\[USD\]\.{element}: must be"):
            parse_daily(document.encode())


# --- the effective time (the CBR 17:00 rule) ------------------------------------------------


def test_rate_received_before_17_moscow_takes_effect_at_17() -> None:
    step = parse_daily(recorded("daily_2026-11-24.xml")).step(msk(MON, 15, 30))
    assert step == FxStep(
        rate=81.5,
        effective_from=datetime(2026, 11, 23, 14, 0, tzinfo=UTC),
        source="cbr:2026-11-24",
        published_at=msk(MON, 15, 30),
    )


def test_rate_received_after_17_takes_effect_on_receipt_and_catch_up_at_once() -> None:
    quote = parse_daily(recorded("daily_2026-11-24.xml"))
    assert quote.step(msk(MON, 18, 5)).effective_from == msk(MON, 18, 5)
    # Tuesday's own rate seen on Tuesday morning (a restart): in force at once.
    assert quote.step(msk(TUE, 9, 0)).effective_from == msk(TUE, 9, 0)
    # A rule with another switch time is honoured.
    late = CbrRule(switch_time=time(18, 0))
    assert quote.step(msk(MON, 15, 30), late).effective_from == msk(MON, 18, 0)


# --- fetching -----------------------------------------------------------------------------


@dataclass
class Replay:
    """A local HTTP server answering each request with the next scripted response.

    An item is a recorded file name, an (HTTP status, body) pair, or "hang" (no answer until the
    server stops). Once the script is over every request gets a 503."""

    script: list[str | tuple[int, bytes]]
    paths: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    base_url: str = ""

    def next_response(self, path: str) -> str | tuple[int, bytes]:
        self.paths.append(path)
        return self.script.pop(0) if self.script else (503, b"over")


@contextlib.contextmanager
def replaying(script: list[str | tuple[int, bytes]]) -> Iterator[Replay]:
    replay = Replay(list(script))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            item = replay.next_response(self.path)
            if item == "hang":
                replay.release.wait(30)
                return
            status, body = (200, recorded(item)) if isinstance(item, str) else item
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("Content-Type", "application/xml; charset=windows-1251")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    replay.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield replay
    finally:
        replay.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.system
def test_fetch_asks_for_the_daily_document_and_a_given_date() -> None:
    with replaying(["daily_2026-11-21.xml", "daily_2026-11-24.xml"]) as replay:
        latest = fetch_daily(daily_url(replay.base_url + "/"), timeout=5)
        dated = fetch_daily(daily_url(replay.base_url, date(2026, 11, 24)), timeout=5)
    assert replay.paths == ["/scripts/XML_daily.asp", "/scripts/XML_daily.asp?date_req=24/11/2026"]
    assert parse_daily(latest).rate_date == date(2026, 11, 21)
    assert parse_daily(dated).rate_date == date(2026, 11, 24)


@pytest.mark.system
def test_fetch_errors_name_status_timeout_size_and_unreachable() -> None:
    with replaying([(500, b"oops"), "hang", (200, b"x" * 2000)]) as replay:
        url = daily_url(replay.base_url)
        with pytest.raises(CbrFeedError, match=r"^http: .* answered 500"):
            fetch_daily(url, timeout=5)
        with pytest.raises(CbrFeedError, match=r"^http: .* gave no answer within 0.2 s"):
            fetch_daily(url, timeout=0.2)
        with pytest.raises(CbrFeedError, match=r"^body: larger than 1000 bytes"):
            fetch_daily(url, timeout=5, max_bytes=1000)
    # The server is gone: connection refused.
    with pytest.raises(CbrFeedError, match=r"^http: .* unreachable"):
        fetch_daily(url, timeout=5)


# --- the poller -----------------------------------------------------------------------------


class HourlyClock:
    """Epoch seconds: 10:00 Moscow on Monday 23 Nov 2026 at the first reading, one hour later at
    each next one (the poller reads it once per poll, at receipt)."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> float:
        moment = msk(MON, 10) + timedelta(hours=self.readings)
        self.readings += 1
        return moment.timestamp()


def fast(base_url: str) -> CbrPollSettings:
    return CbrPollSettings(
        base_url=base_url, interval=0.01, backoff_initial=0.01, backoff_max=0.02, timeout=1.0
    )


async def wait_for(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.system
async def test_poller_hands_over_exactly_the_new_rates() -> None:
    script: list[str | tuple[int, bytes]] = [
        "daily_2026-11-21.xml",  # 10:00 Saturday's rate, seen on Monday: posted, at once
        "daily_2026-11-21.xml",  # 11:00 the same again
        (500, b"Internal Server Error"),  # 12:00
        "malformed.xml",  # 13:00
        "missing_usd.xml",  # 14:00
        "hang",  # 15:00 timeout
        "daily_2026-11-24.xml",  # 16:00 Tuesday's rate: posted, effective 17:00
        "daily_2026-11-24.xml",  # 17:00 the same again
        "daily_2026-11-21.xml",  # 18:00 an older document (a lagging mirror)
        "daily_2026-11-24_corrected.xml",  # 19:00 a correction: posted, effective on receipt
    ]
    received: list[FxStep] = []
    with replaying(script) as replay:
        poller = CbrPoller(received.append, fast(replay.base_url), clock=HourlyClock())
        task = asyncio.create_task(poller.run())
        try:
            await wait_for(lambda: poller.polls >= len(script))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert received == [
        FxStep(80.1234, msk(MON, 10), "cbr:2026-11-21", published_at=msk(MON, 10)),
        FxStep(81.5, msk(MON, 17), "cbr:2026-11-24", published_at=msk(MON, 16)),
        FxStep(81.6, msk(MON, 19), "cbr:2026-11-24", published_at=msk(MON, 19)),
    ]
    results = list(poller.results)[: len(script)]
    assert [r.outcome.value for r in results] == [
        "posted",
        "unchanged",
        "failed",
        "failed",
        "failed",
        "failed",
        "posted",
        "unchanged",
        "older",
        "posted",
    ]
    errors = [r.error or "" for r in results if r.outcome is PollOutcome.FAILED]
    assert "answered 500" in errors[0]
    assert errors[1].startswith("xml: malformed XML")
    assert errors[2].startswith("Valute[USD]: no USD rate")
    assert "gave no answer within 1 s" in errors[3]
    assert all(path == "/scripts/XML_daily.asp" for path in replay.paths)
    # What the engine's schedule makes of them: the step function the CBR rule describes.
    schedule = FxSchedule()
    for step in received:
        schedule.add(step)
    assert [schedule.rate_at(msk(MON, h, m)).rate for h, m in ((16, 59), (17, 0), (19, 0))] == [  # type: ignore[union-attr]
        80.1234,
        81.5,
        81.6,
    ]


@pytest.mark.system
async def test_backoff_grows_with_failures_and_resets_on_success() -> None:
    settings = CbrPollSettings(interval=300, backoff_initial=30, backoff_max=200)
    assert [settings.delay_after(n) for n in range(6)] == [300, 30, 60, 120, 200, 200]
    assert settings.delay_after(10_000) == 200
    script: list[str | tuple[int, bytes]] = [(502, b""), "malformed.xml", "daily_2026-11-21.xml"]
    with replaying(script) as replay:
        poller = CbrPoller(
            lambda step: None,
            CbrPollSettings(base_url=replay.base_url, interval=300, backoff_initial=30),
            clock=HourlyClock(),
        )
        delays = []
        for _ in script:
            await poller.poll_once()
            delays.append(poller.next_delay())
    assert delays == [30, 60, 300]
    assert poller.status()["failures_in_a_row"] == 0
    assert poller.status()["last_posted"] == {"rate_date": "2026-11-21", "rate": 80.1234}


@pytest.mark.system
async def test_failing_callback_is_retried_and_does_not_stop_polling() -> None:
    calls: list[FxStep] = []

    async def flaky(step: FxStep) -> str:
        calls.append(step)
        if len(calls) == 1:
            raise RuntimeError("store down")
        return "taken"

    with replaying(["daily_2026-11-21.xml"] * 3) as replay:
        poller = CbrPoller(flaky, fast(replay.base_url), clock=HourlyClock())
        first = await poller.poll_once()
        second = await poller.poll_once()
        third = await poller.poll_once()
    assert first.outcome is PollOutcome.FAILED
    assert first.error == "callback: RuntimeError('store down')"
    assert (second.outcome, second.answer) == (PollOutcome.POSTED, "taken")
    assert third.outcome is PollOutcome.UNCHANGED
    assert len(calls) == 2


@pytest.mark.system
async def test_rate_dated_too_far_ahead_is_refused_by_the_rule() -> None:
    # Received on 10 Nov, a rate dated 21 Nov is 11 days ahead: more than max_lead_days (10).
    with replaying(["daily_2026-11-21.xml"]) as replay:
        received: list[FxStep] = []
        poller = CbrPoller(
            received.append,
            fast(replay.base_url),
            clock=lambda: msk(date(2026, 11, 10), 12).timestamp(),
        )
        result = await poller.poll_once()
    assert result.outcome is PollOutcome.FAILED
    assert result.error is not None and result.error.startswith("rate_date: 2026-11-21 is 11 days")
    assert received == []


@pytest.mark.system
async def test_poller_feeds_a_real_engine() -> None:
    now = msk(MON, 15, 30).timestamp()
    engine = Engine(small_definition(), MemoryStore(), clock=lambda: now)
    with replaying(["daily_2026-11-24.xml", "daily_2026-11-24.xml"]) as replay:
        poller = CbrPoller(engine.add_fx, fast(replay.base_url), clock=engine.clock)
        first = await poller.poll_once()
        second = await poller.poll_once()
    assert (first.outcome, first.answer) == (PollOutcome.POSTED, AddOutcome.ADDED)
    assert second.outcome is PollOutcome.UNCHANGED
    status = engine.fx_status()
    assert status.step is not None and status.step.source == "config"  # 17:00 not reached
    assert status.next_step is not None
    assert (status.next_step.rate, status.next_step.effective_from) == (81.5, msk(MON, 17))
    assert engine.fx.rate_at(msk(MON, 17)).source == "cbr:2026-11-24"  # type: ignore[union-attr]


# --- settings -------------------------------------------------------------------------------


def test_poll_settings_and_their_errors() -> None:
    settings = CbrPollSettings(base_url="http://mirror.local:8080", interval=120, timeout=5)
    assert settings.url == "http://mirror.local:8080/scripts/XML_daily.asp"
    assert (settings.interval, settings.timeout, settings.backoff_initial) == (120, 5, 30.0)
    bad: list[tuple[dict[str, object], str, str]] = [
        ({"base_url": "ftp://x"}, "cbr.url", "http(s) URL"),
        ({"interval": 0}, "cbr.interval_seconds", "positive"),
        ({"timeout": "5"}, "cbr.timeout_seconds", "number"),
        ({"backoff_max": 10}, "cbr.backoff_max_seconds", "at least"),
    ]
    for arguments, key, words in bad:
        with pytest.raises(ConfigError) as caught:
            CbrPollSettings(**arguments)  # type: ignore[arg-type]
        assert caught.value.key == key
        assert words in caught.value.reason


def test_usd_rate_value_object() -> None:
    quote = CbrUsdRate(date(2026, 11, 24), Decimal("8150.00"), 100)
    assert quote.rate == 81.5
    assert quote.step(msk(MON, 11, 30)).source == "cbr:2026-11-24"


@pytest.mark.system
async def test_serve_polls_the_bank_while_the_engine_leads() -> None:
    """fx_feed = "cbr": the assembled engine runs the poller as one of its sources and the
    rates reach its FX schedule; the settings refuse what makes no sense."""
    with replaying(["daily_2026-11-24.xml"]) as replay:
        settings = Settings(
            feed="none", fx_feed="cbr", cbr_url=replay.base_url, cbr_interval_seconds=60
        )
        parts = assemble(settings)
        engine = parts.engine
        assert engine is not None
        source = engine.sources[-1]
        assert isinstance(source, CbrSource) and source.name == "cbr"
        await parts.store.open()
        await engine.start()
        try:
            await wait_for(lambda: source.poller.results)
        finally:
            await engine.stop()
            await parts.store.close()
    result = source.poller.results[-1]
    assert result.outcome is PollOutcome.POSTED
    assert result.answer in (AddOutcome.ADDED, AddOutcome.REPLACED)
    assert result.rate is not None and result.rate.rate_date == date(2026, 11, 24)
    assert replay.paths == ["/scripts/XML_daily.asp"]
    status = engine.status()
    assert "cbr" in status["sources"]
    assert status["feeds"]["cbr"]["last_posted"] == {"rate_date": "2026-11-24", "rate": 81.5}
    assert status["feeds"]["cbr"]["failures_in_a_row"] == 0
    with pytest.raises(ConfigError, match="fx_feed"):
        Settings(fx_feed="ecb")
    with pytest.raises(ConfigError, match="cbr_interval_seconds"):
        Settings(fx_feed="cbr", cbr_interval_seconds=5)
    with pytest.raises(ConfigError, match="cbr_url"):
        Settings(cbr_url="ftp://cbr.ru")
