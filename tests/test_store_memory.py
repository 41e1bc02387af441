"""The Store contract, run against both implementations, and the memory store's own behaviour."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from datetime import timedelta

from conftest import GRID_START, GRID_STEP, StoreFactory, make_publication, make_state

from streaming.publication import Publication
from streaming.store.base import Store
from streaming.store.memory import MemoryStore, Subscription
from streaming.store.redis import RedisStore
from streaming.store.select import make_store

RECEIVE_TIMEOUT = 5.0  # seconds: a guard against hanging, not a measurement


async def receive(feed: AsyncIterator[Publication], count: int) -> list[Publication]:
    """The next `count` publications of a feed."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        return [await anext(feed) for _ in range(count)]


# --- the shared contract ---------------------------------------------------------------------


async def test_fresh_store_is_empty(store: Store) -> None:
    assert await store.load_state() is None
    assert await store.latest() == {}
    assert await store.history("IMOEX", None, None, 100) == []
    assert await store.ping() is True


async def test_state_round_trips_exactly(store: Store) -> None:
    state = make_state(7, review="2024-03", weights={"SBER": 0.15})
    await store.commit(state, [make_publication(7)])
    loaded = await store.load_state()
    assert loaded == state
    assert loaded is not None and loaded.prices["GAZP"] == 0.1 + 0.2


async def test_saved_state_is_a_snapshot(store: Store) -> None:
    state = make_state(1)
    await store.commit(state, [])
    state.prices["SBER"] = 1.0  # the engine keeps mutating its own object
    loaded = await store.load_state()
    assert loaded is not None and loaded.prices["SBER"] == 281.37


async def test_latest_is_the_last_committed_value_per_code(store: Store) -> None:
    await store.commit(make_state(0), [make_publication(0), make_publication(0, "RTSI")])
    await store.commit(make_state(1), [make_publication(1)])
    await store.commit(make_state(2), [make_publication(2)])
    latest = await store.latest()
    assert latest == {"IMOEX": make_publication(2), "RTSI": make_publication(0, "RTSI")}
    assert latest["IMOEX"].value == 3002 + 1 / 3  # full precision is kept


async def test_commit_replaces_the_state(store: Store) -> None:
    await store.commit(make_state(1), [make_publication(1)])
    await store.commit(make_state(2), [make_publication(2)])
    assert await store.load_state() == make_state(2)


async def test_history_since_until_limit(store: Store) -> None:
    for seq in range(10):
        await store.commit(make_state(seq), [make_publication(seq), make_publication(seq, "RTSI")])

    def seqs(values: list[Publication]) -> list[int]:
        assert all(value.code == "IMOEX" for value in values)
        return [value.seq for value in values]

    at = [GRID_START + seq * GRID_STEP for seq in range(10)]
    assert seqs(await store.history("IMOEX", None, None, 100)) == list(range(10))
    assert seqs(await store.history("IMOEX", at[3], None, 100)) == list(range(3, 10))
    assert seqs(await store.history("IMOEX", None, at[4], 100)) == list(range(5))
    assert seqs(await store.history("IMOEX", at[2], at[5], 100)) == [2, 3, 4, 5]
    between = at[2] + timedelta(seconds=1)
    assert seqs(await store.history("IMOEX", between, at[5], 100)) == [3, 4, 5]
    # Truncation keeps the newest values, still in ascending time order.
    assert seqs(await store.history("IMOEX", None, None, 3)) == [7, 8, 9]
    assert seqs(await store.history("IMOEX", at[1], at[6], 2)) == [5, 6]
    assert await store.history("IMOEX", None, None, 0) == []
    assert await store.history("IMOEX", at[6], at[2], 100) == []
    assert await store.history("UNKNOWN", None, None, 100) == []
    assert await store.history("IMOEX", None, None, 1) == [make_publication(9)]


async def test_history_is_trimmed_to_the_limit(store_factory: StoreFactory) -> None:
    store = await store_factory(history_limit=4)
    for seq in range(9):
        await store.commit(make_state(seq), [make_publication(seq)])
    values = await store.history("IMOEX", None, None, 100)
    assert [value.seq for value in values] == [5, 6, 7, 8]


async def test_republished_instant_replaces_the_value(store: Store) -> None:
    for seq in range(3):
        await store.commit(make_state(seq), [make_publication(seq)])
    again = make_publication(2, value=4000.0)
    await store.commit(make_state(2), [again])
    values = await store.history("IMOEX", None, None, 100)
    assert [value.seq for value in values] == [0, 1, 2]
    assert values[-1] == again
    assert (await store.latest())["IMOEX"] == again


async def test_two_subscribers_receive_commits_in_order(store: Store) -> None:
    first = store.subscribe()
    second = store.subscribe()
    expected: list[Publication] = []
    for seq in range(5):
        batch = [make_publication(seq), make_publication(seq, "RTSI")]
        expected.extend(batch)
        await store.commit(make_state(seq), batch)
    assert await receive(first, len(expected)) == expected
    assert await receive(second, len(expected)) == expected


async def test_subscription_sees_only_later_commits(store: Store) -> None:
    await store.commit(make_state(0), [make_publication(0)])
    feed = store.subscribe()
    await store.commit(make_state(1), [make_publication(1)])
    assert await receive(feed, 1) == [make_publication(1)]


async def test_close_ends_subscriptions(store_factory: StoreFactory) -> None:
    store = await store_factory()
    feed = store.subscribe()

    async def drain() -> list[Publication]:
        return [publication async for publication in feed]

    waiting = asyncio.create_task(drain())
    await asyncio.sleep(0)  # the consumer is now blocked waiting for a publication
    await store.close()
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        assert await waiting == []


async def test_cancelled_consumer_ends_cleanly(store: Store) -> None:
    received: list[Publication] = []

    async def consume() -> None:
        async for publication in store.subscribe():
            received.append(publication)

    consumer = asyncio.create_task(consume())
    other = store.subscribe()
    await asyncio.sleep(0)  # let the consumer subscribe
    await store.commit(make_state(0), [make_publication(0)])
    assert await receive(other, 1) == [make_publication(0)]
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        while not received:
            await asyncio.sleep(0.01)
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert consumer.cancelled()
    await store.commit(make_state(1), [make_publication(1)])
    assert await receive(other, 1) == [make_publication(1)]
    assert received == [make_publication(0)]


# --- the memory store ------------------------------------------------------------------------


async def test_slow_subscriber_loses_the_oldest() -> None:
    store = MemoryStore(subscriber_queue=3)
    slow = store.subscribe()
    assert isinstance(slow, Subscription)
    for seq in range(1000):  # the publisher never waits for the slow consumer
        await store.commit(make_state(seq), [make_publication(seq)])
    assert [value.seq for value in await receive(slow, 3)] == [997, 998, 999]
    assert slow.dropped == 997
    await store.commit(make_state(1000), [make_publication(1000)])
    assert await receive(slow, 1) == [make_publication(1000)]
    await store.close()


async def test_buffered_values_are_delivered_before_the_end() -> None:
    store = MemoryStore()
    feed = store.subscribe()
    await store.commit(make_state(0), [make_publication(0), make_publication(1)])
    await store.close()
    assert [value.seq async for value in feed] == [0, 1]


async def test_forgotten_subscriptions_are_released() -> None:
    store = MemoryStore()
    kept = store.subscribe()
    store.subscribe()  # dropped at once by its consumer
    closed = store.subscribe()
    assert isinstance(closed, Subscription)
    await closed.aclose()
    gc.collect()
    assert store.subscriber_count == 1
    await store.commit(make_state(0), [make_publication(0)])
    assert await receive(kept, 1) == [make_publication(0)]
    await store.close()
    assert store.subscriber_count == 0


async def test_empty_commit_saves_state_only() -> None:
    store = MemoryStore()
    feed = store.subscribe()
    await store.commit(make_state(3), [])
    assert await store.load_state() == make_state(3)
    assert await store.latest() == {}
    await store.commit(make_state(4), [make_publication(4)])
    assert await receive(feed, 1) == [make_publication(4)]


def test_make_store_chooses_by_url() -> None:
    memory = make_store(None, "ns", 10)
    assert isinstance(memory, MemoryStore) and memory.history_limit == 10
    assert isinstance(make_store("", "ns", 10), MemoryStore)
    redis_store = make_store("redis://127.0.0.1:1/0", "ticker-test", 25)
    assert isinstance(redis_store, RedisStore)
    assert redis_store.state_key == "ticker-test:state"
    assert redis_store.history_limit == 25
