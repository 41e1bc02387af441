"""The feed protocol on WS /v1/ws under a real uvicorn with real websockets clients: resume by
sequence (memory and Redis, across a restart), gaps, contributions, the constituents and live
channels, heartbeats, API keys and limits, and the keepalive settings of a served process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import free_port
from serving import (
    AUTH,
    SHARES,
    RunningServer,
    by_hand,
    close_to,
    grid_start,
    make_app,
    make_engine,
    receive,
    running,
    serve,
    wait_until,
    ws_connect,
)
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.uri import parse_uri

from app.access import Access
from app.broadcast import Broadcaster
from app.protocol import Channel
from app.subscription import Client, Policy
from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.serve import assemble, make_services, uvicorn_options
from streaming.settings import Settings, api_keys, load_settings_file
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore

GRID = grid_start()
KEY = "desk-key-0123456789abcdef"
OTHER_KEY = "dash-key-0123456789abcdef"


async def publish(server: RunningServer, engine: Engine, *grids: float) -> None:
    for grid in grids:
        assert await server.call(lambda grid=grid: engine.publish(grid)), "not committed"


async def subscribe(ws: ClientConnection, *codes: str, **fields: Any) -> None:
    await ws.send(json.dumps({"op": "subscribe", "indices": list(codes), **fields}))


async def next_of(ws: ClientConnection, *types: str) -> dict[str, Any]:
    """The next message of one of these types, skipping heartbeats."""
    while True:
        message = await receive(ws)
        if message["type"] in types:
            return message
        assert message["type"] == "heartbeat", message


async def connections_are(server: RunningServer, count: int) -> bool | None:
    return True if (await stats(server))["connections"] == count else None


async def stats(server: RunningServer) -> dict[str, Any]:
    broadcaster: Broadcaster = server.app.state.broadcaster

    async def read() -> dict[str, Any]:
        return broadcaster.stats()

    return await server.call(read)


# --- sequence and resume ---------------------------------------------------------------


@pytest.mark.system
async def test_resume_after_a_dropped_connection_replays_exactly_what_was_missed() -> None:
    async with serve() as (server, engine, _):
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", "RTSI")
            assert [(await receive(ws))["type"] for _ in range(2)] == ["snapshot"] * 2
            await publish(server, engine, GRID + 1, GRID + 2, GRID + 3)
            seen = [(await receive(ws))["seq"] for _ in range(6)]
            assert seen == [1, 1, 2, 2, 3, 3]
        # Published while nobody listens.
        await publish(server, engine, GRID + 4, GRID + 5, GRID + 6)
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", "RTSI", from_seq={"IMOEX": 3})
            replayed = [await receive(ws) for _ in range(3)]
            assert [(m["type"], m["code"], m["seq"], m["replayed"]) for m in replayed] == [
                ("update", "IMOEX", 4, True),
                ("update", "IMOEX", 5, True),
                ("update", "IMOEX", 6, True),
            ]
            assert await receive(ws) == {
                "type": "resumed",
                "code": "IMOEX",
                "from_seq": 3,
                "replayed": 3,
                "seq": 6,
            }
            # RTSI came without from_seq: a snapshot of its latest value.
            snapshot = await receive(ws)
            assert (snapshot["type"], snapshot["code"], snapshot["seq"]) == ("snapshot", "RTSI", 6)
            assert "gap" not in snapshot
            await publish(server, engine, GRID + 7)
            live = [await receive(ws) for _ in range(2)]
            assert sorted((m["code"], m["seq"]) for m in live) == [("IMOEX", 7), ("RTSI", 7)]
            assert all("replayed" not in m for m in live)


@pytest.mark.system
async def test_a_resume_older_than_the_history_gets_a_snapshot_flagged_gap() -> None:
    async with serve(MemoryStore(history_limit=3)) as (server, engine, _):
        await publish(server, engine, *(GRID + n for n in range(1, 9)))  # seq 1..8, 6..8 kept
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", from_seq={"IMOEX": 2})
            snapshot = await receive(ws)
            assert (snapshot["type"], snapshot["seq"], snapshot["gap"]) == ("snapshot", 8, True)
            await publish(server, engine, GRID + 9)
            assert (await receive(ws))["seq"] == 9
            # Resuming from within the history kept needs no gap.
            await subscribe(ws, "IMOEX", from_seq={"IMOEX": 6})
            assert [(await receive(ws))["seq"] for _ in range(3)] == [7, 8, 9]
            assert (await receive(ws))["type"] == "resumed"


@pytest.mark.system
@pytest.mark.parametrize(
    ("from_seq", "why"), [(50, "ahead of the store: it was reset"), (1, "beyond ws_replay_limit")]
)
async def test_resume_beyond_what_can_be_replayed_is_a_gap(from_seq: int, why: str) -> None:
    async with serve(ws_replay_limit=3) as (server, engine, _):
        await publish(server, engine, *(GRID + n for n in range(1, 11)))
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", from_seq={"IMOEX": from_seq})
            snapshot = await receive(ws)
            assert (snapshot["type"], snapshot["seq"], snapshot.get("gap")) == (
                "snapshot",
                10,
                True,
            ), why


async def test_resume_meets_the_redis_channel_without_gap_or_duplicate(redis_url: str) -> None:
    # Reading the history and receiving the channel both take round trips to Redis: publications
    # land on either side of, or in both, the history read and the held live messages.
    rounds = 250
    async with serve(RedisStore(redis_url, namespace="resume-race"), ws_queue_size=1024) as (
        server,
        engine,
        client,
    ):

        async def publish_many() -> None:
            for step in range(1, rounds + 1):
                await engine.publish(GRID + step)
                await asyncio.sleep(0.002)

        async def watch(delay: float, behind: int) -> tuple[int, list[int]]:
            await asyncio.sleep(delay)
            current = (await client.get("/v1/indices/IMOEX")).json().get("seq") or 0
            start = max(0, current - behind)
            async with ws_connect(server) as ws:
                await subscribe(ws, "IMOEX", from_seq={"IMOEX": start})
                seqs: list[int] = []
                while not seqs or seqs[-1] < rounds:
                    message = await next_of(ws, "update", "resumed")
                    if message["type"] == "update":
                        seqs.append(message["seq"])
                return start, seqs

        publisher = asyncio.create_task(server.call(publish_many))
        watchers = [asyncio.create_task(watch(0.03 * n, 7 * n)) for n in range(12)]
        await publisher
        for start, seqs in await asyncio.gather(*watchers):
            assert seqs == list(range(start + 1, rounds + 1)), (start, seqs)


async def test_a_restarted_service_on_redis_resumes_by_sequence(redis_url: str) -> None:
    namespace = "restart-resume"
    async with serve(RedisStore(redis_url, namespace=namespace)) as (server, engine, _):
        ws = await ws_connect(server)
        await subscribe(ws, "IMOEX")
        assert (await receive(ws))["type"] == "snapshot"
        await publish(server, engine, GRID + 1, GRID + 2, GRID + 3)
        assert [(await receive(ws))["seq"] for _ in range(3)] == [1, 2, 3]
    # The service stops: connected clients are told to come back.
    with pytest.raises(ConnectionClosed) as closed:
        await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    # A new process: a new engine restores the state from Redis and publishes before the
    # client is back.
    async with serve(RedisStore(redis_url, namespace=namespace)) as (server, engine, client):
        await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 123.45}], headers=AUTH)
        await publish(server, engine, GRID + 4, GRID + 5)
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", from_seq={"IMOEX": 3})
            replayed = [await receive(ws) for _ in range(2)]
            assert [m["seq"] for m in replayed] == [4, 5]
            assert replayed[-1]["value"] == round(by_hand({"AAAA": 123.45})[0], 2)
            assert (await receive(ws))["type"] == "resumed"
            await publish(server, engine, GRID + 6)
            assert (await receive(ws))["seq"] == 6


async def test_an_api_process_without_an_engine_serves_the_feed_from_redis(redis_url: str) -> None:
    # The engine runs elsewhere (here: on the test's loop) and only shares Redis with the API.
    engine_store = RedisStore(redis_url, namespace="api-only")
    await engine_store.open()
    engine = make_engine(engine_store)
    try:
        await engine.publish(GRID + 1)
        api_store = RedisStore(redis_url, namespace="api-only")
        app = make_app(api_store, None, ws_heartbeat_seconds=0.3)
        async with running(app) as server, ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", from_seq={"IMOEX": 0})
            assert [(m["type"], m["seq"]) for m in [await receive(ws), await receive(ws)]] == [
                ("update", 1),
                ("resumed", 1),
            ]
            await engine.publish(GRID + 2)
            assert (await next_of(ws, "update"))["seq"] == 2
            beat = await next_of(ws, "heartbeat")
            assert beat["engine"] is None
            assert (beat["feed"], beat["seq"]["IMOEX"]) == ("stale", 2)
    finally:
        await engine_store.close()


async def test_publications_missed_by_the_redis_channel_are_filled_from_history(
    redis_url: str,
) -> None:
    async with serve(RedisStore(redis_url, namespace="gap-fill")) as (server, engine, _):
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX")
            await receive(ws)
            await publish(server, engine, GRID + 1)
            assert (await receive(ws))["seq"] == 1

            async def kill_the_channel_then_publish() -> None:
                # The store's channel connection dies: what is published before it subscribes
                # again (it waits a while first) never reaches this process.
                admin = redis.Redis.from_url(redis_url)
                try:
                    assert admin.client_kill_filter(_type="pubsub") >= 1
                finally:
                    admin.close()
                for step in (2, 3, 4):
                    assert await engine.publish(GRID + step)

            await server.call(kill_the_channel_then_publish)
            grid = GRID + 5
            while True:  # publish until the channel is back and delivers again
                await publish(server, engine, grid)
                grid += 1
                with contextlib.suppress(TimeoutError):
                    first = await receive(ws, timeout=0.3)
                    break
            assert first["seq"] == 2
            following = [first["seq"]]
            last = (await server.call(engine.store.latest))["IMOEX"].seq
            while following[-1] < last:
                following.append((await receive(ws))["seq"])
            assert following == list(range(2, last + 1))
        assert (await stats(server))["gaps_filled"] >= 3


# --- contributions and channels ------------------------------------------------------------


@pytest.mark.system
async def test_contributions_only_for_the_subscriptions_that_ask() -> None:
    async with serve() as (server, engine, client):
        await publish(server, engine, GRID + 1)
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", contributions=True)
            snapshot = await receive(ws)
            assert set(snapshot["contributions"]) == {"since_previous", "since_close"}
            await subscribe(ws, "RTSI")
            assert "contributions" not in await receive(ws)
            ticks = [{"secid": "AAAA", "price": 110.0}, {"secid": "CCCC", "price": 380.0}]
            await client.post("/v1/ticks", json=ticks, headers=AUTH)
            await publish(server, engine, GRID + 2)
            updates = {m["code"]: m for m in [await receive(ws), await receive(ws)]}
        assert "contributions" not in updates["RTSI"]
        moved = dict(map(tuple, updates["IMOEX"]["contributions"]["since_previous"]))
        # (110 - 100) · 1000 / 4500 and (380 - 400) · 500 / 4500 index points.
        assert close_to(moved["AAAA"], 10 * 1000 / 4500)
        assert close_to(moved["CCCC"], -20 * 500 / 4500)


async def test_each_publication_is_serialised_once_per_variant() -> None:
    broadcaster = Broadcaster(MemoryStore())
    clients = [Client(Policy()) for _ in range(6)]
    for n, client in enumerate(clients):
        broadcaster.attach(client)
        broadcaster.subscribe(client, Channel.INDEX, ["IMOEX"], contributions=n % 2 == 0)
    engine = make_engine(MemoryStore())
    (publication, _) = await engine.publish(GRID)
    await broadcaster.dispatch(publication)
    texts = [(await client.outbox.get()).text for client in clients]
    assert len({id(text) for text in texts}) == 2
    assert all(texts[n] is texts[n % 2] for n in range(6))
    assert "contributions" in json.loads(texts[0]) and "contributions" not in json.loads(texts[1])


@pytest.mark.system
async def test_constituents_channel_once_per_publication() -> None:
    async with serve() as (server, engine, client), ws_connect(server) as ws:
        await subscribe(ws, "IMOEX", channel="constituents")
        first = await receive(ws)
        assert (first["type"], first["code"], first["seq"]) == ("constituents", "IMOEX", None)
        assert {line["secid"]: line["price"] for line in first["constituents"]} == {
            "AAAA": 100.0,
            "BBBB": 50.0,
            "CCCC": 400.0,
            "CCCP": 200.0,
        }
        await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 110.0}], headers=AUTH)
        await publish(server, engine, GRID + 1)
        message = await receive(ws)
        assert (message["type"], message["seq"]) == ("constituents", 1)
        lines = {line["secid"]: line for line in message["constituents"]}
        capitalization = 110.0 * 1000 + 50.0 * 2000 + 400.0 * 500 + 200.0 * 250
        assert close_to(message["capitalization"], capitalization)
        assert close_to(lines["AAAA"]["weight"], 100 * 110.0 * SHARES["AAAA"] / capitalization)
        assert lines["AAAA"]["stale"] is False and lines["BBBB"]["stale"] is True
        # One message per publication, not one per index of the publication.
        await ws.send(json.dumps({"op": "ping"}))
        assert (await receive(ws))["type"] == "pong"


@pytest.mark.system
async def test_unsubscribe_one_channel_keeps_the_other() -> None:
    async with serve() as (server, engine, _), ws_connect(server) as ws:
        await subscribe(ws, "IMOEX")
        await subscribe(ws, "IMOEX", channel="constituents")
        assert [(await receive(ws))["type"] for _ in range(2)] == ["snapshot", "constituents"]
        await ws.send(
            json.dumps({"op": "unsubscribe", "indices": ["IMOEX"], "channel": "constituents"})
        )
        assert await receive(ws) == {
            "type": "unsubscribed",
            "channel": "constituents",
            "indices": ["IMOEX"],
        }
        await publish(server, engine, GRID + 1)
        assert (await receive(ws))["type"] == "update"
        await ws.send(json.dumps({"op": "ping"}))
        assert (await receive(ws))["type"] == "pong"


@pytest.mark.system
async def test_live_channel_is_conflated_to_the_interval_asked() -> None:
    store = MemoryStore()
    interval_ms = 200
    count = 60
    async with serve(store) as (server, _, _):
        async with ws_connect(server) as ws:
            await subscribe(ws, "IMOEX", channel="live", min_interval_ms=interval_ms)
            assert await receive(ws) == {
                "type": "subscribed",
                "channel": "live",
                "indices": ["IMOEX"],
                "min_interval_ms": interval_ms,
            }
            started = time.monotonic()

            async def announce() -> None:
                for n in range(count):
                    values = {"IMOEX": float(n), "RTSI": 1000.0 + n}
                    await store.announce_live(
                        json.dumps({"type": "live", "time": None, "values": values})
                    )
                    await asyncio.sleep(0.01)

            await server.call(announce)
            received = [await receive(ws)]
            while received[-1]["values"]["IMOEX"] < count - 1:
                received.append(await receive(ws))
            elapsed = time.monotonic() - started
        assert all(m["type"] == "live" and set(m["values"]) == {"IMOEX"} for m in received)
        values = [int(m["values"]["IMOEX"]) for m in received]
        # Every announcement is either sent or counted in the next message sent.
        assert values[0] == received[0].get("conflated", 0)
        for before, message in zip(values, received[1:], strict=False):
            assert int(message["values"]["IMOEX"]) - before - 1 == message.get("conflated", 0)
        assert len(received) < count
        assert len(received) <= elapsed / (interval_ms / 1000) + 2


@pytest.mark.system
async def test_live_channel_carries_the_engine_values_between_publications() -> None:
    async with serve(live=True) as (server, _, client), ws_connect(server) as ws:
        await subscribe(ws, "IMOEX", "RTSI", channel="live")
        assert (await receive(ws))["type"] == "subscribed"
        await client.post("/v1/ticks", json=[{"secid": "BBBB", "price": 61.5}], headers=AUTH)
        imoex, rtsi = by_hand({"BBBB": 61.5})
        message = await next_of(ws, "live")
        while message["values"].get("IMOEX") != round(imoex, 2):
            message = await next_of(ws, "live")
        assert message["values"]["RTSI"] == round(rtsi, 2)


@pytest.mark.system
async def test_a_heartbeat_when_nothing_else_is_sent() -> None:
    async with serve(ws_heartbeat_seconds=0.3) as (server, engine, _), ws_connect(server) as ws:
        beat = await receive(ws)
        assert beat["type"] == "heartbeat"
        assert beat["engine"]["state"] == "running" and beat["engine"]["session_open"] is True
        assert beat["feed"] == "stale"  # no tick has come yet
        assert beat["seq"] == {} and beat["last_publication"] is None
        await subscribe(ws, "IMOEX")
        await next_of(ws, "snapshot")
        await publish(server, engine, GRID + 1)
        await next_of(ws, "update")
        beat = await receive(ws)
        assert beat["type"] == "heartbeat"
        assert beat["seq"] == {"IMOEX": 1, "RTSI": 1}
        assert beat["last_publication"] is not None


BAD = [
    ({"channel": "trades"}, "channel", "unknown channel 'trades'"),
    ({"channel": 3}, "channel", "must be a string"),
    ({"contributions": "yes"}, "contributions", "must be true or false"),
    ({"channel": "live", "contributions": True}, "contributions", "only the index channel"),
    ({"from_seq": [1]}, "from_seq", "must be an object"),
    ({"from_seq": {"RTSI": 1}}, "from_seq", "'RTSI' is not in indices"),
    ({"from_seq": {"IMOEX": -1}}, "from_seq.IMOEX", "must be an integer >= 0"),
    ({"from_seq": {"IMOEX": 1.5}}, "from_seq.IMOEX", "must be an integer >= 0"),
    ({"channel": "constituents", "from_seq": {"IMOEX": 1}}, "from_seq", "only the index channel"),
    ({"min_interval_ms": 500}, "min_interval_ms", "only the live channel"),
    ({"channel": "live", "min_interval_ms": 50}, "min_interval_ms", "must be 100..3600000"),
    ({"channel": "live", "min_interval_ms": "1s"}, "min_interval_ms", "must be an integer"),
]


@pytest.mark.system
@pytest.mark.parametrize(("fields", "field", "reason"), BAD)
async def test_bad_subscription_fields_are_named(
    fields: dict[str, Any], field: str, reason: str
) -> None:
    async with serve() as (server, _, _), ws_connect(server) as ws:
        await subscribe(ws, "IMOEX", **fields)
        answer = await receive(ws)
        assert (answer["type"], answer["field"]) == ("error", field), answer
        assert reason in answer["reason"], answer
        assert (await stats(server))["clients"] == 0


@pytest.mark.system
async def test_subscriptions_per_connection_are_limited_across_channels() -> None:
    async with serve(ws_max_subscriptions=3) as (server, _, _), ws_connect(server) as ws:
        await subscribe(ws, "IMOEX", "RTSI")
        await subscribe(ws, "IMOEX", channel="constituents")
        assert [(await receive(ws))["type"] for _ in range(3)] == ["snapshot"] * 2 + [
            "constituents"
        ]
        await subscribe(ws, "IMOEX", "RTSI")  # already subscribed: no more than before
        assert [(await receive(ws))["type"] for _ in range(2)] == ["snapshot"] * 2
        await subscribe(ws, "RTSI", channel="live")
        answer = await receive(ws)
        assert answer["type"] == "error"
        assert answer["reason"] == "indices: at most 3 subscriptions per connection"


# --- access ----------------------------------------------------------------------------------


async def closed_with(connection: Any) -> tuple[int, str]:
    """The close code and reason the server ended a connection with."""
    with pytest.raises(ConnectionClosed) as closed:
        async with connection as ws:
            await receive(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def pong(ws: ClientConnection) -> bool:
    await ws.send(json.dumps({"op": "ping"}))
    return (await receive(ws))["type"] == "pong"


@pytest.mark.system
async def test_api_keys_from_the_list_in_each_place_a_client_can_put_them() -> None:
    async with serve(access=Access([KEY])) as (server, _, _):
        code, reason = await closed_with(ws_connect(server))
        assert code == 4001 and reason.startswith("unauthorized: an API key is required")
        code, reason = await closed_with(
            ws_connect(server, additional_headers={"Authorization": f"Bearer {OTHER_KEY}"})
        )
        assert (code, reason) == (4003, "forbidden: unknown API key")

        async with ws_connect(server, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            assert await pong(ws)
        async with ws_connect_url(f"{server.ws_url}?api_key={KEY}") as ws:
            assert await pong(ws)
        async with ws_connect(server, subprotocols=["index-ticker.v1", f"bearer.{KEY}"]) as ws:
            assert ws.subprotocol == "index-ticker.v1"  # the key is never echoed
            assert await pong(ws)


async def test_api_keys_in_redis(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    admin.sadd("keys-test:api_keys", KEY)
    access = Access(redis_url=redis_url, namespace="keys-test", cache_seconds=0)
    async with serve(access=access) as (server, _, _):
        async with ws_connect(server, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            assert await pong(ws)
        code, _ = await closed_with(
            ws_connect(server, additional_headers={"Authorization": f"Bearer {OTHER_KEY}"})
        )
        assert code == 4003
        admin.sadd("keys-test:api_keys", OTHER_KEY)
        admin.srem("keys-test:api_keys", KEY)
        async with ws_connect(
            server, additional_headers={"Authorization": f"Bearer {OTHER_KEY}"}
        ) as ws:
            assert await pong(ws)
        code, _ = await closed_with(
            ws_connect(server, additional_headers={"Authorization": f"Bearer {KEY}"})
        )
        assert code == 4003
    admin.close()
    unreachable = Access(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with serve(access=unreachable) as (server, _, _):
        code, reason = await closed_with(
            ws_connect(server, additional_headers={"Authorization": f"Bearer {KEY}"})
        )
        assert (code, reason) == (1013, "try again later: API keys cannot be checked now")


@pytest.mark.system
async def test_connections_per_key_and_per_address_are_limited() -> None:
    access = Access([KEY, OTHER_KEY], max_per_key=2, max_per_address=3)
    as_key = {"additional_headers": {"Authorization": f"Bearer {KEY}"}}
    as_other = {"additional_headers": {"Authorization": f"Bearer {OTHER_KEY}"}}
    async with serve(access=access) as (server, _, _):
        async with ws_connect(server, **as_key) as first, ws_connect(server, **as_key):
            code, reason = await closed_with(ws_connect(server, **as_key))
            assert (code, reason) == (
                4029,
                "too many connections: at most 2 connections per API key",
            )
            async with ws_connect(server, **as_other) as third:
                assert await pong(third)
                code, reason = await closed_with(ws_connect(server, **as_other))
                assert code == 4029 and "per client address" in reason
            await first.close()
        # Places are given back when connections end.
        await wait_until(lambda: connections_are(server, 0))
        async with ws_connect(server, **as_key) as again:
            assert await pong(again)


# --- keepalive and compression of a served process ------------------------------------------


@contextlib.contextmanager
def served_process(tmp_path: Path, **settings: Any) -> Iterator[tuple[str, int]]:
    """`index-ticker serve` with a settings file; yields its WebSocket URL and port."""
    port = free_port()
    lines = [f"port = {port}", 'feed = "none"', "cadence = 1", 'log_level = "warning"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    config = tmp_path / "feed.toml"
    config.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "INDEX_TICKER_INGEST_TOKEN": "feed-test-token-0123456789"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(
                    f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False
                ).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "the service exited"
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/v1/ws", port
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.system
def test_protocol_pings_and_a_silent_peer_is_dropped(tmp_path: Path) -> None:
    with served_process(tmp_path, ws_ping_interval=0.3, ws_ping_timeout=0.5) as (url, port):
        protocol = ClientProtocol(parse_uri(url))
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)
        try:
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            pings = 0
            while pings < 1:
                data = sock.recv(65536)
                assert data, "closed before any ping"
                protocol.receive_data(data)
                pings += sum(
                    1
                    for event in protocol.events_received()
                    if getattr(event, "opcode", None) is Opcode.PING
                )
            # The pongs the protocol object queued are never sent: the server gives up on us.
            closing = b""
            while chunk := sock.recv(65536):
                closing += chunk
            protocol.receive_data(closing)
            protocol.receive_eof()
            assert protocol.close_rcvd is not None and protocol.close_rcvd.code == 1011
        finally:
            sock.close()


@pytest.mark.system
@pytest.mark.parametrize("deflate", [False, True])
async def test_per_message_compression_is_off_unless_configured(
    tmp_path: Path, deflate: bool
) -> None:
    settings = {"ws_per_message_deflate": True} if deflate else {}
    with served_process(tmp_path, **settings) as (url, _):
        async with ws_connect_url(url) as ws:  # the client offers permessage-deflate
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert (extensions is not None and "permessage-deflate" in extensions) is deflate
            await subscribe(ws, "IMOEX")
            assert (await receive(ws))["type"] == "snapshot"


def ws_connect_url(url: str) -> Any:
    from websockets.asyncio.client import connect

    return connect(url, proxy=None)


# --- settings -----------------------------------------------------------------------------


def test_feed_settings_reach_the_services_and_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# desks\n{OTHER_KEY}\n\n")
    monkeypatch.setenv("INDEX_TICKER_API_KEYS", f"{KEY}, {KEY}")
    monkeypatch.setenv("INDEX_TICKER_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("INDEX_TICKER_INGEST_TOKEN", "feed-test-token-0123456789")
    assert api_keys() == (KEY, OTHER_KEY)
    config = tmp_path / "feed.toml"
    config.write_text(
        'feed = "none"\nws_per_message_deflate = true\nws_ping_interval = 0\n'
        "ws_ping_timeout = 7.5\nws_heartbeat_seconds = 2\nws_queue_size = 32\n"
        "ws_max_lag_seconds = 12\nws_max_dropped = 500\nws_live_min_interval_ms = 250\n"
        "ws_replay_limit = 99\nws_max_connections_per_key = 3\n"
    )
    settings = load_settings_file(config)
    services = make_services(settings, assemble(settings))
    assert (services.ws_heartbeat_seconds, services.ws_queue_size) == (2, 32)
    assert (services.ws_max_lag_seconds, services.ws_max_dropped) == (12, 500)
    assert (services.ws_live_min_interval_ms, services.ws_replay_limit) == (250, 99)
    assert services.access.required and services.access.max_per_key == 3
    options = uvicorn_options(settings)
    assert options["ws_per_message_deflate"] is True
    assert (options["ws_ping_interval"], options["ws_ping_timeout"]) == (None, 7.5)
    assert uvicorn_options(Settings())["ws_per_message_deflate"] is False


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("ws_per_message_deflate = 'yes'\n", "ws_per_message_deflate"),
        ("ws_queue_size = true\n", "ws_queue_size"),
        ("ws_queue_size = 0\n", "ws_queue_size"),
        ("ws_max_lag_seconds = 0\n", "ws_max_lag_seconds"),
        ("ws_ping_interval = -1\n", "ws_ping_interval"),
        ("ws_max_dropped = -1\n", "ws_max_dropped"),
        ("api_keys_redis = true\n", "api_keys_redis"),
    ],
)
def test_bad_feed_settings_name_the_key(tmp_path: Path, content: str, key: str) -> None:
    config = tmp_path / "feed.toml"
    config.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_settings_file(config)
    assert caught.value.key == key


def test_a_malformed_api_key_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="key 2: must be 16 to 256 characters"):
        Access([KEY, "short"])
