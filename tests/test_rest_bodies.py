"""The REST value bodies made once per publication: always the bytes of the store's latest
publication (what response_model validation of it makes), for every index, after each new
publication, after a restart, and never a kept value while the Redis channel is down."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from conftest import free_port, redis_url_for, start_redis, stop_redis
from pydantic import TypeAdapter
from serving import (
    AUTH,
    SHARES,
    RunningServer,
    api_definition,
    http_client,
    make_app,
    make_engine,
    running,
    serve,
    wait_until,
)

from app.models import IndexValue, ResponseBodies, index_value_body, value_message
from app.rest import constituents_message
from app.services import Services
from streaming.engine import Engine
from streaming.methodology.schedule import utc_from_epoch
from streaming.publication import EngineState, Publication
from streaming.store.base import Store
from streaming.store.redis import RedisStore

GRID = float(math.floor(time.time())) - 600  # whole seconds, in the past, on the 1 s grid
CODES = ("IMOEX", "RTSI")
VALUE = TypeAdapter(IndexValue)
VALUES = TypeAdapter(list[IndexValue])


def services_of_app(server: RunningServer) -> Services:
    services: Services = server.app.state.services
    return services


async def latest_of(server: RunningServer, store: Store) -> dict[str, Publication]:
    return await server.call(store.latest)


def model_listing(latest: dict[str, Publication]) -> bytes:
    """GET /v1/indices as response_model=list[IndexValue] makes it from the store's values."""
    family = api_definition()
    messages = [value_message(latest.get(spec.code), spec, "value") for spec in family.indices]
    return VALUES.dump_json(VALUES.validate_python(messages))


async def assert_served_latest(
    server: RunningServer, store: Store, client: httpx.AsyncClient
) -> dict[str, Publication]:
    """Every value endpoint answers the bytes of the store's latest publications right now."""
    latest = await latest_of(server, store)
    for code in CODES:
        response = await client.get(f"/v1/indices/{code}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        # The bytes response_model=IndexValue made of the store's latest publication.
        assert response.content == VALUE.dump_json(
            VALUE.validate_python(latest[code].message("value"))
        )
        assert response.json() == json.loads(json.dumps(latest[code].message("value")))
    listing = await client.get("/v1/indices")
    assert listing.content == model_listing(latest)
    return latest


async def publish(server: RunningServer, engine: Engine, grid: float) -> list[Publication]:
    publications = await server.call(lambda: engine.publish(grid))
    assert publications, "nothing was committed"
    return publications


@pytest.mark.system
async def test_memory_store_bodies_follow_every_publication_at_once() -> None:
    async with serve() as (server, engine, client):
        store = engine.store
        assert (await client.get("/v1/indices")).content == model_listing({})
        assert (await client.get("/v1/indices/IMOEX")).status_code == 503

        await publish(server, engine, GRID)
        first = await assert_served_latest(server, store, client)
        assert first["IMOEX"].seq == 1
        await assert_served_latest(server, store, client)  # served again from the kept body
        assert not services_of_app(server).latest_values.kept  # memory: read on every request

        ticks = [{"secid": "AAAA", "price": 123.45}]
        assert (await client.post("/v1/ticks", json=ticks, headers=AUTH)).status_code == 200
        await publish(server, engine, GRID + 1)
        second = await assert_served_latest(server, store, client)
        assert second["IMOEX"].seq == 2
        assert second["IMOEX"].value != first["IMOEX"].value
        assert second["RTSI"].value != first["RTSI"].value


async def wait_served(
    client: httpx.AsyncClient, code: str, seq: int, seen: list[int]
) -> dict[str, Any]:
    """Poll until `code` is served with `seq`; every answer on the way must not go back."""

    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/indices/{code}")).json()
        if body.get("seq") is not None:
            assert not seen or body["seq"] >= seen[-1], f"seq went back: {seen} then {body}"
            seen.append(body["seq"])
        return body if body.get("seq") == seq else None

    return await wait_until(check)


async def test_redis_store_bodies_follow_every_publication(redis_url: str) -> None:
    store = RedisStore(redis_url, namespace="rest-bodies")
    async with serve(store) as (server, engine, client):
        seen: list[int] = []
        for step in range(3):
            ticks = [{"secid": "BBBB", "price": 51.0 + step}]
            assert (await client.post("/v1/ticks", json=ticks, headers=AUTH)).status_code == 200
            await publish(server, engine, GRID + step)
            for code in CODES:
                await wait_served(client, code, step + 1, seen if code == "IMOEX" else [])
            await assert_served_latest(server, store, client)
            await assert_served_latest(server, store, client)


async def test_after_a_restart_the_first_body_is_the_last_published(redis_url: str) -> None:
    namespace = "rest-restart"
    first_store = RedisStore(redis_url, namespace=namespace)
    async with serve(first_store) as (server, engine, client):
        await publish(server, engine, GRID)
        await client.post("/v1/ticks", json=[{"secid": "CCCC", "price": 420.0}], headers=AUTH)
        await publish(server, engine, GRID + 1)
        await wait_served(client, "IMOEX", 2, [])
        before = {code: (await client.get(f"/v1/indices/{code}")).content for code in CODES}
        listing_before = (await client.get("/v1/indices")).content

    second_store = RedisStore(redis_url, namespace=namespace)
    async with serve(second_store) as (server, engine, client):
        # Nothing published by this process yet: what it serves is what was published last.
        assert {code: (await client.get(f"/v1/indices/{code}")).content for code in CODES} == (
            before
        )
        assert (await client.get("/v1/indices")).content == listing_before
        await assert_served_latest(server, second_store, client)

        await publish(server, engine, GRID + 2)
        after = await wait_served(client, "IMOEX", 3, [])
        assert after["value"] == json.loads(before["IMOEX"])["value"]  # same prices
        await wait_served(client, "RTSI", 3, [])
        await assert_served_latest(server, second_store, client)


async def test_a_publication_announced_while_the_channel_reconnects_is_not_missed(
    redis_url: str,
) -> None:
    namespace = "rest-channel"
    api_store = RedisStore(redis_url, namespace=namespace)
    engine_store = RedisStore(redis_url, namespace=namespace)
    await engine_store.open()
    engine = make_engine(engine_store)
    killer = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with running(make_app(api_store, None)) as server, http_client(server) as client:
            await engine.publish(GRID)
            await wait_served(client, "IMOEX", 1, [])

            # Cut the channel connections and publish at once: redis-py connects again by
            # itself and the announcement of seq 2 never reaches the API process.
            assert await killer.client_kill_filter(_type="pubsub") >= 1
            await engine.publish(GRID + 1)
            seen: list[int] = []
            await wait_served(client, "IMOEX", 2, seen)  # with no further publication
            await wait_served(client, "RTSI", 2, [])
            await assert_served_latest(server, api_store, client)
    finally:
        await killer.aclose()
        await engine_store.close()


async def _when(condition: bool) -> bool | None:
    return True if condition else None


@pytest.mark.system
async def test_no_kept_value_is_served_once_redis_is_seen_down(tmp_path: Path) -> None:
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    try:
        store = RedisStore(redis_url_for(port), namespace="rest-down")
        engine = make_engine(store)
        async with running(make_app(store, engine)) as server, http_client(server) as client:
            await publish(server, engine, GRID)
            await wait_served(client, "IMOEX", 1, [])
            stop_redis(redis_process)
            await wait_until(lambda: _when(not store.listening), timeout=15)
            for path in ("/v1/indices", "/v1/indices/IMOEX"):
                response = await client.get(path)
                assert response.status_code == 503
                assert "state store unavailable" in response.json()["detail"]
            assert not services_of_app(server).latest_values.kept
    finally:
        stop_redis(redis_process)


# --- the bodies themselves, without a server ---------------------------------------------


def publication(seq: int, code: str = "IMOEX", value: float = 101.234567) -> Publication:
    return Publication(
        code=code,
        currency="USD" if code == "RTSI" else "RUB",
        value=value,
        time=utc_from_epoch(GRID + seq),
        seq=seq,
        previous_close=100.0,
        capitalization=value * 4500.0,
        divisor=4500.0,
        fx_rate=90.0 if code == "RTSI" else None,
        stale_lines=("AAAA",),
    )


def test_a_value_body_is_made_once_per_publication_and_is_the_models() -> None:
    bodies = ResponseBodies()
    first = publication(1)
    body = bodies.value(first)
    model = TypeAdapter(IndexValue)
    assert body == model.dump_json(model.validate_python(first.message("value")))
    assert bodies.value(publication(1)) is body  # an equal publication read again
    newer = publication(2, value=102.5)
    assert json.loads(bodies.value(newer))["seq"] == 2
    assert json.loads(bodies.value(newer))["value"] == 102.5


def test_the_listing_changes_with_any_index_and_names_the_unpublished() -> None:
    family = api_definition()
    bodies = ResponseBodies()
    only_imoex = {"IMOEX": publication(1)}
    assert bodies.listing(family.indices, only_imoex) == model_listing(only_imoex)
    both = {"IMOEX": publication(1), "RTSI": publication(1, "RTSI", 1000.5)}
    assert bodies.listing(family.indices, both) == model_listing(both)
    moved = {"IMOEX": publication(1), "RTSI": publication(2, "RTSI", 1001.5)}
    listing = json.loads(bodies.listing(family.indices, moved))
    assert [entry["seq"] for entry in listing] == [1, 2]
    assert listing[1]["value"] == 1001.5


@pytest.mark.parametrize("after", [900, 60])
def test_a_constituents_body_turns_a_line_stale_when_its_time_comes(after: int) -> None:
    definition = api_definition()
    tick = GRID + 5.0
    state = EngineState(
        trading_day="2024-03-01",
        prices={"AAAA": 110.0},
        reference_prices={},
        tick_times={"AAAA": tick},
        seq={"IMOEX": 3},
        previous_close={},
        divisors={},
        fx_rate=90.0,
        last_grid=GRID + 10,
    )
    bodies = ResponseBodies()

    def at(saved: EngineState, now: float) -> dict[str, Any]:
        def build(moment: float) -> tuple[dict[str, Any], float | None]:
            return constituents_message("IMOEX", definition, saved, after, moment)

        body: dict[str, Any] = json.loads(bodies.constituents("IMOEX", saved, now, after, build))
        assert body == json.loads(json.dumps(build(now)[0]))  # what a fresh build says
        return body

    def stale(body: dict[str, Any]) -> dict[str, bool]:
        return {line["secid"]: line["stale"] for line in body["constituents"]}

    first = at(state, tick + after - 1)
    assert first["seq"] == 3 and len(first["constituents"]) == len(SHARES)
    assert stale(first) == {"AAAA": False, "BBBB": True, "CCCC": True, "CCCP": True}
    assert stale(at(state, tick + after))["AAAA"] is False  # stale is "more than after"
    assert stale(at(state, tick + after + 0.5))["AAAA"] is True
    assert stale(at(state, tick + 1))["AAAA"] is False  # the clock went back: made again
    moved = EngineState.loads(state.dumps())
    moved.prices["AAAA"] = 120.0
    moved.seq["IMOEX"] = 4
    changed = at(moved, tick + 1)
    assert changed["seq"] == 4
    assert changed["constituents"][0]["price"] == 120.0


@pytest.mark.system
async def test_the_read_endpoints_keep_their_openapi_and_their_405() -> None:
    async with serve() as (_, _, client):
        document = (await client.get("/openapi.json")).json()
        paths = document["paths"]
        one = paths["/v1/indices/{code}"]["get"]
        assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/IndexValue"
        }
        assert {"404", "503"} <= set(one["responses"])
        assert [p["name"] for p in one["parameters"]] == ["code"]
        listing = paths["/v1/indices"]["get"]["responses"]["200"]["content"]
        assert listing["application/json"]["schema"]["items"] == {
            "$ref": "#/components/schemas/IndexValue"
        }
        constituents = paths["/v1/indices/{code}/constituents"]["get"]["responses"]["200"]
        assert constituents["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Constituents"
        }
        for path in ("/v1/indices", "/v1/indices/IMOEX", "/v1/indices/IMOEX/constituents"):
            refused = await client.post(path)
            assert refused.status_code == 405
            assert refused.headers["allow"] == "GET"


async def test_an_equal_publication_from_another_store_reads_the_same_body(
    redis_url: str,
) -> None:
    # Redis hands out a new object per read: equal content must still find the kept body.
    store = RedisStore(redis_url, namespace="rest-equal")
    await store.open()
    try:
        await store.commit(_state(), [publication(1), publication(1, "RTSI", 1000.5)])
        bodies = ResponseBodies()
        first = bodies.value((await store.latest())["IMOEX"])
        assert bodies.value((await store.latest())["IMOEX"]) is first
        assert json.loads(first)["precise_value"] == 101.234567
    finally:
        await store.close()


def _state() -> EngineState:
    return EngineState(
        trading_day="2024-03-01",
        prices={},
        reference_prices={},
        tick_times={},
        seq={"IMOEX": 1, "RTSI": 1},
        previous_close={},
        divisors={},
        fx_rate=90.0,
        last_grid=GRID + 1,
    )


async def test_concurrent_requests_share_one_store_read(redis_url: str) -> None:
    store = RedisStore(redis_url, namespace="rest-shared")
    engine_store = RedisStore(redis_url, namespace="rest-shared")
    await engine_store.open()
    try:
        await engine_store.commit(_state(), [publication(1), publication(1, "RTSI", 1000.5)])
        async with running(make_app(store, None)) as server, http_client(server) as client:
            answers = await asyncio.gather(*(client.get("/v1/indices/IMOEX") for _ in range(32)))
            assert {answer.content for answer in answers} == {
                index_value_body(publication(1).message("value"))
            }
    finally:
        await engine_store.close()
