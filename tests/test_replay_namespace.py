"""A recorded day replayed at N× into a namespace of its own, over the same API: the engine's
clock runs from the file's first tick, so the grid and the session are the recorded day's."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from conftest import free_port, start_service

from streaming.methodology.definition import load_definition
from streaming.methodology.family import FamilyCalculator, Group

START = datetime(2026, 11, 20, 7, 0, 5, tzinfo=UTC)  # Friday 10:00:05 Moscow


def write_day(path: Path) -> dict[str, float]:
    """Two minutes of trades in three lines; returns the last price of each."""
    last = {"SBER": 245.0, "GAZP": 170.0, "LKOH": 5300.0}
    lines = []
    for n in range(240):
        secid = ("SBER", "GAZP", "LKOH")[n % 3]
        last[secid] = round(last[secid] * (1.0005 if n % 2 else 0.9997), 2)
        moment = START + timedelta(seconds=n * 0.5)
        lines.append(json.dumps({"secid": secid, "price": last[secid], "time": moment.isoformat()}))
    path.write_text("\n".join(lines) + "\n")
    return last


def test_replay_at_60x_into_its_own_namespace(redis_url: str, tmp_path: Path) -> None:
    day = tmp_path / "day.jsonl"
    last = write_day(day)
    port = free_port()
    service = start_service(
        port, "--redis-url", redis_url, "--namespace", "replay-test", "--feed", f"replay:{day}",
        "--replay-speed", "60", "--session", "moex", "--definition",
        str(load_definition().source), "--log-level", "warning",
        token="replay-test-token-0123456789",
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{base}/v1/indices/IMOEX", timeout=2).json()
                # 07:03:00 recorded is a minute after the last trade: everything is applied.
                if body.get("time", "") >= "2026-11-20T07:03:00.000Z":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        assert body is not None and body["time"] >= "2026-11-20T07:03:00.000Z", body
        definition = load_definition()
        calc = FamilyCalculator([Group("IMOEX", definition.base)], last)
        spec = definition.spec("IMOEX")
        assert body["precise_value"] == pytest.approx(
            spec.value(float(calc.capitalization[0]), None), rel=1e-12
        )
        history = httpx.get(f"{base}/v1/indices/IMOEX/history", params={"limit": 1000}).json()
        times = [v["time"] for v in history["values"]]
        # The recorded session's grid: from 10:00:15 Moscow (07:00:15 UTC) every 15 s.
        assert times[0] == "2026-11-20T07:00:15.000Z"
        assert all(t.endswith(("00.000Z", "15.000Z", "30.000Z", "45.000Z")) for t in times)
        keys = redis.Redis.from_url(redis_url).keys("*")
        assert keys and all(k.startswith(b"replay-test:") for k in keys)
    finally:
        service.terminate()
        service.wait(10)
