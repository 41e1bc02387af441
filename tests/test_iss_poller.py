"""The MOEX ISS poller against a local HTTP server replaying recorded ISS answers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from streaming.errors import ConfigError
from streaming.methodology.definition import DEFAULT_FAMILY, load_family
from streaming.serve import make_sources
from streaming.settings import ISS_TOKEN_ENV, Settings
from streaming.sources.iss import (
    MARKETDATA_PATH,
    IssError,
    IssSource,
    backoff_delay,
    moscow_to_utc,
    parse_marketdata,
)
from streaming.ticks import Tick

DATA = Path(__file__).parent / "data" / "iss"
KNOWN = frozenset({"SBER", "GAZP", "LKOH"})
TOKEN = "test-iss-token-0123456789"
# 15 minutes after the last recorded SYSTIME (2024-03-15 10:15:25 Moscow = 07:15:25 UTC).
NOW = datetime(2024, 3, 15, 7, 30, 25, tzinfo=UTC).timestamp()
WAIT_SECONDS = 20.0  # upper bound for a condition to come true, not a timing assertion


@dataclass(frozen=True)
class Answer:
    """One recorded answer: HTTP status and body; `hold` answers only after the client gave up."""

    status: int
    body: bytes
    hold: bool = False


def recorded(name: str, hold: bool = False) -> Answer:
    return Answer(200, (DATA / name).read_bytes(), hold)


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    authorization: str | None


class IssReplay:
    """A local ISS: answers each request with the next recorded answer, the last one for ever."""

    def __init__(self, answers: Sequence[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []
        self.release = threading.Event()  # lets held answers go at shutdown
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with lock:
                    n = len(replay.requests)
                    replay.requests.append(
                        Request(parts.path, parse_qs(parts.query), self.headers["Authorization"])
                    )
                answer = replay.answers[min(n, len(replay.answers) - 1)]
                if answer.hold:
                    replay.release.wait(WAIT_SECONDS)
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client timed out and left

            def log_message(self, format: str, *args: object) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> IssReplay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class Recorder:
    """Collects submitted ticks and the pauses the source asks for (without waiting them out)."""

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.delays: list[float] = []

    def submit(self, ticks: Sequence[Tick]) -> int:
        self.ticks.extend(ticks)
        return len(ticks)

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0.001)


def utc(hh: int, mm: int, ss: int) -> datetime:
    return datetime(2024, 3, 15, hh, mm, ss, tzinfo=UTC)


async def run_until(source: IssSource, recorder: Recorder, requests: int) -> None:
    """Run the source until it has made `requests` requests, then stop it."""
    task = asyncio.create_task(source.run(recorder.submit))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while source.requests < requests or len(recorder.delays) < requests:
                assert not task.done(), task
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def session() -> Iterator[IssReplay]:
    answers = [
        recorded("r1.json"),
        recorded("r2.json"),
        Answer(500, b"Internal Server Error"),
        Answer(500, b"Internal Server Error"),
        recorded("malformed.json"),
        recorded("r2.json", hold=True),  # answered only after the client's timeout
        recorded("r3.json"),
        recorded("r4.json"),
    ]
    with IssReplay(answers) as replay:
        yield replay


@pytest.mark.system
async def test_recorded_session_gives_exact_ticks_backoff_and_staleness(
    session: IssReplay, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    source = IssSource(
        KNOWN,
        session.url,
        TOKEN,
        interval=0.01,
        backoff_cap=0.08,
        timeout=0.3,
        clock=lambda: NOW,
        sleep=recorder.sleep,
    )
    with caplog.at_level(logging.INFO, logger="streaming.sources.iss"):
        await run_until(source, recorder, 10)

    # New trades only: SEQNUM repeats, a lagging SEQNUM and a re-sent trade give no tick; VTBR
    # is not a constituent; Moscow times are 3 hours ahead of UTC; QTY is the volume.
    assert recorder.ticks == [
        Tick("SBER", 250.1, utc(7, 0, 5), 10.0),
        Tick("GAZP", 160.2, utc(7, 0, 4), 3.0),
        Tick("GAZP", 160.5, utc(7, 0, 7), 5.0),
        Tick("SBER", 250.3, utc(7, 0, 9), 1.0),
        Tick("LKOH", 7100.5, utc(7, 0, 10), 2.0),
    ]
    # Pauses: the interval while ISS answers; after 500, 500, malformed JSON and a timeout,
    # doubled per error up to the cap; back to the interval once it answers again.
    assert recorder.delays[:10] == [0.01, 0.01, 0.02, 0.04, 0.08, 0.08, 0.01, 0.01, 0.01, 0.01]
    assert len(session.requests) >= 10  # polling went on after every kind of error

    request = session.requests[0]
    assert request.path == MARKETDATA_PATH
    assert request.query["iss.meta"] == ["off"]
    assert request.query["iss.only"] == ["marketdata"]
    assert request.query["marketdata.columns"] == ["SECID,LAST,TIME,UPDATETIME,SYSTIME,SEQNUM,QTY"]
    assert request.query["securities"] == ["GAZP,LKOH,SBER"]
    assert {r.authorization for r in session.requests} == {f"Bearer {TOKEN}"}

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("HTTP 500" in m for m in warnings) == 1  # logged once per change, not per retry
    assert sum("body: not JSON" in m for m in warnings) == 1
    assert sum("timeout after 0.3 s" in m for m in warnings) == 1
    assert ["LKOH: LAST: must be a number, got str" in m for m in warnings].count(True) == 1
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("answers again after 4 errors" in m for m in infos)

    status = source.status()
    assert TOKEN not in repr(status)
    assert status["authorised"] is True
    assert status["state"] == "ok"
    assert status["errors"] == 4
    assert status["consecutive_errors"] == 0
    assert status["last_error"] is None
    assert status["ticks"] == 5
    assert status["rows_refused"] == 1
    assert status["data_time"] == "2024-03-15T07:15:25Z"  # SYSTIME 10:15:25 Moscow
    assert status["data_age_seconds"] == 900.0  # the free feed's 15 minutes
    assert status["delayed"] is True


@pytest.mark.system
async def test_status_during_errors_and_without_token() -> None:
    recorder = Recorder()
    with IssReplay([recorded("r1.json"), Answer(503, b"busy")]) as replay:
        source = IssSource(
            KNOWN,
            replay.url,
            None,
            interval=0.01,
            backoff_cap=0.05,
            clock=lambda: NOW,
            sleep=recorder.sleep,
        )
        assert source.status()["state"] == "starting"
        assert source.status()["data_age_seconds"] is None
        await run_until(source, recorder, 6)
    assert {r.authorization for r in replay.requests} == {None}
    assert recorder.delays[:6] == [0.01, 0.02, 0.04, 0.05, 0.05, 0.05]
    status = source.status()
    assert status["authorised"] is False
    assert status["state"] == "backoff"
    assert status["last_error"] == "status: HTTP 503"
    assert status["consecutive_errors"] == status["errors"] >= 5
    # The data kept from the last good answer, and its age against the clock.
    assert status["data_time"] == "2024-03-15T07:15:07Z"
    assert status["data_age_seconds"] == 918.0
    assert len(recorder.ticks) == 2


@pytest.mark.system
async def test_an_unreachable_server_is_retried_not_fatal() -> None:
    recorder = Recorder()
    with IssReplay([Answer(200, b"{}")]) as replay:
        url = replay.url
    source = IssSource(KNOWN, url, interval=0.01, backoff_cap=0.04, sleep=recorder.sleep)
    await run_until(source, recorder, 4)
    assert recorder.delays[:4] == [0.02, 0.04, 0.04, 0.04]
    assert source.status()["last_error"].startswith("ConnectError")
    assert recorder.ticks == []


def test_times_are_moscow_local_on_the_trade_date() -> None:
    assert moscow_to_utc(date(2024, 3, 15), time(10, 0, 5)) == utc(7, 0, 5)
    # Just after midnight, the evening session's last trade is from the day before.
    body = (
        b'{"marketdata": {"columns": ["SECID", "LAST", "TIME", "SYSTIME", "SEQNUM"], '
        b'"data": [["SBER", 251.0, "23:49:58", "2024-03-16 00:05:00", 1]]}}'
    )
    (row,) = parse_marketdata(body, datetime(2024, 3, 15, 21, 5, tzinfo=UTC)).rows
    assert row.trade_time == datetime(2024, 3, 15, 20, 49, 58, tzinfo=UTC)
    assert row.system_time == datetime(2024, 3, 15, 21, 5, tzinfo=UTC)
    # Without SYSTIME, the date is today's in Moscow (already the 16th at 22:00 UTC).
    body = (
        b'{"marketdata": {"columns": ["SECID", "LAST", "TIME"], '
        b'"data": [["SBER", 1.5, "00:30:00"]]}}'
    )
    (row,) = parse_marketdata(body, datetime(2024, 3, 15, 22, 0, tzinfo=UTC)).rows
    assert row.trade_time == datetime(2024, 3, 15, 21, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"[1, 2", "body", "not JSON"),
        (b'{"securities": {}}', "marketdata", "missing"),
        (b'{"marketdata": {"columns": "SECID", "data": []}}', "marketdata.columns", "list"),
        (b'{"marketdata": {"columns": ["SECID"], "data": {}}}', "marketdata.data", "list"),
        (
            b'{"marketdata": {"columns": ["SECID", "LAST"], "data": []}}',
            "marketdata.columns",
            "TIME",
        ),
    ],
)
def test_a_wrong_document_names_the_field(body: bytes, field: str, reason: str) -> None:
    with pytest.raises(IssError) as caught:
        parse_marketdata(body, datetime(2024, 3, 15, tzinfo=UTC))
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_a_wrong_row_is_refused_alone_naming_the_field() -> None:
    body = (
        b'{"marketdata": {"columns": ["SECID", "LAST", "TIME", "SEQNUM"], "data": ['
        b'["SBER", -1, "10:00:00", 1], ["GAZP", 160.0, "25:00:00", 2], ["LKOH", 7000, "10:00:00", 1.5],'
        b'["MGNT", 5000, null, 3], ["ROSN", 500], ["YNDX", 3000.5, "10:00:01", 4]]}}'
    )
    snapshot = parse_marketdata(body, datetime(2024, 3, 15, 8, tzinfo=UTC))
    assert [r.secid for r in snapshot.rows] == ["YNDX"]
    assert [(where, e.field) for where, e in snapshot.refused] == [
        ("SBER", "LAST"),
        ("GAZP", "TIME"),
        ("LKOH", "SEQNUM"),
        ("MGNT", "TIME"),
        ("row 5", "marketdata.data"),
    ]
    assert "must be positive" in snapshot.refused[0][1].reason


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 5.0, 60.0) for n in range(7)] == [5, 10, 20, 40, 60, 60, 60]
    assert backoff_delay(10_000, 5.0, 60.0) == 60.0


def test_iss_feed_settings_and_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(feed="iss", iss_interval_seconds=0.5)
    assert caught.value.key == "iss_interval_seconds"
    with pytest.raises(ConfigError) as caught:
        Settings(feed="iss", iss_url="ftp://iss.moex.com")
    assert caught.value.key == "iss_url"
    with pytest.raises(ConfigError) as caught:
        Settings(feed="iss", iss_url="https://user:secret@iss.moex.com")
    assert caught.value.key == "iss_url" and "secret" not in str(caught.value)

    monkeypatch.setenv(ISS_TOKEN_ENV, TOKEN)
    settings = Settings(feed="iss", iss_url="http://127.0.0.1:9", iss_interval_seconds=2.5)
    family = load_family(DEFAULT_FAMILY)
    (source,) = make_sources(settings, family)
    assert isinstance(source, IssSource)
    assert source.interval == 2.5
    assert source.url == "http://127.0.0.1:9"
    assert source.status()["authorised"] is True
    assert set(source.params["securities"].split(",")) == set(family.universe().secids)
    assert TOKEN not in repr(settings)
