"""History over REST: candles (open, high, low, close) as JSON or CSV; published values as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.errors import ApiError
from app.models import error_responses
from app.rest import query_time
from app.services import Services, request_services
from streaming.candles import Candle, CandleError, Interval, bucket_end, bucket_start, candles
from streaming.methodology.schedule import iso_utc
from streaming.publication import PUBLISHED_DECIMALS, Publication
from streaming.store.base import DEFAULT_HISTORY_LIMIT

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
FORMATS = ("json", "csv")
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"

CANDLE_COLUMNS = (
    "start",
    "end",
    "open",
    "high",
    "low",
    "close",
    "count",
    "first_seq",
    "last_seq",
    "official_close",
    "closed",
)
HISTORY_COLUMNS = (
    "time",
    "code",
    "seq",
    "kind",
    "value",
    "previous_close",
    "change",
    "change_percent",
    "currency",
    "precise_value",
)

router = APIRouter(prefix="/v1/indices", tags=["history"])

ServicesDep = Annotated[Services, Depends(request_services)]
SinceQuery = Annotated[
    str | None, Query(description="ISO 8601; naive means UTC", examples=["2024-05-06T07:00Z"])
]
UntilQuery = Annotated[str | None, Query(description="ISO 8601; naive means UTC")]

_ERRORS = error_responses(
    (404, "unknown index code"), (422, "a bad interval, since, until, limit or format")
)


class CandleBody(BaseModel):
    """One candle: index points rounded to 2 decimals, precise_* at full precision."""

    start: str = Field(description="bucket start, ISO 8601 UTC")
    end: str = Field(description="bucket end (exclusive), ISO 8601 UTC")
    start_local: str = Field(description="bucket start in exchange local time, with its offset")
    open: float
    high: float
    low: float
    close: float = Field(description="the official close when the bucket holds it, else the last")
    count: int = Field(description="values in the candle; indicative values are left out")
    first_seq: int
    last_seq: int
    first_time: str
    last_time: str
    official_close: bool
    closed: bool = Field(description="final: the bucket has ended or holds the official close")
    precise_open: float
    precise_high: float
    precise_low: float
    precise_close: float


class CandlesBody(BaseModel):
    """Candles of one index in ascending time order."""

    code: str
    interval: str
    since: str | None = Field(description="start of the first bucket asked for (UTC), or null")
    until: str | None = Field(description="end of the last bucket asked for (UTC), or null")
    count: int
    truncated: bool = Field(
        description="the read reached the store's history bound: the first candle may lack"
        " values older than the history kept"
    )
    candles: list[CandleBody]


def _range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start = query_time(since, "since")
    end = query_time(until, "until")
    if start is not None and end is not None and start > end:
        raise ApiError(422, "since: must not be after until", field="since")
    return start, end


def _format(value: str) -> str:
    if value not in FORMATS:
        raise ApiError(422, f"format: must be json or csv, got {value!r}", field="format")
    return value


def _interval(value: str) -> Interval:
    try:
        return Interval.parse(value)
    except CandleError as error:
        raise ApiError(422, str(error), field=error.field) from None


def _history_bound(services: Services) -> int:
    """How many values per index the store keeps: a read of that many sees all it has."""
    bound = getattr(services.store, "history_limit", DEFAULT_HISTORY_LIMIT)
    return bound if isinstance(bound, int) and bound > 0 else DEFAULT_HISTORY_LIMIT


def _points(value: float) -> str:
    return f"{value:.{PUBLISHED_DECIMALS}f}"


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]], filename: str) -> Response:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")  # RFC 4180 line ends
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        text.getvalue(),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def candle_message(candle: Candle, utc_offset: timedelta) -> dict[str, Any]:
    """The JSON form of a candle: points rounded to the published 2 decimals, precise_* too."""
    return {
        "start": iso_utc(candle.start),
        "end": iso_utc(candle.end),
        "start_local": candle.start.astimezone(timezone(utc_offset)).isoformat(),
        "open": round(candle.open, PUBLISHED_DECIMALS),
        "high": round(candle.high, PUBLISHED_DECIMALS),
        "low": round(candle.low, PUBLISHED_DECIMALS),
        "close": round(candle.close, PUBLISHED_DECIMALS),
        "count": candle.count,
        "first_seq": candle.first_seq,
        "last_seq": candle.last_seq,
        "first_time": iso_utc(candle.first_time),
        "last_time": iso_utc(candle.last_time),
        "official_close": candle.official_close,
        "closed": candle.closed,
        "precise_open": candle.open,
        "precise_high": candle.high,
        "precise_low": candle.low,
        "precise_close": candle.close,
    }


def _candle_row(candle: Candle) -> list[object]:
    return [
        iso_utc(candle.start),
        iso_utc(candle.end),
        _points(candle.open),
        _points(candle.high),
        _points(candle.low),
        _points(candle.close),
        candle.count,
        candle.first_seq,
        candle.last_seq,
        "true" if candle.official_close else "false",
        "true" if candle.closed else "false",
    ]


def _history_row(publication: Publication) -> list[object]:
    return [
        iso_utc(publication.time),
        publication.code,
        publication.seq,
        publication.kind,
        _points(publication.value),
        _points(publication.previous_close),
        _points(publication.change),
        f"{publication.change_percent:.4f}",
        publication.currency,
        repr(publication.value),
    ]


@router.get(
    "/{code}/candles",
    response_model=CandlesBody,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"},
        **_ERRORS,
    },
)
async def get_candles(
    code: str,
    services: ServicesDep,
    interval: Annotated[str, Query(description="1m, 10m, 1h or 1d")] = "1m",
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="at most this many candles, the latest ones")
    ] = DEFAULT_LIMIT,
    output: Annotated[str, Query(alias="format", description="json or csv")] = "json",
) -> Response:
    """Candles of one index over buckets of exchange local time; indicative values left out."""
    services.spec(code)
    width = _interval(interval)
    start, end = _range(since, until)
    kind = _format(output)
    offset = services.family.session.utc_offset
    # Whole buckets: read from the start of the first to the end of the last (an official
    # close stamped on that end belongs to the last bucket).
    read_since = None if start is None else bucket_start(start, width, offset)
    read_until = None if end is None else bucket_end(end, width, offset)
    bound = _history_bound(services)
    publications = await services.store.history(code, read_since, read_until, bound)
    built = candles(publications, width, offset, now=datetime.now(UTC))
    wanted = [
        candle
        for candle in built
        if (start is None or candle.end > start) and (end is None or candle.start <= end)
    ][-limit:]
    if kind == "csv":
        return _csv(
            CANDLE_COLUMNS,
            (_candle_row(candle) for candle in wanted),
            f"{code}-candles-{width.value}.csv",
        )
    body = {
        "code": code,
        "interval": width.value,
        "since": None if read_since is None else iso_utc(read_since),
        "until": None if read_until is None else iso_utc(read_until),
        "count": len(wanted),
        "truncated": len(publications) >= bound,
        "candles": [candle_message(candle, offset) for candle in wanted],
    }
    return JSONResponse(body)


@router.get(
    "/{code}/history.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "published values as CSV"},
        **_ERRORS,
    },
)
async def get_history_csv(
    code: str,
    services: ServicesDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="at most this many, the latest ones")
    ] = DEFAULT_LIMIT,
) -> Response:
    """Published values of one index as CSV, ascending, since <= time <= until."""
    services.spec(code)
    start, end = _range(since, until)
    publications = await services.store.history(code, start, end, limit)
    return _csv(
        HISTORY_COLUMNS,
        (_history_row(publication) for publication in publications),
        f"{code}-history.csv",
    )
