"""Redis stops while subscribers are connected: the engine keeps computing, this process keeps
pushing from memory, readiness says degraded, nothing crashes or spins; when Redis comes back the
state and the history catch up with what was published meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from conftest import free_port, redis_url_for, start_redis, stop_redis
from serving import http_client, make_app, make_engine, receive, running, ws_connect

from streaming.store.redis import RedisStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

# CI runs a 6 s outage; REDIS_OUTAGE_SECONDS=60 runs the full minute.
OUTAGE_SECONDS = float(os.environ.get("REDIS_OUTAGE_SECONDS", "6"))


async def test_publishing_goes_on_through_a_redis_outage(tmp_path: Path) -> None:
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    store = RedisStore(redis_url_for(port))
    engine = make_engine(store, live=True)
    try:
        async with (
            running(make_app(store, engine)) as server,
            http_client(server) as client,
            ws_connect(server) as ws,
        ):
            await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
            seen: list[int] = []
            while len(seen) < 2:
                message = await receive(ws)
                if message["type"] in ("snapshot", "update") and message["seq"]:
                    seen.append(message["seq"])
            stop_redis(redis_process)
            outage_started = time.monotonic()
            during: list[int] = []
            while time.monotonic() - outage_started < OUTAGE_SECONDS:
                message = await receive(ws, timeout=5)
                if message["type"] == "update":
                    during.append(message["seq"])
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "degraded"
            assert (await client.get("/healthz")).status_code == 200
            assert len(during) >= OUTAGE_SECONDS - 2  # about one a second, from memory
            assert during == list(range(during[0], during[-1] + 1))
            assert engine.status()["backlog"] >= len(during) - 1

            redis_process = start_redis(port, tmp_path)  # empty: no persistence
            deadline = time.monotonic() + 20
            while engine.status()["backlog"] and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert engine.status()["backlog"] == 0
            history = (await client.get("/v1/indices/IMOEX/history?limit=1000")).json()["values"]
            kept = [v["seq"] for v in history]
            assert set(during) <= set(kept)  # what was published during the outage is history now
            after = [
                m["seq"]
                for m in [await receive(ws, timeout=5) for _ in range(3)]
                if m["type"] == "update"
            ]
            assert after and after[0] > during[-1]  # the stream goes on, no repeats
            assert (await client.get("/readyz")).status_code == 200
    finally:
        stop_redis(redis_process)


async def test_the_engine_does_not_spin_while_redis_is_away(tmp_path: Path) -> None:
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    store = RedisStore(redis_url_for(port))
    await store.open()
    engine = make_engine(store, live=True)
    await engine.start()
    try:
        stop_redis(redis_process)
        started_cpu = time.process_time()
        await asyncio.sleep(4)
        cpu = time.process_time() - started_cpu
        assert cpu < 2.0, f"{cpu:.2f} s of CPU in 4 s of outage"  # backoff, not a busy loop
        assert engine.stats.commit_failures >= 2
    finally:
        await engine.stop()
        await store.close()
        stop_redis(redis_process)
