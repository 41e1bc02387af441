"""`kill -9` of a real `index-ticker serve` process with Redis state, then a restart: the first
value served is the last one published, prices are the same, sequence numbers continue upward."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import free_port, start_service

TOKEN = "restart-test-token-0123456789"


def start(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    return start_service(
        port, "--redis-url", redis_url, "--feed", "none", "--cadence", "1",
        "--log-level", "warning", token=TOKEN,
    )  # fmt: skip


def wait_for(url: str, predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            last = response.json() if response.status_code == 200 else None
            if last is not None and predicate(last):
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never satisfied the condition; last answer {last!r}")


@pytest.fixture
def service_port() -> Iterator[int]:
    yield free_port()


def test_kill_9_and_restart_serves_the_last_published_value(
    redis_url: str, service_port: int
) -> None:
    base = f"http://127.0.0.1:{service_port}"
    first = start(service_port, redis_url)
    try:
        wait_for(f"{base}/v1/indices/IMOEX", lambda body: body["seq"] >= 1)
        posted = httpx.post(
            f"{base}/v1/ticks",
            json=[{"secid": "SBER", "price": 260.0}, {"secid": "GAZP", "price": 180.0}],
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert posted.json()["accepted"] == 2
        moved = wait_for(
            f"{base}/v1/indices/IMOEX/constituents",
            lambda body: {c["secid"]: c["price"] for c in body["constituents"]}["SBER"] == 260.0,
        )
        time.sleep(1.5)  # at least one more publication after the ticks
        before = wait_for(f"{base}/v1/indices/IMOEX", lambda body: body["seq"] > moved["seq"])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    second = start(service_port, redis_url)
    try:
        served = wait_for(f"{base}/v1/indices/IMOEX", lambda body: True)
        # What the killed process published last is what the new one serves first (or a
        # later publication of the same prices): never an older or a different value.
        assert served["seq"] >= before["seq"]
        assert served["precise_value"] == before["precise_value"]
        after = wait_for(f"{base}/v1/indices/IMOEX", lambda body: body["seq"] > before["seq"])
        assert after["precise_value"] == pytest.approx(before["precise_value"], rel=1e-12)
        assert after["previous_close"] == before["previous_close"]
        prices = {
            c["secid"]: c["price"]
            for c in httpx.get(f"{base}/v1/indices/IMOEX/constituents").json()["constituents"]
        }
        assert prices["SBER"] == 260.0 and prices["GAZP"] == 180.0
    finally:
        second.terminate()
        second.wait(10)
