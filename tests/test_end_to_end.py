"""The whole service on Redis with a live 1-second grid: ticks in over HTTP, values out over REST
and WebSocket, and a restart that carries on from the last publication."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx
from serving import (
    AUTH,
    by_hand,
    close_to,
    http_client,
    make_app,
    make_engine,
    receive,
    running,
    wait_until,
    ws_connect,
)
from websockets.asyncio.client import ClientConnection

from streaming.publication import Publication
from streaming.store.redis import RedisStore

NAMESPACE = "api-e2e"


def published_after(message: dict[str, Any], moment: float) -> bool:
    return message["time"] is not None and datetime.fromisoformat(message["time"]).timestamp() > (
        moment
    )


async def next_update_after(ws: ClientConnection, code: str, moment: float) -> dict[str, Any]:
    """The first update of `code` for a grid instant later than `moment` (epoch seconds)."""
    while True:
        message = await receive(ws)
        is_update = message["type"] == "update" and message["code"] == code
        if is_update and published_after(message, moment):
            return message


async def value_after(client: httpx.AsyncClient, code: str, moment: float) -> dict[str, Any]:
    """Poll REST until `code` has a value published for a grid instant after `moment`."""

    async def check() -> dict[str, Any] | None:
        response = await client.get(f"/v1/indices/{code}")
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if published_after(body, moment) else None

    return await wait_until(check, timeout=15.0)


async def last_published(url: str) -> dict[str, Publication]:
    """What Redis holds as the latest values, read with a store of our own."""
    store = RedisStore(url, namespace=NAMESPACE)
    await store.open()
    try:
        return await store.latest()
    finally:
        await store.close()


async def test_ticks_in_values_out_on_a_live_grid(redis_url: str) -> None:
    store = RedisStore(redis_url, namespace=NAMESPACE)
    app = make_app(store, make_engine(store, live=True))
    async with running(app) as server, http_client(server) as client, ws_connect(server) as ws:
        ready = (await client.get("/readyz")).json()
        assert ready["store"] == {"backend": "redis", "ok": True}
        assert ready["engine"]["cadence_seconds"] == 1

        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX", "RTSI"]}))
        assert {(await receive(ws))["type"], (await receive(ws))["type"]} == {"snapshot"}

        batch = [
            {"secid": "AAAA", "price": 104.2},
            {"secid": "BBBB", "price": "-50"},
            {"secid": "CCCC", "price": 391.75},
            {"secid": "CCCC", "price": "Infinity"},
            {"secid": "XXXX", "price": 10},
            {"secid": "CCCP", "price": 203.1, "time": "2026-02-30T10:00:00Z"},
        ]
        posted = await client.post("/v1/ticks", json=batch, headers=AUTH)
        after_post = time.time()
        assert posted.json()["accepted"] == 2
        assert [r["index"] for r in posted.json()["rejected"]] == [1, 3, 4, 5]

        imoex, rtsi = by_hand({"AAAA": 104.2, "CCCC": 391.75})
        update = await next_update_after(ws, "IMOEX", after_post)
        assert update["value"] == round(imoex, 2)
        assert close_to(update["precise_value"], imoex)
        usd = await next_update_after(ws, "RTSI", after_post)
        assert usd["value"] == round(rtsi, 2)
        assert close_to(usd["precise_value"], rtsi)

        rest = await value_after(client, "IMOEX", after_post)
        assert close_to(rest["precise_value"], imoex)
        history = (await client.get("/v1/indices/IMOEX/history")).json()["values"]
        seqs = [value["seq"] for value in history]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert history[-1]["seq"] >= update["seq"]


async def test_restart_on_the_same_redis_carries_on_from_the_last_publication(
    redis_url: str,
) -> None:
    first_ticks = [{"secid": "BBBB", "price": 47.5}, {"secid": "CCCP", "price": 212.0}]
    store = RedisStore(redis_url, namespace=NAMESPACE)
    app = make_app(store, make_engine(store, live=True))
    async with running(app) as server, http_client(server) as client:
        posted = await client.post("/v1/ticks", json=first_ticks, headers=AUTH)
        assert posted.json()["accepted"] == 2
        await value_after(client, "IMOEX", time.time())
        await value_after(client, "IMOEX", time.time())

    before = await last_published(redis_url)
    imoex_before = before["IMOEX"]
    expected, _ = by_hand({"BBBB": 47.5, "CCCP": 212.0})
    assert close_to(imoex_before.value, expected)

    store = RedisStore(redis_url, namespace=NAMESPACE)
    app = make_app(store, make_engine(store, live=True))
    async with running(app) as server, http_client(server) as client, ws_connect(server) as ws:
        first = (await client.get("/v1/indices/IMOEX")).json()
        # The first value served is the last one published before the restart (or, if the
        # new engine already hit a grid instant, the same value with a higher seq).
        assert first["seq"] >= imoex_before.seq
        assert close_to(first["precise_value"], imoex_before.value)
        if first["seq"] == imoex_before.seq:
            assert datetime.fromisoformat(first["time"]) == imoex_before.time
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
        snapshot = await receive(ws)
        assert snapshot["seq"] >= imoex_before.seq
        assert close_to(snapshot["precise_value"], imoex_before.value)

        # New publications continue the sequence upward, from the restored prices.
        resumed = await value_after(client, "IMOEX", imoex_before.time.timestamp())
        assert resumed["seq"] > imoex_before.seq
        assert close_to(resumed["precise_value"], imoex_before.value)
        assert resumed["previous_close"] == 100.0

        posted = await client.post(
            "/v1/ticks", json=[{"secid": "AAAA", "price": 99.0}], headers=AUTH
        )
        assert posted.json()["accepted"] == 1
        moved = await next_update_after(ws, "IMOEX", time.time())
        expected_now, _ = by_hand({"BBBB": 47.5, "CCCP": 212.0, "AAAA": 99.0})
        assert close_to(moved["precise_value"], expected_now)

        since = imoex_before.time.isoformat()
        history = (await client.get("/v1/indices/IMOEX/history", params={"since": since})).json()
        seqs = [value["seq"] for value in history["values"]]
        assert seqs[0] == imoex_before.seq
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
