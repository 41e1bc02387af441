"""MOEX ISS as a feed: poll the TQBR marketdata table and turn new last trades into ticks.

The parsing and the deduplication are pure (`parse_marketdata`, `TradeTracker`); `IssSource` is
the thin HTTP edge around them: it polls, backs off on errors and reports how old its data is
(free ISS data lags the market by about 15 minutes; a token gives real time). docs/feeds.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

import httpx
import orjson

from streaming.errors import FieldError
from streaming.methodology.schedule import MOSCOW
from streaming.sources import Submit, backoff_delay
from streaming.ticks import Tick

log = logging.getLogger(__name__)

MARKETDATA_PATH = "/iss/engines/stock/markets/shares/boards/TQBR/securities.json"
COLUMNS = ("SECID", "LAST", "TIME", "UPDATETIME", "SYSTIME", "SEQNUM", "QTY")
REQUIRED = ("SECID", "LAST", "TIME")
DEFAULT_INTERVAL_SECONDS = 5.0
DEFAULT_BACKOFF_CAP_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 10.0
DELAYED_AFTER_SECONDS = 60.0  # data older than this is reported as delayed
# A trade time this far past the data's system time belongs to the day before (a poll just
# after midnight sees the evening session's last trade).
MIDNIGHT_SLACK = timedelta(minutes=5)
MAX_REMEMBERED_REFUSALS = 1000  # distinct refused-row messages logged once each


class IssError(FieldError):
    """An ISS answer or one of its rows is wrong: names the field and the reason."""


@dataclass(frozen=True, slots=True)
class MarketRow:
    """One marketdata row: the last trade of a line (price in roubles, times in UTC)."""

    secid: str
    last: float | None  # None: no trade today
    trade_time: datetime | None
    system_time: datetime | None  # when ISS took the snapshot (SYSTIME)
    update_time: datetime | None  # when the row last changed (UPDATETIME)
    seqnum: int | None
    quantity: float | None  # lots in the last trade (QTY)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A parsed answer: the good rows and, per refused row, an IssError naming the field."""

    rows: tuple[MarketRow, ...]
    refused: tuple[tuple[str, IssError], ...]  # (secid or row number, error)

    def system_time(self) -> datetime | None:
        """The newest SYSTIME (or, without one, UPDATETIME) of the answer, UTC."""
        times = [r.system_time for r in self.rows if r.system_time is not None]
        if not times:
            times = [r.update_time for r in self.rows if r.update_time is not None]
        return max(times) if times else None


def moscow_to_utc(day: date, moment: clock_time) -> datetime:
    """A Moscow wall-clock time on a date as an aware UTC datetime."""
    return datetime.combine(day, moment, tzinfo=MOSCOW).astimezone(UTC)


def _clock(value: object, field: str) -> clock_time:
    if not isinstance(value, str):
        raise IssError(field, f"must be a time HH:MM:SS, got {type(value).__name__}")
    try:
        return clock_time.fromisoformat(value.strip())
    except ValueError:
        raise IssError(field, f"not a time HH:MM:SS: {value!r}") from None


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IssError(field, f"must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise IssError(field, f"must be finite, got {value!r}")
    return number


def _trade_moment(clock: clock_time, system: datetime) -> datetime:
    """A Moscow time of day on the trade date the system time (UTC) implies, in UTC."""
    local = system.astimezone(MOSCOW)
    moment = moscow_to_utc(local.date(), clock)
    if moment > system + MIDNIGHT_SLACK:
        moment -= timedelta(days=1)
    return moment


def _row(record: Mapping[str, object], now: datetime) -> MarketRow:
    secid = record["SECID"]
    if not isinstance(secid, str) or not secid.strip():
        raise IssError("SECID", f"must be a non-empty string, got {secid!r}")
    system: datetime | None = None
    raw_system = record.get("SYSTIME")
    if raw_system is not None:
        if not isinstance(raw_system, str):
            raise IssError("SYSTIME", f"must be a date and time, got {type(raw_system).__name__}")
        try:
            parsed = datetime.fromisoformat(raw_system.strip())
        except ValueError:
            raise IssError("SYSTIME", f"not a date and time: {raw_system!r}") from None
        system = parsed.replace(tzinfo=MOSCOW).astimezone(UTC)
    reference = system or now  # the trade date comes from ISS when it says it
    update = None
    if record.get("UPDATETIME") is not None:
        update = _trade_moment(_clock(record["UPDATETIME"], "UPDATETIME"), reference)
    last = None if record["LAST"] is None else _number(record["LAST"], "LAST")
    if last is not None and last <= 0:
        raise IssError("LAST", f"must be positive, got {record['LAST']!r}")
    trade = (
        None if record["TIME"] is None else _trade_moment(_clock(record["TIME"], "TIME"), reference)
    )
    if last is not None and trade is None:
        raise IssError("TIME", "missing for a row with a LAST price")
    seqnum = record.get("SEQNUM")
    if seqnum is not None and (isinstance(seqnum, bool) or not isinstance(seqnum, int)):
        raise IssError("SEQNUM", f"must be an integer, got {seqnum!r}")
    quantity = None if record.get("QTY") is None else _number(record["QTY"], "QTY")
    return MarketRow(secid.strip(), last, trade, system, update, seqnum, quantity)


def parse_marketdata(body: bytes, now: datetime) -> Snapshot:
    """Parse an ISS answer `{"marketdata": {"columns": [...], "data": [[...], ...]}}`.

    A wrong document raises IssError; a wrong row is refused on its own (in the snapshot's
    `refused`), the others are kept. `now` (UTC) dates the times when a row has no SYSTIME."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise IssError("body", f"not JSON: {error}") from None
    table = document.get("marketdata") if isinstance(document, dict) else None
    if not isinstance(table, dict):
        raise IssError("marketdata", "missing: the answer has no marketdata table")
    columns, data = table.get("columns"), table.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise IssError("marketdata.columns", "must be a list of column names")
    if not isinstance(data, list):
        raise IssError("marketdata.data", "must be a list of rows")
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise IssError("marketdata.columns", f"missing {', '.join(missing)}")
    rows: list[MarketRow] = []
    refused: list[tuple[str, IssError]] = []
    for number, values in enumerate(data, start=1):
        if not isinstance(values, list) or len(values) != len(columns):
            where = f"row {number}"
            refused.append((where, IssError("marketdata.data", f"{where}: wrong number of values")))
            continue
        record = dict(zip(columns, values, strict=True))
        try:
            rows.append(_row(record, now))
        except IssError as error:
            refused.append((str(record.get("SECID") or f"row {number}"), error))
    return Snapshot(tuple(rows), tuple(refused))


class TradeTracker:
    """Which rows are new trades: per line, the last SEQNUM and (LAST, TIME) turned into a tick.

    A row becomes a tick when it has a price, its SEQNUM is newer than the last one seen for the
    line (a lagging answer never takes a line back) and its (LAST, TIME) differs from the last
    tick's: the same SEQNUM or the same trade seen again is not a new tick."""

    def __init__(self, known: Collection[str]) -> None:
        self.known = known
        self._seqnum: dict[str, int] = {}
        self._trade: dict[str, tuple[float, datetime]] = {}

    def ticks(self, snapshot: Snapshot) -> list[Tick]:
        """The new trades of a snapshot, as ticks in row order."""
        ticks: list[Tick] = []
        for row in snapshot.rows:
            if row.secid not in self.known or row.last is None or row.trade_time is None:
                continue
            if row.seqnum is not None:
                seen = self._seqnum.get(row.secid)
                if seen is not None and row.seqnum <= seen:
                    continue
                self._seqnum[row.secid] = row.seqnum
            trade = (row.last, row.trade_time)
            if self._trade.get(row.secid) == trade:
                continue
            self._trade[row.secid] = trade
            ticks.append(Tick(row.secid, row.last, row.trade_time, row.quantity))
        return ticks


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


class IssSource:
    """Polls ISS every `interval` seconds (backing off on errors) and submits new trades.

    A token is sent as `Authorization: Bearer <token>` (ISS real-time access); it never appears
    in logs or in `status()`."""

    name = "iss"

    def __init__(
        self,
        known: Collection[str],
        url: str = "https://iss.moex.com",
        token: str | None = None,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        backoff_cap: float = DEFAULT_BACKOFF_CAP_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Times in seconds; `clock` gives epoch seconds (the age of the data is against it)."""
        if not (math.isfinite(interval) and interval > 0):
            raise IssError("iss_interval_seconds", f"must be positive, got {interval!r}")
        self.url = url.rstrip("/")
        self.interval = interval
        self.backoff_cap = max(backoff_cap, interval)
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.tracker = TradeTracker(known)
        self.params = {
            "iss.meta": "off",
            "iss.only": "marketdata",
            "marketdata.columns": ",".join(COLUMNS),
            "securities": ",".join(sorted(known)),
        }
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.requests = 0
        self.errors = 0
        self.failures = 0  # errors in a row
        self.ticks_submitted = 0
        self.rows_refused = 0
        self.last_error: str | None = None
        self.last_success: datetime | None = None
        self.data_time: datetime | None = None
        self._logged_refusals: set[str] = set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    async def run(self, submit: Submit) -> None:
        async with httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self.timeout
        ) as client:
            while True:
                await self.poll(client, submit)
                await self.sleep(backoff_delay(self.failures, self.interval, self.backoff_cap))

    async def poll(self, client: httpx.AsyncClient, submit: Submit) -> None:
        """One request: ticks submitted on success, the error recorded (and logged when it
        differs from the previous one) on failure. Never raises but for cancellation."""
        self.requests += 1
        try:
            response = await client.get(MARKETDATA_PATH, params=self.params)
            if response.status_code != 200:
                raise IssError("status", f"HTTP {response.status_code}")
            snapshot = parse_marketdata(response.content, self._now())
        except httpx.TimeoutException:
            self._failed(f"timeout after {self.timeout} s")
            return
        except httpx.HTTPError as error:
            self._failed(f"{type(error).__name__}: {error}")
            return
        except IssError as error:
            self._failed(str(error))
            return
        self._refused(snapshot)
        if self.failures:
            log.info("ISS %s answers again after %d errors", self.url, self.failures)
        self.failures = 0
        self.last_error = None
        self.last_success = self._now()
        self.data_time = snapshot.system_time() or self.data_time
        ticks = self.tracker.ticks(snapshot)
        if ticks:
            submit(ticks)
            self.ticks_submitted += len(ticks)

    def _failed(self, reason: str) -> None:
        self.errors += 1
        self.failures += 1
        if reason != self.last_error:
            delay = backoff_delay(self.failures, self.interval, self.backoff_cap)
            log.warning("ISS %s: %s; retrying with backoff (now %.3g s)", self.url, reason, delay)
        self.last_error = reason

    def _refused(self, snapshot: Snapshot) -> None:
        self.rows_refused += len(snapshot.refused)
        for where, error in snapshot.refused:
            message = f"{where}: {error}"
            if message not in self._logged_refusals:
                if len(self._logged_refusals) >= MAX_REMEMBERED_REFUSALS:
                    self._logged_refusals.clear()  # bounded: a refusal may be logged again
                self._logged_refusals.add(message)
                log.warning("ISS row refused: %s", message)

    def status(self) -> dict[str, Any]:
        """The feed's state for people: requests, errors, and how old its data is (seconds)."""
        age = None
        if self.data_time is not None:
            age = round((self._now() - self.data_time).total_seconds(), 3)
        return {
            "source": self.name,
            "url": self.url,
            "authorised": bool(self._headers),
            "state": "backoff" if self.failures else ("ok" if self.last_success else "starting"),
            "requests": self.requests,
            "errors": self.errors,
            "consecutive_errors": self.failures,
            "last_error": self.last_error,
            "next_poll_seconds": backoff_delay(self.failures, self.interval, self.backoff_cap),
            "last_success": _iso(self.last_success),
            "data_time": _iso(self.data_time),
            "data_age_seconds": age,
            "delayed": None if age is None else age > DELAYED_AFTER_SECONDS,
            "ticks": self.ticks_submitted,
            "rows_refused": self.rows_refused,
        }
