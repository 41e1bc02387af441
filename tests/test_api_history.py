"""Candles and CSV history under a real uvicorn, values published by a real engine at known instants.

The trading day is Wednesday 2024-05-15 on the exchange timetable with indicative auctions. IMOEX
over the four-line test base is 100 + (P_AAAA - 100) / 4.5 with the other lines at reference, so
the values are set by AAAA's price alone (serving.by_hand checks it).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from serving import (
    AUTH,
    RunningServer,
    api_definition,
    by_hand,
    close_to,
    http_client,
    make_app,
    make_engine,
    running,
)

from streaming.engine import Engine
from streaming.methodology.phases import AuctionPolicy
from streaming.methodology.schedule import MOSCOW, iso_utc
from streaming.methodology.timetable import ExchangeTimetable
from streaming.publication import Publication
from streaming.store.base import Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

DAY_START = datetime(2024, 5, 14, 21, 0, tzinfo=UTC)  # 2024-05-15 00:00 Moscow


def msk(hour: int, minute: int, second: int = 0) -> datetime:
    """A moment of 2024-05-15 in Moscow time, as UTC."""
    return datetime(2024, 5, 15, hour, minute, second, tzinfo=MOSCOW).astimezone(UTC)


# (grid instant, AAAA price ticked just before it or None, kind the timetable gives it)
SCENARIO: list[tuple[datetime, float | None, str]] = [
    (msk(10, 0), None, "intraday"),  # 100.00 at reference prices
    (msk(10, 0, 30), 109.01, "intraday"),  # 102.00222...
    (msk(10, 9, 59), 91.0, "intraday"),  # 98.00
    (msk(10, 10), 106.75, "intraday"),  # 101.50
    (msk(18, 40), 145.0, "indicative"),  # 110.00 in the closing auction: not in any candle
    (msk(18, 50), 104.5, "close"),  # 101.00, the official close
]


class Market:
    """An engine on the exchange timetable, its clock, and the server it runs in."""

    def __init__(self, store: Store) -> None:
        self.now = msk(9, 0)
        self.engine = Engine(
            api_definition(),
            store,
            cadence=1,
            timetable=ExchangeTimetable(auction_policy=AuctionPolicy.INDICATIVE),
            clock=lambda: self.now.timestamp(),
            grid=False,
        )

    async def play(self, server: RunningServer, client: httpx.AsyncClient) -> list[Publication]:
        """Tick and publish the scenario; the IMOEX publications."""
        published = []
        for moment, price, kind in SCENARIO:
            self.now = moment
            if price is not None:
                tick = {
                    "secid": "AAAA",
                    "price": price,
                    "time": iso_utc(moment - timedelta(seconds=1)),
                }
                answer = await client.post("/v1/ticks", json=[tick], headers=AUTH)
                assert answer.json()["accepted"] == 1, answer.text
            publications = await server.call(partial(self.engine.publish, moment.timestamp()))
            [imoex] = [p for p in publications if p.code == "IMOEX"]
            assert imoex.kind == kind
            expected = by_hand({} if price is None else {"AAAA": price})[0]
            assert close_to(imoex.value, expected)
            published.append(imoex)
        return published


@pytest.fixture
async def market() -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient, list[Publication]]]:
    store = MemoryStore()
    played = Market(store)
    async with running(make_app(store, played.engine)) as server, http_client(server) as client:
        published = await played.play(server, client)
        yield server, client, published


async def get_json(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def ohlc(candle: dict[str, Any]) -> tuple[float, float, float, float]:
    return candle["open"], candle["high"], candle["low"], candle["close"]


async def test_the_day_candle_leaves_out_the_auction_and_closes_on_the_official_close(
    market: tuple[RunningServer, httpx.AsyncClient, list[Publication]],
) -> None:
    _, client, published = market
    body = await get_json(client, "/v1/indices/IMOEX/candles", interval="1d")
    assert {k: v for k, v in body.items() if k != "candles"} == {
        "code": "IMOEX",
        "interval": "1d",
        "since": None,
        "until": None,
        "count": 1,
        "truncated": False,
    }
    [day] = body["candles"]
    assert day["start"] == "2024-05-14T21:00:00.000Z"
    assert day["end"] == "2024-05-15T21:00:00.000Z"
    assert day["start_local"] == "2024-05-15T00:00:00+03:00"
    assert ohlc(day) == (100.0, 102.0, 98.0, 101.0)  # not 110: the auction value is indicative
    assert close_to(day["precise_high"], published[1].value)
    assert day["precise_high"] != day["high"]  # 102.00222...: rounded only in `high`
    assert (day["count"], day["first_seq"], day["last_seq"]) == (5, 1, 6)
    assert (day["first_time"], day["last_time"]) == (iso_utc(msk(10, 0)), iso_utc(msk(18, 50)))
    assert day["official_close"] is True
    assert day["closed"] is True


async def test_ten_minute_candles_split_at_the_local_clock_and_honour_the_range(
    market: tuple[RunningServer, httpx.AsyncClient, list[Publication]],
) -> None:
    _, client, _ = market
    body = await get_json(client, "/v1/indices/IMOEX/candles", interval="10m")
    rows = [(c["start_local"], ohlc(c), c["count"], c["official_close"]) for c in body["candles"]]
    assert rows == [
        ("2024-05-15T10:00:00+03:00", (100.0, 102.0, 98.0, 98.0), 3, False),
        ("2024-05-15T10:10:00+03:00", (101.5, 101.5, 101.5, 101.5), 1, False),
        # The 18:50:00 close ends the 18:40 bucket; the indicative 18:40 value is not in it.
        ("2024-05-15T18:40:00+03:00", (101.0, 101.0, 101.0, 101.0), 1, True),
    ]

    # A range inside buckets selects them whole.
    ranged = await get_json(
        client,
        "/v1/indices/IMOEX/candles",
        interval="10m",
        since="2024-05-15T10:05:00+03:00",
        until="2024-05-15T07:10:00Z",
    )
    assert ranged["since"] == iso_utc(msk(10, 0))
    assert ranged["until"] == iso_utc(msk(10, 20))
    assert [c["start"] for c in ranged["candles"]] == [iso_utc(msk(10, 0)), iso_utc(msk(10, 10))]
    assert ranged["candles"][0]["count"] == 3  # the 10:00:00 value too, before `since`

    minutes = await get_json(client, "/v1/indices/IMOEX/candles", interval="1m")
    assert [(c["start_local"][11:16], c["count"]) for c in minutes["candles"]] == [
        ("10:00", 2),
        ("10:09", 1),
        ("10:10", 1),
        ("18:49", 1),
    ]
    latest = await get_json(client, "/v1/indices/IMOEX/candles", interval="1m", limit=2)
    assert latest["candles"] == minutes["candles"][-2:]

    hours = await get_json(client, "/v1/indices/RTSI/candles", interval="1h")
    assert [c["start_local"][11:16] for c in hours["candles"]] == ["10:00", "18:00"]


async def test_candles_as_csv(
    market: tuple[RunningServer, httpx.AsyncClient, list[Publication]],
) -> None:
    _, client, _ = market
    response = await client.get(
        "/v1/indices/IMOEX/candles", params={"interval": "10m", "format": "csv"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="IMOEX-candles-10m.csv"'
    assert response.text.split("\r\n") == [
        "start,end,open,high,low,close,count,first_seq,last_seq,official_close,closed",
        "2024-05-15T07:00:00.000Z,2024-05-15T07:10:00.000Z,100.00,102.00,98.00,98.00,3,1,3,false,true",
        "2024-05-15T07:10:00.000Z,2024-05-15T07:20:00.000Z,101.50,101.50,101.50,101.50,1,4,4,false,true",
        "2024-05-15T15:40:00.000Z,2024-05-15T15:50:00.000Z,101.00,101.00,101.00,101.00,1,6,6,true,true",
        "",
    ]
    empty = await client.get(
        "/v1/indices/IMOEX/candles",
        params={"interval": "1d", "format": "csv", "since": "2024-06-01T00:00:00Z"},
    )
    assert empty.status_code == 200
    assert empty.headers["content-disposition"] == 'attachment; filename="IMOEX-candles-1d.csv"'
    assert (
        empty.text
        == "start,end,open,high,low,close,count,first_seq,last_seq,official_close,closed\r\n"
    )


async def test_history_as_csv_has_every_published_value(
    market: tuple[RunningServer, httpx.AsyncClient, list[Publication]],
) -> None:
    _, client, published = market
    response = await client.get("/v1/indices/IMOEX/history.csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="IMOEX-history.csv"'
    lines = response.text.split("\r\n")
    assert lines[0] == (
        "time,code,seq,kind,value,previous_close,change,change_percent,currency,precise_value"
    )
    assert lines[-1] == ""
    rows = [line.split(",") for line in lines[1:-1]]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("2024-05-15T07:00:00.000Z", "1", "intraday", "100.00"),
        ("2024-05-15T07:00:30.000Z", "2", "intraday", "102.00"),
        ("2024-05-15T07:09:59.000Z", "3", "intraday", "98.00"),
        ("2024-05-15T07:10:00.000Z", "4", "intraday", "101.50"),
        ("2024-05-15T15:40:00.000Z", "5", "indicative", "110.00"),
        ("2024-05-15T15:50:00.000Z", "6", "close", "101.00"),
    ]
    for row, publication in zip(rows, published, strict=True):
        assert row[1] == "IMOEX"
        assert row[5] == f"{publication.previous_close:.2f}"
        assert row[6] == f"{publication.value - publication.previous_close:.2f}"
        assert row[8] == "RUB"
        assert float(row[9]) == publication.value  # full precision, round-trips exactly

    ranged = await client.get(
        "/v1/indices/RTSI/history.csv",
        params={"since": "2024-05-15T07:00:30Z", "until": "2024-05-15T10:10:00+03:00", "limit": 2},
    )
    assert ranged.status_code == 200
    assert ranged.headers["content-disposition"] == 'attachment; filename="RTSI-history.csv"'
    cells = [line.split(",") for line in ranged.text.split("\r\n")[1:-1]]
    times_and_currency = [(row[0], row[8]) for row in cells]
    # The latest two of the three values in range.
    assert times_and_currency == [
        ("2024-05-15T07:09:59.000Z", "USD"),
        ("2024-05-15T07:10:00.000Z", "USD"),
    ]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/indices/NOPE/candles", {}, 404, None),
        ("/v1/indices/NOPE/history.csv", {}, 404, None),
        ("/v1/indices/IMOEX/candles", {"interval": "5m"}, 422, "interval"),
        ("/v1/indices/IMOEX/candles", {"since": "yesterday"}, 422, "since"),
        ("/v1/indices/IMOEX/candles", {"until": "2024-13-01"}, 422, "until"),
        (
            "/v1/indices/IMOEX/candles",
            {"since": "2024-05-16T00:00:00Z", "until": "2024-05-15T00:00:00Z"},
            422,
            "since",
        ),
        ("/v1/indices/IMOEX/candles", {"format": "xml"}, 422, "format"),
        ("/v1/indices/IMOEX/candles", {"limit": 0}, 422, "limit"),
        ("/v1/indices/IMOEX/candles", {"limit": 10_001}, 422, "limit"),
        ("/v1/indices/IMOEX/history.csv", {"until": "soon"}, 422, "until"),
        ("/v1/indices/IMOEX/history.csv", {"limit": "many"}, 422, "limit"),
    ],
)
async def test_bad_requests_name_the_code_or_the_parameter(
    market: tuple[RunningServer, httpx.AsyncClient, list[Publication]],
    path: str,
    params: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    _, client, _ = market
    response = await client.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    if field is None:
        assert body["code"] == "NOPE"
        assert body["detail"] == "unknown index 'NOPE'; known: IMOEX, RTSI"
    else:
        assert body["field"] == field
        assert body["detail"].startswith(f"{field}: ")
    if field == "interval":
        assert body["detail"] == "interval: must be one of 1m, 10m, 1h, 1d, got '5m'"


async def test_the_candle_of_the_running_day_is_not_closed() -> None:
    store = MemoryStore()
    engine = make_engine(store)  # around the clock: every grid instant publishes
    async with running(make_app(store, engine)) as server, http_client(server) as client:
        now = float(math.floor(time.time()))
        publications = await server.call(lambda: engine.publish(now))
        assert publications
        asked = datetime.now(UTC)
        body = await get_json(client, "/v1/indices/IMOEX/candles", interval="1d")
        answered = datetime.now(UTC)
    [day] = body["candles"]
    assert close_to(day["precise_close"], 100.0)
    end = datetime.fromisoformat(day["end"])
    if answered < end:
        assert day["closed"] is False
    elif asked >= end:  # Moscow midnight passed before the request: the day is over
        assert day["closed"] is True


async def test_candles_survive_a_restart_with_redis(redis_url: str) -> None:
    first = RedisStore(redis_url)
    played = Market(first)
    async with running(make_app(first, played.engine)) as server, http_client(server) as client:
        await played.play(server, client)
        before = await get_json(client, "/v1/indices/IMOEX/candles", interval="10m")
        day_before = await get_json(client, "/v1/indices/IMOEX/candles", interval="1d")
        csv_before = (await client.get("/v1/indices/IMOEX/history.csv")).text
    assert before["count"] == 3

    # A new process on the same Redis: API only, nothing published since.
    second = RedisStore(redis_url)
    async with running(make_app(second, None)) as server, http_client(server) as client:
        after = await get_json(client, "/v1/indices/IMOEX/candles", interval="10m")
        day_after = await get_json(client, "/v1/indices/IMOEX/candles", interval="1d")
        csv_after = (await client.get("/v1/indices/IMOEX/history.csv")).text
    assert after == before
    assert day_after == day_before
    assert ohlc(day_after["candles"][0]) == (100.0, 102.0, 98.0, 101.0)
    assert day_after["candles"][0]["official_close"] is True
    assert csv_after == csv_before
    assert csv_after.count("\r\n") == 1 + len(SCENARIO)


async def test_candles_say_when_the_store_history_bound_was_reached() -> None:
    store = MemoryStore(history_limit=4)  # keeps seq 3 to 6 of each index
    played = Market(store)
    async with running(make_app(store, played.engine)) as server, http_client(server) as client:
        await played.play(server, client)
        body = await get_json(client, "/v1/indices/IMOEX/candles", interval="1d")
    assert body["truncated"] is True
    [day] = body["candles"]
    assert (day["first_seq"], day["count"]) == (3, 3)  # 98.00, 101.50 and the close
    assert ohlc(day) == (98.0, 101.5, 98.0, 101.0)
