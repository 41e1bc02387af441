"""The engine against the in-memory store: values, grid, sequence numbers, restart, session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from factories import formula, small_definition

from streaming.engine import Engine
from streaming.methodology.timetable import ExchangeTimetable
from streaming.publication import EngineState, Publication
from streaming.store.memory import MemoryStore
from streaming.ticks import Tick

GRID = datetime(2026, 11, 20, 7, 0, tzinfo=UTC).timestamp()  # Friday 10:00:00 Moscow


def fixed(epoch: float) -> float:
    return epoch


async def test_publication_carries_the_formula_value_and_metadata() -> None:
    store = MemoryStore()
    engine = Engine(small_definition(), store, clock=lambda: GRID - 1)
    moment = datetime.fromtimestamp(GRID, UTC)
    engine.submit([Tick("A", 12.0, moment), Tick("C", 90.0, moment)])
    imoex, rtsi = await engine.publish(GRID)
    want_imoex, want_rtsi = formula({"A": 12.0, "C": 90.0})  # MC = 6000+2000+1800 = 9800
    assert imoex.value == pytest.approx(want_imoex, rel=1e-12)
    assert imoex.value == pytest.approx(9800 / 3)
    assert rtsi.value == pytest.approx(want_rtsi, rel=1e-12)
    assert (imoex.seq, rtsi.seq) == (1, 1)
    assert imoex.previous_close == 3000.0 and rtsi.previous_close == 200.0
    assert imoex.message()["value"] == round(9800 / 3, 2)
    assert imoex.message()["time"] == "2026-11-20T07:00:00.000Z"
    assert rtsi.fx_rate == 90.0 and imoex.fx_rate is None
    latest = await store.latest()
    assert latest["IMOEX"] == imoex
    state = await store.load_state()
    assert state is not None and state.prices["A"] == 12.0 and state.seq == {"IMOEX": 1, "RTSI": 1}
    assert state.tick_times["A"] == GRID and "B" not in state.tick_times


async def test_sequence_grows_and_values_hold_without_ticks() -> None:
    engine = Engine(small_definition(), MemoryStore(), clock=lambda: GRID)
    first = await engine.publish(GRID)
    second = await engine.publish(GRID + 1)
    assert [p.seq for p in second] == [2, 2]
    assert [p.value for p in second] == [p.value for p in first]


async def test_restart_continues_sequence_and_prices() -> None:
    store = MemoryStore()
    engine = Engine(small_definition(), store, clock=lambda: GRID)
    engine.submit([Tick("B", 30.0, datetime.fromtimestamp(GRID, UTC))])
    before = await engine.publish(GRID)
    again = Engine(small_definition(), store, clock=lambda: GRID + 5)
    again.restore(await store.load_state() or pytest.fail("no state"))
    after = await again.publish(GRID + 5)
    assert [p.value for p in after] == [p.value for p in before]
    assert [p.seq for p in after] == [2, 2]
    assert [p.previous_close for p in after] == [p.previous_close for p in before]


async def test_next_day_rolls_reference_to_last_prices() -> None:
    store = MemoryStore()
    engine = Engine(small_definition(), store, clock=lambda: GRID)
    engine.submit([Tick("A", 11.0, datetime.fromtimestamp(GRID, UTC))])
    day_one = await engine.publish(GRID)
    next_day = GRID + 86400
    tomorrow = Engine(small_definition(), store, clock=lambda: next_day)
    tomorrow.restore(await store.load_state() or pytest.fail("no state"))
    imoex, _ = await tomorrow.publish(next_day)
    assert imoex.previous_close == pytest.approx(day_one[0].value)
    assert imoex.change == pytest.approx(0.0)
    assert imoex.seq == 2  # sequence numbers never go back, across days too


class FailingStore(MemoryStore):
    """Refuses commits while `failing` is set: stands in for a store that went away."""

    failing = True

    async def commit(
        self,
        state: EngineState,
        publications: Sequence[Publication],
        lease: tuple[str, int] | None = None,
    ) -> None:
        if self.failing:
            raise ConnectionError("store is down")
        await super().commit(state, publications, lease)


async def test_store_outage_keeps_publishing_locally_and_history_catches_up() -> None:
    store = FailingStore()
    engine = Engine(small_definition(), store, clock=lambda: GRID)
    updates = store.subscribe()
    during = await engine.publish(GRID)
    assert [p.seq for p in during] == [1, 1]  # the sequence goes on
    assert engine.stats.commit_failures == 1 and len(engine.backlog) == 2
    async with asyncio.timeout(2):
        delivered = [await anext(aiter(updates)), await anext(aiter(updates))]
    assert [p.seq for p in delivered] == [1, 1]  # subscribers of this process still get it
    assert await store.history("IMOEX", None, None, 10) == []
    store.failing = False
    after = await engine.publish(GRID + 1)
    assert [p.seq for p in after] == [2, 2]
    assert [p.seq for p in await store.history("IMOEX", None, None, 10)] == [1, 2]
    assert not engine.backlog


async def test_grid_loop_publishes_on_whole_seconds() -> None:
    store = MemoryStore()
    engine = Engine(small_definition(cadence=1), store)
    updates = store.subscribe()
    await engine.start()
    try:
        received = []
        async with asyncio.timeout(5):
            async for publication in updates:
                received.append(publication)
                if len(received) == 4:
                    break
    finally:
        await engine.stop()
    times = [p.time.timestamp() for p in received]
    assert all(t == int(t) for t in times)
    assert times[2] - times[0] == 1.0
    assert [p.seq for p in received] == [1, 1, 2, 2]
    assert {p.code for p in received} == {"IMOEX", "RTSI"}


async def test_moex_session_publishes_nothing_on_a_saturday() -> None:
    saturday_noon = datetime(2026, 11, 21, 9, 0, tzinfo=UTC).timestamp()
    shift = time.time() - saturday_noon
    store = MemoryStore()
    engine = Engine(
        small_definition(cadence=1),
        store,
        timetable=ExchangeTimetable(),
        clock=lambda: time.time() - shift,
    )
    await engine.start()
    await asyncio.sleep(2.2)
    await engine.stop()
    assert await store.latest() == {}
    assert engine.status()["session_open"] is False


async def test_a_failing_source_does_not_stop_the_engine() -> None:
    class Broken:
        name = "broken"

        async def run(self, submit: object) -> None:
            raise RuntimeError("feed exploded")

    store = MemoryStore()
    engine = Engine(small_definition(cadence=1), store, sources=[Broken()])
    await engine.start()
    await asyncio.sleep(1.5)
    await engine.stop()
    assert (await store.latest())["IMOEX"].seq >= 1
