"""Candles (open, high, low, close) of published index values, on buckets of exchange local time.

Pure: no I/O, no clock of its own. Buckets are aligned to the exchange's local clock (Moscow,
UTC+3, by default): a `1d` candle is one local calendar day, `1h`, `10m` and `1m` candles start
on whole local hours and minutes. Rules:

- Indicative values (auction, not tradable) never enter a candle; a bucket holding nothing else
  gives no candle, and neither does a bucket with no value at all.
- An official close (kind "close") is the close of its bucket, whatever comes after it there.
- A close stamped exactly on a bucket edge belongs to the bucket that ends there: it ends a
  session, and a close rounded up to local midnight is the close of the day before.
- `closed` says the candle is final: its bucket has ended (by `now`) or it holds the official
  close, after which nothing more is published that trading day.

Values keep full precision; rounding to the published 2 decimals is for the edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from streaming.errors import IndexTickerError
from streaming.publication import Publication

MOSCOW_OFFSET = timedelta(hours=3)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CandleError(IndexTickerError):
    """A candle request is wrong: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class Interval(StrEnum):
    """The width of a candle."""

    MINUTE = "1m"
    TEN_MINUTES = "10m"
    HOUR = "1h"
    DAY = "1d"

    @property
    def width(self) -> timedelta:
        """The bucket width."""
        return _WIDTHS[self]

    @classmethod
    def parse(cls, text: str) -> Interval:
        """'1m', '10m', '1h' or '1d'; CandleError naming the field `interval` otherwise."""
        try:
            return cls(text.strip())
        except (ValueError, AttributeError):
            known = ", ".join(interval.value for interval in cls)
            raise CandleError("interval", f"must be one of {known}, got {text!r}") from None


_WIDTHS = {
    Interval.MINUTE: timedelta(minutes=1),
    Interval.TEN_MINUTES: timedelta(minutes=10),
    Interval.HOUR: timedelta(hours=1),
    Interval.DAY: timedelta(days=1),
}


def bucket_start(
    moment: datetime, interval: Interval, utc_offset: timedelta = MOSCOW_OFFSET
) -> datetime:
    """The start (UTC) of the bucket holding an aware moment, aligned to the local clock."""
    local = moment.astimezone(UTC) - _EPOCH + utc_offset
    return moment.astimezone(UTC) - local % interval.width


def bucket_end(
    moment: datetime, interval: Interval, utc_offset: timedelta = MOSCOW_OFFSET
) -> datetime:
    """The end (UTC, exclusive) of the bucket holding an aware moment."""
    return bucket_start(moment, interval, utc_offset) + interval.width


@dataclass(frozen=True, slots=True)
class Candle:
    """Open, high, low and close of one index over one bucket [start, end), index points."""

    start: datetime  # UTC, a bucket edge of the local clock
    end: datetime  # UTC, exclusive
    open: float  # full precision
    high: float
    low: float
    close: float  # the official close when the bucket holds one, else the last value
    count: int  # values in the candle (indicative ones are not)
    first_seq: int
    last_seq: int
    first_time: datetime  # grid instant of the first value, UTC
    last_time: datetime  # grid instant of the last value, UTC
    official_close: bool  # the close is the official close of a trading day
    closed: bool  # final: the bucket has ended, or it holds the official close


@dataclass(slots=True)
class _Bucket:
    start: datetime
    first: Publication
    last: Publication
    high: float
    low: float
    count: int = 1
    official: Publication | None = None

    def add(self, publication: Publication) -> None:
        self.last = publication
        self.high = max(self.high, publication.value)
        self.low = min(self.low, publication.value)
        self.count += 1


def candles(
    publications: Iterable[Publication],
    interval: Interval,
    utc_offset: timedelta = MOSCOW_OFFSET,
    *,
    now: datetime | None = None,
) -> list[Candle]:
    """Candles of one index's publications, ascending by start; empty buckets give none.

    `now` (aware) decides whether a bucket has ended; without it only a candle holding the
    official close is `closed`.
    """
    width = interval.width
    buckets: dict[datetime, _Bucket] = {}
    code: str | None = None
    # Stable sort: publications of one grid instant keep the order they were given in.
    for publication in sorted(publications, key=lambda p: p.time):
        if code is None:
            code = publication.code
        elif publication.code != code:
            raise ValueError(f"candles of one index at a time: got {code} and {publication.code}")
        if publication.kind == "indicative":
            continue
        start = bucket_start(publication.time, interval, utc_offset)
        if publication.kind == "close" and start == publication.time.astimezone(UTC):
            start -= width
        bucket = buckets.get(start)
        if bucket is None:
            high = low = publication.value
            bucket = buckets[start] = _Bucket(start, publication, publication, high, low)
        else:
            bucket.add(publication)
        if publication.kind == "close":
            bucket.official = publication
    return [_candle(buckets[start], width, now) for start in sorted(buckets)]


def _candle(bucket: _Bucket, width: timedelta, now: datetime | None) -> Candle:
    end = bucket.start + width
    official = bucket.official is not None
    close = bucket.official.value if bucket.official is not None else bucket.last.value
    return Candle(
        start=bucket.start,
        end=end,
        open=bucket.first.value,
        high=bucket.high,
        low=bucket.low,
        close=close,
        count=bucket.count,
        first_seq=bucket.first.seq,
        last_seq=bucket.last.seq,
        first_time=bucket.first.time.astimezone(UTC),
        last_time=bucket.last.time.astimezone(UTC),
        official_close=official,
        closed=official or (now is not None and now >= end),
    )
