"""`index-ticker api`: a stateless API process in front of an engine process, sharing Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from conftest import free_port, start_service
from test_standby import get, wait
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

pytestmark = pytest.mark.system  # real servers, processes or sockets

TOKEN = "api-process-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_api(port: int, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "api", "--port", str(port), *flags],
        env={**os.environ, "INDEX_TICKER_INGEST_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def first_update(port: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/v1/ws"
    async with connect(url, subprotocols=[Subprotocol("index-ticker.v1")]) as ws:
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
        async with asyncio.timeout(15):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "update":
                    return message


def test_api_process_serves_the_engines_values_and_feeds_its_stream(redis_url: str) -> None:
    engine_port, api_port = free_port(), free_port()
    namespace = "api-process-test"
    engine = start_service(
        engine_port, "--redis-url", redis_url, "--namespace", namespace, "--feed", "none",
        "--cadence", "1", "--ingest-stream", "--log-level", "warning", token=TOKEN,
    )  # fmt: skip
    api = start_api(
        api_port, "--redis-url", redis_url, "--namespace", namespace, "--log-level", "warning"
    )
    try:
        ready = wait(lambda: get(api_port, "/readyz"))
        assert ready["status"] == "ready" and "engine" not in ready  # no calculation here
        # A publication the engine committed reaches the API process's WebSocket subscribers.
        update = asyncio.run(first_update(api_port))
        assert update["code"] == "IMOEX" and update["seq"] >= 1
        # A tick posted to the API process lands in the engine's durable stream and moves the index.
        posted = httpx.post(
            f"http://127.0.0.1:{api_port}/v1/ticks",
            json=[{"secid": "SBER", "price": 261.5}],
            headers=AUTH,
        ).json()
        assert posted["accepted"] == 1 and posted["queued"] is True

        def sber_price() -> bool:
            lines = get(api_port, "/v1/indices/IMOEX/constituents")["constituents"]
            return {line["secid"]: line["price"] for line in lines}["SBER"] == 261.5

        wait(sber_price)
        # Both processes answer with the same latest value.
        wait(lambda: get(api_port, "/v1/indices/IMOEX") == get(engine_port, "/v1/indices/IMOEX"))
    finally:
        for process in (api, engine):
            process.terminate()
            process.wait(10)
            if process.stderr is not None:
                process.stderr.close()


def test_api_process_without_redis_is_refused_with_the_field_named() -> None:
    process = start_api(free_port())
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"redis_url" in stderr and b"--redis-url" in stderr
