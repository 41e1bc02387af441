"""Bank of Russia daily rates: read USD/RUB from XML_daily.asp and poll it for new rates.

Three layers, each usable alone: `parse_daily` turns the XML body (windows-1251, decimal comma)
into a `CbrUsdRate` with no I/O; `fetch_daily` is one blocking HTTP GET (httpx, as the ISS
poller; run in a worker thread: a request every few minutes needs no connection kept); `CbrPoller`
polls at an interval, backs off on errors, turns each new rate into the `FxStep` the CBR rule
gives it (`CbrRule.step_for_publication`, published at the moment of receipt) and hands it to a
callback such as `Engine.add_fx`."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import httpx

from streaming.errors import ConfigError, FieldError
from streaming.methodology.fx import CbrRule, FxRejected, FxStep
from streaming.methodology.schedule import iso_utc
from streaming.sources import backoff_delay

log = logging.getLogger(__name__)

CBR_BASE_URL = "https://www.cbr.ru"
DAILY_PATH = "/scripts/XML_daily.asp"
USD = "USD"
MAX_BODY_BYTES = 1 << 20  # the real document is about 10 KiB
USER_AGENT = "index-ticker (USD/RUB for RTSI)"
_DECIMAL = re.compile(r"\d+(?:[.,]\d+)?")
_WHOLE = re.compile(r"\d+")
_RESULTS_KEPT = 16


class CbrFeedError(FieldError):
    """The CBR rates could not be fetched or read: names the field (or "http") and the reason."""


@dataclass(frozen=True, slots=True)
class CbrUsdRate:
    """The USD/RUB official rate as published: `value` roubles for `nominal` dollars."""

    rate_date: date  # the ValCurs Date: the day the rate is set for
    value: Decimal
    nominal: int
    name: str = ""  # as published, e.g. "Доллар США"

    @property
    def rate(self) -> float:
        """Roubles per one US dollar."""
        return float(self.value / self.nominal)

    def step(self, published_at: datetime, rule: CbrRule | None = None) -> FxStep:
        """The FX step of this rate received at published_at (UTC), by the CBR 17:00 rule."""
        return (rule or CbrRule()).step_for_publication(self.rate, self.rate_date, published_at)


# --- parsing (pure) ---------------------------------------------------------------------


def parse_daily(body: bytes, currency: str = USD) -> CbrUsdRate:
    """The rate of `currency` (by CharCode) from an XML_daily.asp body; CbrFeedError if bad."""
    if not body.strip():
        raise CbrFeedError("body", "empty")
    # The CBR document has no DTD; refusing one keeps entity expansion out of the parser.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise CbrFeedError("body", "has a DOCTYPE or ENTITY declaration, not a CBR rates document")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise CbrFeedError("xml", f"malformed XML: {error}") from None
    except (ValueError, LookupError) as error:  # an encoding expat cannot read
        raise CbrFeedError("xml", f"unreadable XML: {error}") from None
    if root.tag != "ValCurs":
        raise CbrFeedError("ValCurs", f"root element is <{root.tag}>, expected <ValCurs>")
    rate_date = _set_date(root.get("Date"))
    found = [v for v in root.iter("Valute") if (v.findtext("CharCode") or "").strip() == currency]
    where = f"Valute[{currency}]"
    if not found:
        codes = sorted({(v.findtext("CharCode") or "?").strip() for v in root.iter("Valute")})
        listed = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
        raise CbrFeedError(
            where, f"no {currency} rate among {len(codes)} currencies ({listed or 'none'})"
        )
    if len(found) > 1:
        raise CbrFeedError(where, f"appears {len(found)} times")
    valute = found[0]
    nominal = _nominal(valute.findtext("Nominal"), f"{where}.Nominal")
    value = _decimal(valute.findtext("Value"), f"{where}.Value")
    name = (valute.findtext("Name") or "").strip()
    return CbrUsdRate(rate_date=rate_date, value=value, nominal=nominal, name=name)


def _set_date(text: str | None) -> date:
    if text is None:
        raise CbrFeedError("ValCurs.Date", "missing")
    try:
        return datetime.strptime(text.strip(), "%d.%m.%Y").date()
    except ValueError:
        raise CbrFeedError("ValCurs.Date", f"must be DD.MM.YYYY, got {text!r}") from None


def _nominal(text: str | None, field: str) -> int:
    if text is None:
        raise CbrFeedError(field, "missing")
    if not _WHOLE.fullmatch(text.strip()) or int(text) <= 0:
        raise CbrFeedError(field, f"must be a positive whole number, got {text!r}")
    return int(text)


def _decimal(text: str | None, field: str) -> Decimal:
    if text is None:
        raise CbrFeedError(field, "missing")
    if not _DECIMAL.fullmatch(text.strip()):
        raise CbrFeedError(field, f"must be a decimal number like 80,1234, got {text!r}")
    try:
        value = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise CbrFeedError(field, f"not a number: {text!r}") from None
    if value <= 0:
        raise CbrFeedError(field, f"must be positive, got {text!r}")
    return value


# --- fetching (blocking I/O) ------------------------------------------------------------


def daily_url(base_url: str, date_req: date | None = None) -> str:
    """The XML_daily.asp address under base_url, for the latest rates or those of date_req."""
    url = base_url.rstrip("/") + DAILY_PATH
    return url if date_req is None else f"{url}?date_req={date_req:%d/%m/%Y}"


def fetch_daily(url: str, timeout: float, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """GET url and return the body of a 200 answer; CbrFeedError("http"|"body", ...) otherwise."""
    body = bytearray()
    try:
        with httpx.stream(
            "GET",
            url,
            headers={"User-Agent": USER_AGENT},
            timeout=timeout,
            follow_redirects=True,
        ) as response:
            if response.status_code != 200:
                raise CbrFeedError(
                    "http", f"{url} answered {response.status_code} {response.reason_phrase}"
                )
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise CbrFeedError("body", f"larger than {max_bytes} bytes")
    except httpx.TimeoutException:
        raise CbrFeedError("http", f"{url} gave no answer within {timeout:g} s") from None
    except httpx.HTTPError as error:
        raise CbrFeedError("http", f"{url} unreachable: {error!r}") from None
    return bytes(body)


# --- polling ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CbrPollSettings:
    """Where and how often to poll; all durations in seconds."""

    base_url: str = CBR_BASE_URL
    interval: float = 300.0  # between polls while all is well
    backoff_initial: float = 30.0  # after the first failure in a row
    backoff_max: float = 900.0  # the delay doubles per failure up to this
    timeout: float = 10.0  # per request

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url) if isinstance(self.base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("cbr.url", f"must be an http(s) URL, got {self.base_url!r}")
        for key in ("interval", "backoff_initial", "backoff_max", "timeout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"cbr.{key}_seconds", f"must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"cbr.{key}_seconds", f"must be positive, got {value!r}")
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                "cbr.backoff_max_seconds",
                f"must be at least backoff_initial_seconds ({self.backoff_initial:g})",
            )

    @property
    def url(self) -> str:
        return daily_url(self.base_url)

    def delay_after(self, failures: int) -> float:
        """Seconds to wait before the next poll after `failures` failed polls in a row."""
        if failures <= 0:
            return float(self.interval)
        return backoff_delay(failures - 1, self.backoff_initial, self.backoff_max)


class PollOutcome(Enum):
    POSTED = "posted"  # a new rate, handed to the callback
    UNCHANGED = "unchanged"  # the rate last posted, again
    OLDER = "older"  # dated before the rate last posted (a lagging mirror): not posted
    FAILED = "failed"  # fetch, XML, rate rule or callback error


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll did, at the moment of receipt (UTC)."""

    outcome: PollOutcome
    at: datetime
    rate: CbrUsdRate | None = None
    step: FxStep | None = None
    error: str | None = None
    answer: object = None  # the callback's return value, e.g. Engine.add_fx's AddOutcome

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "at": iso_utc(self.at),
            "rate_date": None if self.rate is None else self.rate.rate_date.isoformat(),
            "rate": None if self.rate is None else self.rate.rate,
            "step": None if self.step is None else self.step.as_dict(),
            "error": self.error,
        }


RateCallback = Callable[[FxStep], object]  # may return an awaitable


def _wall_clock() -> float:
    return datetime.now(UTC).timestamp()


class CbrPoller:
    """Polls XML_daily.asp and hands each new USD/RUB rate, as an FxStep, to `on_rate`.

    A rate is new when its date or value differs from the last one handed over; a rate dated
    before that one is not handed over. Errors never escape `run`: they are logged, kept in
    `results` and the next poll waits `settings.delay_after(failures)`."""

    def __init__(
        self,
        on_rate: RateCallback,
        settings: CbrPollSettings | None = None,
        *,
        rule: CbrRule | None = None,
        clock: Callable[[], float] = _wall_clock,
    ) -> None:
        self.settings = settings or CbrPollSettings()
        self.rule = rule or CbrRule()
        self._on_rate = on_rate
        self._clock = clock  # epoch seconds, like Engine.clock
        self.failures = 0  # failed polls in a row
        self.polls = 0
        self.last_posted: CbrUsdRate | None = None
        self.results: deque[PollResult] = deque(maxlen=_RESULTS_KEPT)

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval, or the backoff after failures."""
        return self.settings.delay_after(self.failures)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.next_delay())

    async def poll_once(self) -> PollResult:
        """Fetch, parse and, for a new rate, call on_rate; never raises (but on cancellation)."""
        url = self.settings.url
        fetched: bytes | CbrFeedError
        try:
            fetched = await asyncio.to_thread(fetch_daily, url, self.settings.timeout)
        except CbrFeedError as error:
            fetched = error
        at = datetime.fromtimestamp(self._clock(), UTC)
        if isinstance(fetched, CbrFeedError):
            return self._record(PollResult(PollOutcome.FAILED, at, error=str(fetched)))
        try:
            quote = parse_daily(fetched)
        except CbrFeedError as error:
            return self._record(PollResult(PollOutcome.FAILED, at, error=str(error)))
        last = self.last_posted
        if last is not None and quote.rate_date < last.rate_date:
            return self._record(PollResult(PollOutcome.OLDER, at, rate=quote))
        if last is not None and (quote.rate_date, quote.rate) == (last.rate_date, last.rate):
            return self._record(PollResult(PollOutcome.UNCHANGED, at, rate=quote))
        try:
            step = quote.step(at, self.rule)
        except FxRejected as error:
            return self._record(PollResult(PollOutcome.FAILED, at, rate=quote, error=str(error)))
        try:
            answer = self._on_rate(step)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as error:  # the callback's failure must not stop the poller
            reason = f"callback: {error!r}"
            return self._record(PollResult(PollOutcome.FAILED, at, quote, step, reason))
        self.last_posted = quote
        return self._record(PollResult(PollOutcome.POSTED, at, quote, step, answer=answer))

    def _record(self, result: PollResult) -> PollResult:
        self.polls += 1
        self.results.append(result)
        if result.outcome is PollOutcome.FAILED:
            self.failures += 1
            log.warning(
                "CBR rates from %s: %s; next poll in %g s",
                self.settings.url,
                result.error,
                self.next_delay(),
            )
        else:
            self.failures = 0
            if result.outcome is PollOutcome.POSTED and result.step is not None:
                step = result.step
                log.info(
                    "CBR %s = %s RUB/USD in force from %s: %s",
                    step.source,
                    step.rate,
                    iso_utc(step.effective_from),
                    getattr(result.answer, "value", result.answer),
                )
            elif result.outcome is PollOutcome.OLDER and result.rate is not None:
                log.warning(
                    "CBR rates from %s dated %s, before the rate already posted: ignored",
                    self.settings.url,
                    result.rate.rate_date,
                )
        return result

    def status(self) -> dict[str, Any]:
        """JSON form for an API or health check: the last poll, failures, the last rate posted."""
        last = self.results[-1] if self.results else None
        posted = self.last_posted
        return {
            "url": self.settings.url,
            "polls": self.polls,
            "failures_in_a_row": self.failures,
            "next_delay_seconds": self.next_delay(),
            "last": None if last is None else last.as_dict(),
            "last_posted": None
            if posted is None
            else {"rate_date": posted.rate_date.isoformat(), "rate": posted.rate},
        }


class CbrSource:
    """The poller as one of the engine's sources: it runs while the engine leads (a standby
    takes the rates in force from the saved state), handing rates to the engine's FX schedule
    rather than ticks to `submit`."""

    name = "cbr"

    def __init__(self, poller: CbrPoller) -> None:
        self.poller = poller

    async def run(self, submit: Callable[..., object]) -> None:
        await self.poller.run()

    def status(self) -> dict[str, Any]:
        return self.poller.status()
