"""What the engine and the stores give the feed: status, stale lines, contributions, live
values, and resume by sequence number."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from conftest import make_publication, make_state
from factories import small_definition

from streaming.engine import Engine
from streaming.store.base import Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore
from streaming.ticks import Tick

GRID = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp()


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def test_contributions_by_hand() -> None:
    engine = Engine(small_definition(), MemoryStore(), clock=lambda: GRID)
    engine.submit([Tick("A", 12.0, at(GRID)), Tick("C", 99.0, at(GRID))])
    first = {p.code: p for p in await engine.publish(GRID)}
    imoex = first["IMOEX"].contributions
    assert imoex is not None
    # since the close: A (12-10)·500/3 = 333.33, C (99-100)·20/3 = -6.67; B did not move
    assert imoex["since_close"] == [["A", pytest.approx(1000 / 3)], ["C", pytest.approx(-20 / 3)]]
    assert imoex["since_previous"] == imoex["since_close"]  # nothing published before
    engine.submit([Tick("B", 21.0, at(GRID + 1))])
    second = {p.code: p for p in await engine.publish(GRID + 1)}
    assert second["IMOEX"].contributions == {
        "since_previous": [["B", pytest.approx(100 / 3)]],
        "since_close": [
            ["A", pytest.approx(1000 / 3)],
            ["B", pytest.approx(100 / 3)],
            ["C", pytest.approx(-20 / 3)],
        ],
    }
    rtsi = second["RTSI"].contributions
    assert rtsi is not None
    assert rtsi["since_previous"] == [["B", pytest.approx(100 / 45)]]  # (21-20)·100 / (90·0.5)
    # FX did not move: the whole RTSI move is equity
    assert rtsi["fx_part"]["since_previous"] == pytest.approx(0.0, abs=1e-9)
    assert "contributions" not in second["IMOEX"].message()
    assert second["IMOEX"].message(contributions=True)["contributions"] is not None


async def test_status_and_stale_lines() -> None:
    clock = [GRID]
    engine = Engine(
        small_definition(),
        MemoryStore(),
        clock=lambda: clock[0],
        feed_stale_seconds=60,
        line_stale_seconds=300,
    )
    quiet = {p.code: p for p in await engine.publish(GRID)}
    assert quiet["IMOEX"].status == "stale"  # no tick has come at all
    assert quiet["IMOEX"].stale_lines == ("A", "B", "C")
    engine.submit([Tick("A", 10.5, at(GRID))])
    clock[0] = GRID + 30
    live = {p.code: p for p in await engine.publish(GRID + 30)}
    assert live["IMOEX"].status == "live" and live["IMOEX"].stale_lines == ("B", "C")
    clock[0] = GRID + 400
    later = {p.code: p for p in await engine.publish(GRID + 400)}
    assert later["IMOEX"].status == "stale" and later["IMOEX"].stale_lines == ("A", "B", "C")
    assert engine.status()["feed"] == "stale"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore(history_limit=5)
    else:
        made = RedisStore(request.getfixturevalue("redis_url"), history_limit=5)
    await made.open()
    yield made
    await made.close()


@pytest.mark.system
async def test_replay_after_and_the_gap(store: Store) -> None:
    for seq in range(1, 9):  # 8 published, 5 kept: seq 4..8
        await store.commit(make_state(), [make_publication(seq, "IMOEX", time=at(GRID + seq))])
    assert [p.seq for p in await store.replay_after("IMOEX", 5, 100) or []] == [6, 7, 8]
    assert [p.seq for p in await store.replay_after("IMOEX", 3, 100) or []] == [4, 5, 6, 7, 8]
    assert [p.seq for p in await store.replay_after("IMOEX", 5, 2) or []] == [6, 7]
    assert await store.replay_after("IMOEX", 8, 100) == []
    assert await store.replay_after("IMOEX", 2, 100) is None  # seq 3 is gone: a gap
    assert await store.replay_after("RTSI", 0, 100) == []


@pytest.mark.system
async def test_live_channel(store: Store) -> None:
    feed = store.subscribe_live()
    await asyncio.sleep(0.05)
    await store.announce_live(json.dumps({"type": "live", "values": {"IMOEX": 1.0}}))
    async with asyncio.timeout(5):
        message = await anext(aiter(feed))
    assert json.loads(message)["values"] == {"IMOEX": 1.0}


async def test_engine_announces_live_values_when_ticks_move_them() -> None:
    store = MemoryStore()
    engine = Engine(small_definition(cadence=60), store, live_interval=0.05)
    feed = store.subscribe_live()
    await engine.start()
    try:
        engine.submit([Tick("A", 11.0, datetime.now(UTC))])
        async with asyncio.timeout(5):
            message = json.loads(await anext(aiter(feed)))
        assert message["type"] == "live"
        assert message["values"]["IMOEX"] == round((11 * 500 + 2000 + 2000) / 3, 2)
    finally:
        await engine.stop()
