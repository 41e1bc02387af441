"""REST endpoints under a real uvicorn: values, constituents, history, health, the page."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import free_port, start_redis, stop_redis
from serving import (
    AUTH,
    REFERENCE,
    SHARES,
    RunningServer,
    by_hand,
    close_to,
    http_client,
    make_app,
    make_engine,
    running,
)

from streaming.engine import Engine
from streaming.methodology.schedule import iso_utc, utc_from_epoch
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

GRID = float(math.floor(time.time())) - 600  # whole seconds, in the past, on the 1 s grid


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunningServer, Engine, httpx.AsyncClient]]:
    store = MemoryStore()
    engine = make_engine(store)
    async with (
        running(make_app(store, engine)) as server,
        http_client(server) as client,
    ):
        yield server, engine, client


async def publish(server: RunningServer, engine: Engine, grid: float) -> None:
    publications = await server.call(lambda: engine.publish(grid))
    assert publications, "the publication was not committed"


async def test_liveness_and_readiness(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    _, _, client = served
    live = await client.get("/healthz")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["store"] == {"backend": "memory", "ok": True}
    assert body["engine"]["state"] == "running"
    assert body["engine"]["cadence_seconds"] == 1
    assert body["broadcast"]["running"] is True


async def test_values_before_the_first_publication(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    _, _, client = served
    listing = await client.get("/v1/indices")
    assert listing.status_code == 200
    entries = listing.json()
    assert [entry["code"] for entry in entries] == ["IMOEX", "RTSI"]
    assert [entry["currency"] for entry in entries] == ["RUB", "USD"]
    assert all(entry["value"] is None and entry["seq"] is None for entry in entries)

    one = await client.get("/v1/indices/IMOEX")
    assert one.status_code == 503
    assert "IMOEX has not been published yet" in one.json()["detail"]
    assert one.json()["code"] == "IMOEX"
    assert one.headers["retry-after"] == "1"


@pytest.mark.parametrize("path", ["/v1/indices/NOPE", "/v1/indices/NOPE/constituents",
                                  "/v1/indices/NOPE/history", "/v1/indices/imoex"])  # fmt: skip
async def test_unknown_index_is_a_404_naming_it(
    served: tuple[RunningServer, Engine, httpx.AsyncClient], path: str
) -> None:
    _, _, client = served
    response = await client.get(path)
    assert response.status_code == 404
    body = response.json()
    code = path.split("/")[3]
    assert repr(code) in body["detail"]
    assert body["code"] == code
    assert body["known"] == ["IMOEX", "RTSI"]


async def test_values_after_publications(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    server, engine, client = served
    await publish(server, engine, GRID)
    imoex = (await client.get("/v1/indices/IMOEX")).json()
    assert imoex["type"] == "value"
    assert imoex["code"] == "IMOEX"
    assert imoex["currency"] == "RUB"
    assert imoex["value"] == 100.0
    assert imoex["previous_close"] == 100.0
    assert imoex["change"] == 0.0
    assert imoex["change_percent"] == 0.0
    assert imoex["seq"] == 1
    assert imoex["time"] == iso_utc(utc_from_epoch(GRID))
    rtsi = (await client.get("/v1/indices/RTSI")).json()
    assert (rtsi["value"], rtsi["currency"], rtsi["fx_rate"]) == (1000.0, "USD", 90.0)

    ticks = [{"secid": "AAAA", "price": 123.45}, {"secid": "CCCP", "price": 187.3}]
    posted = await client.post("/v1/ticks", json=ticks, headers=AUTH)
    assert posted.json() == {
        "accepted": 2,
        "rejected": [],
        "held": [],
        "discarded": [],
        "queued": False,
    }
    await publish(server, engine, GRID + 1)
    expected_imoex, expected_rtsi = by_hand({"AAAA": 123.45, "CCCP": 187.3})
    listing = {entry["code"]: entry for entry in (await client.get("/v1/indices")).json()}
    assert listing["IMOEX"]["value"] == round(expected_imoex, 2)
    assert close_to(listing["IMOEX"]["precise_value"], expected_imoex)
    assert listing["IMOEX"]["change"] == round(expected_imoex - 100.0, 2)
    assert listing["IMOEX"]["seq"] == 2
    assert listing["RTSI"]["value"] == round(expected_rtsi, 2)
    assert close_to(listing["RTSI"]["precise_value"], expected_rtsi)


async def test_constituents_at_base_prices_then_as_of_the_last_publication(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    server, engine, client = served
    before = (await client.get("/v1/indices/IMOEX/constituents")).json()
    assert before["as_of"] is None and before["seq"] is None
    assert before["capitalization"] == 450_000.0
    lines = {line["secid"]: line for line in before["constituents"]}
    assert list(lines) == ["AAAA", "BBBB", "CCCC", "CCCP"]
    assert {s: line["price"] for s, line in lines.items()} == REFERENCE
    assert {s: line["index_shares"] for s, line in lines.items()} == SHARES
    assert lines["CCCC"]["issuer"] == lines["CCCP"]["issuer"] == "Gamma"
    expected_weights = {"AAAA": 100 / 4.5, "BBBB": 100 / 4.5, "CCCC": 200 / 4.5, "CCCP": 50 / 4.5}
    for secid, weight in expected_weights.items():
        assert close_to(lines[secid]["weight"], weight)
        assert lines[secid]["last_tick_time"] is None

    tick_time = "2026-03-02T07:15:30Z"
    ticks = [{"secid": "AAAA", "price": 110.0, "time": tick_time}]
    assert (await client.post("/v1/ticks", json=ticks, headers=AUTH)).json()["accepted"] == 1
    # Not published yet: the endpoint shows the state of the last publication, not live prices.
    unpublished = (await client.get("/v1/indices/RTSI/constituents")).json()
    assert unpublished["constituents"][0]["price"] == 100.0
    await publish(server, engine, GRID)
    after = (await client.get("/v1/indices/RTSI/constituents")).json()
    assert after["code"] == "RTSI"
    assert after["as_of"] == iso_utc(utc_from_epoch(GRID))
    assert after["seq"] == 1
    assert after["capitalization"] == 460_000.0
    lines = {line["secid"]: line for line in after["constituents"]}
    assert lines["AAAA"]["price"] == 110.0
    assert lines["AAAA"]["last_tick_time"] == "2026-03-02T07:15:30.000Z"
    assert lines["BBBB"]["last_tick_time"] is None
    assert close_to(lines["AAAA"]["weight"], 100 * 110_000 / 460_000)
    assert close_to(lines["CCCC"]["weight"], 100 * 200_000 / 460_000)
    assert close_to(sum(line["weight"] for line in lines.values()), 100.0)
    # A 2026-03-02 trade is long past: stale, like a line with no trade at all.
    assert lines["AAAA"]["stale"] is True and lines["BBBB"]["stale"] is True


async def test_line_moves_since_the_previous_close_add_up_to_the_index_change(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    """reference_price is each line's previous close price: the lines' contributions in points,
    (price - reference_price) * index_shares / divisor, sum to the index's change."""
    server, engine, client = served
    ticks = [{"secid": "AAAA", "price": 123.45}, {"secid": "CCCP", "price": 187.3}]
    assert (await client.post("/v1/ticks", json=ticks, headers=AUTH)).json()["accepted"] == 2
    await publish(server, engine, GRID)
    body = (await client.get("/v1/indices/IMOEX/constituents")).json()
    lines = {line["secid"]: line for line in body["constituents"]}
    assert {s: line["reference_price"] for s, line in lines.items()} == REFERENCE
    assert lines["BBBB"]["price"] == lines["BBBB"]["reference_price"]  # not traded
    value = (await client.get("/v1/indices/IMOEX")).json()
    points = sum(
        (line["price"] - line["reference_price"]) * line["index_shares"] / value["divisor"]
        for line in lines.values()
    )
    assert points != 0.0
    assert close_to(points, value["precise_value"] - value["previous_close"])


async def test_a_line_with_a_recent_trade_is_not_stale(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    server, engine, client = served
    ticks = [{"secid": "AAAA", "price": 101.0}]  # time of receipt
    assert (await client.post("/v1/ticks", json=ticks, headers=AUTH)).json()["accepted"] == 1
    await publish(server, engine, GRID)
    lines = {
        line["secid"]: line
        for line in (await client.get("/v1/indices/IMOEX/constituents")).json()["constituents"]
    }
    assert lines["AAAA"]["stale"] is False
    assert lines["CCCC"]["stale"] is True


async def test_history_in_time_order_with_filters_and_limit(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    server, engine, client = served
    for step in range(3):
        await client.post("/v1/ticks", json=[{"secid": "BBBB", "price": 51 + step}], headers=AUTH)
        await publish(server, engine, GRID + step)

    async def seqs(**params: str | int) -> list[int]:
        response = await client.get("/v1/indices/IMOEX/history", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == "IMOEX"
        assert body["count"] == len(body["values"])
        return [value["seq"] for value in body["values"]]

    assert await seqs() == [1, 2, 3]
    assert await seqs(limit=2) == [2, 3]
    assert await seqs(since=iso_utc(utc_from_epoch(GRID + 1))) == [2, 3]
    assert await seqs(until=iso_utc(utc_from_epoch(GRID))) == [1]
    naive = datetime.fromtimestamp(GRID + 1, UTC).replace(tzinfo=None).isoformat()
    assert await seqs(since=naive, until=naive) == [2]
    values = (await client.get("/v1/indices/IMOEX/history")).json()["values"]
    assert [v["value"] for v in values] == [
        round(by_hand({"BBBB": 51 + n})[0], 2) for n in range(3)
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-45T00:00:00Z"}, "until"),
        ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_bad_history_parameters_are_422_naming_the_parameter(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
    params: dict[str, str | int],
    field: str,
) -> None:
    _, _, client = served
    response = await client.get("/v1/indices/IMOEX/history", params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == field
    assert body["detail"].startswith(f"{field}: ")


async def test_dashboard_static_files_and_openapi(
    served: tuple[RunningServer, Engine, httpx.AsyncClient],
) -> None:
    _, _, client = served
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    index = Path(__file__).resolve().parent.parent / "app" / "static" / "index.html"
    if index.is_file():
        assert page.text == index.read_text(encoding="utf-8")
        static = await client.get("/static/index.html")
        assert static.status_code == 200 and static.text == page.text
    else:
        assert "/v1/indices" in page.text
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/indices", "/v1/indices/{code}", "/v1/indices/{code}/constituents",
                 "/v1/indices/{code}/history", "/v1/ticks", "/healthz", "/readyz"):  # fmt: skip
        assert path in paths
    missing = await client.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}


async def test_api_only_process_serves_values_but_refuses_ticks() -> None:
    store = MemoryStore()
    async with (
        running(make_app(store, None)) as server,
        http_client(server) as client,
    ):
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and "engine" not in ready
        posted = await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 1}], headers=AUTH)
        assert posted.status_code == 503
        assert "accepts no ticks" in posted.json()["detail"]
        assert (await client.get("/v1/indices")).status_code == 200


async def test_readiness_is_503_when_redis_stops_answering(tmp_path: Path) -> None:
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    try:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", namespace="api-ready")
        async with (
            running(make_app(store, None)) as server,
            http_client(server) as client,
        ):
            assert (await client.get("/readyz")).status_code == 200
            stop_redis(redis_process)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            body = ready.json()
            assert "'redis' does not answer" in body["detail"]
            assert body["store"] == {"backend": "redis", "ok": False}
            assert (await client.get("/healthz")).status_code == 200
            values = await client.get("/v1/indices")
            assert values.status_code == 503
            assert "state store unavailable" in values.json()["detail"]
    finally:
        stop_redis(redis_process)
