"""WS /v1/ws under a real uvicorn with real websockets clients: snapshot, updates, errors,
unsubscribe, the snapshot/update hand-over and a client that never reads."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
from serving import (
    AUTH,
    RunningServer,
    Served,
    by_hand,
    close_to,
    grid_start,
    receive,
    serve,
    wait_until,
    ws_connect,
)

from app.broadcast import Broadcaster
from streaming.engine import Engine
from streaming.methodology.schedule import iso_utc, utc_from_epoch
from streaming.store.redis import RedisStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

GRID = grid_start()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve() as parts:
        yield parts


async def publish(server: RunningServer, engine: Engine, grid: float) -> None:
    assert await server.call(lambda: engine.publish(grid)), "the publication was not committed"


async def subscribed_clients(server: RunningServer) -> int:
    broadcaster: Broadcaster = server.app.state.broadcaster

    async def count() -> int:
        clients: int = broadcaster.clients()
        return clients

    return await server.call(count)


async def test_snapshot_then_updates_carry_the_formula_value(served: Served) -> None:
    server, engine, client = served
    async with ws_connect(server) as ws:
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX", "RTSI"]}))
        snapshots = [await receive(ws), await receive(ws)]
        assert [(m["type"], m["code"], m["currency"]) for m in snapshots] == [
            ("snapshot", "IMOEX", "RUB"),
            ("snapshot", "RTSI", "USD"),
        ]
        assert all(m["value"] is None and m["seq"] is None for m in snapshots)

        await publish(server, engine, GRID)
        first = {m["code"]: m for m in [await receive(ws), await receive(ws)]}
        assert first["IMOEX"]["type"] == "update"
        assert (first["IMOEX"]["value"], first["IMOEX"]["seq"]) == (100.0, 1)
        assert (first["RTSI"]["value"], first["RTSI"]["seq"]) == (1000.0, 1)
        assert first["IMOEX"]["time"] == iso_utc(utc_from_epoch(GRID))

        ticks = [{"secid": "AAAA", "price": 117.35}, {"secid": "BBBB", "price": 48.21}]
        assert (await client.post("/v1/ticks", json=ticks, headers=AUTH)).json()["accepted"] == 2
        await publish(server, engine, GRID + 1)
        second = {m["code"]: m for m in [await receive(ws), await receive(ws)]}
        imoex, rtsi = by_hand({"AAAA": 117.35, "BBBB": 48.21})
        assert second["IMOEX"]["seq"] == 2
        assert second["IMOEX"]["value"] == round(imoex, 2)
        assert close_to(second["IMOEX"]["precise_value"], imoex)
        assert second["IMOEX"]["change"] == round(imoex - 100.0, 2)
        assert second["IMOEX"]["previous_close"] == 100.0
        assert second["RTSI"]["value"] == round(rtsi, 2)
        assert close_to(second["RTSI"]["precise_value"], rtsi)
        assert second["RTSI"]["fx_rate"] == 90.0

    # A client arriving later gets the last publication as its snapshot.
    async with ws_connect(server) as late:
        await late.send(json.dumps({"op": "subscribe", "indices": ["RTSI"]}))
        snapshot = await receive(late)
        assert (snapshot["type"], snapshot["code"], snapshot["seq"]) == ("snapshot", "RTSI", 2)
        assert snapshot["value"] == round(rtsi, 2)


BAD_MESSAGES: list[tuple[str | bytes, str, str]] = [
    ("this is not json", "message", "not valid JSON"),
    ("[1, 2]", "message", "must be a JSON object, got list"),
    ('{"indices": ["IMOEX"]}', "op", "missing"),
    ('{"op": 5}', "op", "must be a string, got int"),
    ('{"op": "dance"}', "op", "unknown operation 'dance'"),
    ('{"op": "subscribe"}', "indices", "missing"),
    ('{"op": "subscribe", "indices": "IMOEX"}', "indices", "must be an array"),
    ('{"op": "subscribe", "indices": []}', "indices", "empty"),
    ('{"op": "subscribe", "indices": ["IMOEX", 7]}', "indices[1]", "must be a string, got int"),
    ('{"op": "subscribe", "indices": ["IMOEX", "NOPE"]}', "indices", "unknown index 'NOPE'"),
    ('{"op": "unsubscribe", "indices": [null]}', "indices[0]", "must be a string"),
    (json.dumps({"op": "subscribe", "indices": ["IMOEX"] * 65}), "indices", "at most 64"),
    (b"\x00\x01binary", "message", "binary frames are not supported"),
    (json.dumps({"op": "ping", "pad": "x" * 70_000}), "message", "larger than 65536 bytes"),
]


async def test_bad_messages_get_an_error_and_the_socket_keeps_working(served: Served) -> None:
    server, engine, _ = served
    async with ws_connect(server) as ws:
        for message, field, reason in BAD_MESSAGES:
            await ws.send(message)
            answer = await receive(ws)
            assert answer["type"] == "error", (message, answer)
            assert answer["field"] == field, (message, answer)
            assert reason in answer["reason"], (message, answer)
            assert answer["reason"].startswith(f"{field}: ")
        # The refused subscription with one unknown code subscribed to nothing at all.
        assert await subscribed_clients(server) == 0
        await ws.send(json.dumps({"op": "ping"}))
        assert (await receive(ws))["type"] == "pong"
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
        assert (await receive(ws))["type"] == "snapshot"
        await publish(server, engine, GRID)
        update = await receive(ws)
        assert (update["type"], update["code"], update["seq"]) == ("update", "IMOEX", 1)


async def test_unsubscribe_stops_the_updates_of_that_code(served: Served) -> None:
    server, engine, _ = served
    async with ws_connect(server) as ws:
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX", "RTSI"]}))
        await receive(ws), await receive(ws)
        await publish(server, engine, GRID)
        assert {(await receive(ws))["code"], (await receive(ws))["code"]} == {"IMOEX", "RTSI"}
        await ws.send(json.dumps({"op": "unsubscribe", "indices": ["RTSI"]}))
        assert await receive(ws) == {
            "type": "unsubscribed",
            "channel": "index",
            "indices": ["RTSI"],
        }
        await publish(server, engine, GRID + 1)
        await publish(server, engine, GRID + 2)
        # Were RTSI still subscribed, its seq 2 update would come between these two.
        following = [await receive(ws), await receive(ws)]
        assert [(m["code"], m["seq"]) for m in following] == [("IMOEX", 2), ("IMOEX", 3)]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_snapshot_and_live_updates_meet_without_gap_or_duplicate(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # With Redis, reading the snapshot and receiving the channel both take a round trip, so
    # publications land on either side of a subscription: the hand-over is really exercised.
    store = RedisStore(request.getfixturevalue("redis_url")) if backend == "redis" else None
    rounds = 300
    async with serve(store, ws_queue_size=4 * rounds) as (server, engine, _):

        async def publish_many() -> int:
            for step in range(rounds):
                await engine.publish(GRID + step)
                await asyncio.sleep(0.001)
            return rounds

        async def watch(delay: float) -> list[int]:
            await asyncio.sleep(delay)
            async with ws_connect(server) as ws:
                await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
                snapshot = await receive(ws)
                assert snapshot["type"] == "snapshot"
                seqs = [snapshot["seq"] or 0]
                while seqs[-1] < rounds:
                    update = await receive(ws)
                    assert update["type"] == "update" and update["code"] == "IMOEX"
                    seqs.append(update["seq"])
                return seqs

        publisher = asyncio.create_task(server.call(publish_many))
        watchers = [asyncio.create_task(watch(0.02 * n)) for n in range(12)]
        assert await publisher == rounds
        for seqs in await asyncio.gather(*watchers):
            assert seqs == list(range(seqs[0], rounds + 1)), seqs


def tiny_receive_buffer_socket(port: int) -> socket.socket:
    """A connected socket whose kernel receive buffer is as small as the system allows."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_a_client_that_never_reads_does_not_stall_the_others() -> None:
    queue_size = 8
    async with serve(ws_queue_size=queue_size) as (server, engine, client):
        stuck = await ws_connect(
            server,
            sock=tiny_receive_buffer_socket(server.port),
            max_queue=1,
            compression=None,
            ping_interval=None,
        )
        reader = await ws_connect(server)
        try:
            for ws in (stuck, reader):
                await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX", "RTSI"]}))
            assert [(await receive(reader))["type"] for _ in range(2)] == ["snapshot"] * 2
            received: list[tuple[str, int]] = []

            async def dropped() -> int:
                ready = (await client.get("/readyz")).json()
                count: int = ready["broadcast"]["updates_dropped"]
                return count

            # Publish in lock-step with the reading client until the one that never reads has
            # filled every buffer on its way and lost updates to the drop-oldest policy.
            rounds = 0
            while rounds < 20_000:
                rounds += 1
                await publish(server, engine, GRID + rounds)
                for _ in range(2):
                    update = await receive(reader)
                    received.append((update["code"], update["seq"]))
                if rounds % 100 == 0 and await dropped() > 0:
                    break
            assert await dropped() > 0, "the silent client never fell behind"
            expected = [(code, seq) for seq in range(1, rounds + 1) for code in ("IMOEX", "RTSI")]
            assert received == expected

            # The silent client is still connected, and the server still answers everyone.
            assert await subscribed_clients(server) == 2
            await reader.send(json.dumps({"op": "ping"}))
            assert (await receive(reader))["type"] == "pong"
            assert (await client.get("/healthz")).status_code == 200
        finally:
            await reader.close()
            stuck.transport.abort()
        await wait_until(lambda: _none_if_busy(server))


async def _none_if_busy(server: RunningServer) -> bool | None:
    return True if await subscribed_clients(server) == 0 else None


async def test_a_reannounced_publication_reaches_a_client_once(served: Served) -> None:
    server, engine, _ = served
    async with ws_connect(server) as ws:
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
        assert (await receive(ws))["type"] == "snapshot"
        await publish(server, engine, GRID)
        assert (await receive(ws))["seq"] == 1
        latest = await server.call(engine.store.latest)
        state = await server.call(engine.store.load_state)
        assert state is not None
        # The same records announced again, as a retried store write can do.
        await server.call(lambda: engine.store.commit(state, list(latest.values())))
        await publish(server, engine, GRID + 1)
        assert (await receive(ws))["seq"] == 2
