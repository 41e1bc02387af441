"""The tick stream bus on a real Redis: feed handlers XADD ticks, the leading engine reads them in
the consumer group `engines`, acknowledges what it applied, recovers what a crashed leader read
but never committed, takes back what an old leader read after losing the lead, reports its lag,
and records every refused tick with its field and reason."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from serving import api_definition, wait_until

from streaming.engine import Engine
from streaming.errors import StoreUnavailable
from streaming.store.redis import TICK_GROUP, RedisStore

NAMESPACE = "stream-test"
TICKS = f"{NAMESPACE}:ticks"
REJECTS = f"{NAMESPACE}:ticks:rejected"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def engines(redis_url: str) -> AsyncIterator[Callable[[], Any]]:
    """Make engines on their own Redis stores (as separate processes would), stopped at the end."""
    made: list[tuple[Engine, RedisStore]] = []

    async def make() -> Engine:
        store = RedisStore(redis_url, NAMESPACE)
        await store.open()
        engine = Engine(api_definition(), store, grid=False, live_interval=None, ingest_stream=True)
        made.append((engine, store))
        await engine.start()
        return engine

    yield make
    for engine, store in reversed(made):
        await engine.stop()
        await store.close()


def price(engine: Engine, secid: str) -> float:
    calculator = engine.calculator
    return float(calculator.group_prices(0)[calculator.position[secid]])


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    async def condition() -> bool | None:
        return True if check() else None

    await wait_until(condition, timeout)


async def xadd_trade(redis: Redis, secid: str, price_: float) -> str:
    entry: str = await redis.xadd(TICKS, {"secid": secid, "price": str(price_)})
    return entry


async def test_ticks_xadded_by_a_feed_handler_are_applied_and_acknowledged(
    engines: Callable[[], Any], redis: Redis
) -> None:
    engine = await engines()
    for step in range(1, 51):
        await xadd_trade(redis, "AAAA", 100.0 + step)
    await redis.xadd(TICKS, {"ticks": '[{"secid": "BBBB", "price": 55.5}]'})
    await until(lambda: price(engine, "BBBB") == 55.5)
    assert price(engine, "AAAA") == 150.0
    assert engine.stats.ticks_applied == 51
    last = (await redis.xrevrange(TICKS, count=1))[0][0]
    assert engine.stream_id == last
    # Acknowledged: nothing pending once the next read went out; lag reported as none.
    await until(lambda: (engine.status()["stream"] or {}).get("pending") == 0)
    stream = engine.status()["stream"]
    assert stream["undelivered"] == 0 and stream["seconds_behind"] == 0.0
    assert stream["length"] == 51 and stream["ticks_read"] == 51
    groups = await redis.xinfo_groups(TICKS)
    assert [(g["name"], g["pending"]) for g in groups] == [(TICK_GROUP, 0)]


async def test_a_bad_tick_is_refused_and_recorded_and_its_neighbours_applied(
    engines: Callable[[], Any], redis: Redis
) -> None:
    engine = await engines()
    await xadd_trade(redis, "AAAA", 101.0)
    bad = await redis.xadd(TICKS, {"secid": "AAAA", "price": "-3"})
    batch = await redis.xadd(
        TICKS,
        {"ticks": '[{"secid": "BBBB", "price": 51}, {"secid": "ZZZZ", "price": 1}, '
         '{"secid": "CCCC", "price": 401}]'},
    )  # fmt: skip
    await xadd_trade(redis, "CCCP", 201.0)
    await until(lambda: price(engine, "CCCP") == 201.0)
    assert [price(engine, s) for s in ("AAAA", "BBBB", "CCCC")] == [101.0, 51.0, 401.0]
    rejected = [fields for _, fields in await redis.xrange(REJECTS)]
    assert rejected == [
        {"entry": bad, "field": "price", "reason": "must be positive, got -3.0"},
        {"entry": batch, "position": "1", "field": "secid",
         "reason": "unknown secid 'ZZZZ': not a constituent"},
    ]  # fmt: skip
    assert engine.status()["stream"]["rejected"] == {"price": 1, "secid": 1}


async def test_a_new_leader_applies_what_the_crashed_one_read_but_never_committed(
    engines: Callable[[], Any], redis: Redis
) -> None:
    first = await engines()
    await xadd_trade(redis, "AAAA", 110.0)
    await until(lambda: price(first, "AAAA") == 110.0)
    await first.publish(first.clock())  # committed: the state includes AAAA at 110
    committed = first.stream_id
    # Applied and acknowledged, never committed: the leader dies before its next publication.
    await xadd_trade(redis, "AAAA", 120.0)
    await xadd_trade(redis, "BBBB", 60.0)
    await until(lambda: price(first, "BBBB") == 60.0)
    await first.stop()
    # Read by a leader that died before applying it: pending under its name.
    await xadd_trade(redis, "CCCC", 420.0)
    taken = await redis.xreadgroup(TICK_GROUP, "dead-engine", {TICKS: ">"}, count=10)
    assert len(taken[0][1]) == 1

    second = await engines()
    assert second.stream_reader is not None
    await until(lambda: price(second, "CCCC") == 420.0)
    assert (price(second, "AAAA"), price(second, "BBBB")) == (120.0, 60.0)
    assert second.stats.ticks_applied == 3  # from the committed point on, each once
    assert committed != second.stream_id
    readers = {c["name"]: c["pending"] for c in await redis.xinfo_consumers(TICKS, TICK_GROUP)}
    assert "dead-engine" not in readers
    await until(lambda: (second.status()["stream"] or {}).get("pending") == 0)


async def test_entries_an_old_leader_reads_after_losing_the_lead_are_taken_back(
    engines: Callable[[], Any], redis: Redis
) -> None:
    engine = await engines()
    await xadd_trade(redis, "AAAA", 101.0)
    await until(lambda: price(engine, "AAAA") == 101.0)
    # An engine paused past its lease wakes up and reads with its old name.
    await xadd_trade(redis, "BBBB", 52.0)
    await xadd_trade(redis, "CCCC", 402.0)
    stolen: list[Any] = []
    while not stolen:  # the leader may read one of them first
        stolen = await redis.xreadgroup(TICK_GROUP, "old-leader", {TICKS: ">"}, count=10)
        if price(engine, "CCCC") == 402.0:
            break
    await until(lambda: price(engine, "CCCC") == 402.0 and price(engine, "BBBB") == 52.0)
    await xadd_trade(redis, "CCCP", 202.0)
    await until(lambda: price(engine, "CCCP") == 202.0)
    readers = {c["name"] for c in await redis.xinfo_consumers(TICKS, TICK_GROUP)}
    assert readers <= {engine.stream_reader.consumer}  # type: ignore[union-attr]
    assert engine.stats.ticks_applied == 4


async def test_lag_is_reported_while_entries_wait(
    engines: Callable[[], Any], redis: Redis, redis_url: str
) -> None:
    for step in range(20):
        await xadd_trade(redis, "AAAA", 100.0 + step)
    store = RedisStore(redis_url, NAMESPACE)
    await store.open()
    try:
        assert await store.tick_stream_lag() is None  # no engine joined yet
        await store.join_tick_stream("observer", "0-0")
        lag = await store.tick_stream_lag()
        assert lag is not None
        assert (lag.length, lag.undelivered, lag.pending) == (20, 20, 0)
        await store.next_tick_entries("observer", 5, None)
        lag = await store.tick_stream_lag()
        assert lag is not None and (lag.undelivered, lag.pending) == (15, 5)
    finally:
        await store.close()
    engine = await engines()  # joins after its committed state (none): takes all 20 over
    await until(lambda: price(engine, "AAAA") == 119.0)
    await until(lambda: (engine.status()["stream"] or {}).get("undelivered") == 0)
    assert engine.stats.ticks_applied == 20


async def test_entries_trimmed_before_they_were_applied_are_reported(
    engines: Callable[[], Any], redis: Redis
) -> None:
    first = await engines()
    await xadd_trade(redis, "AAAA", 101.0)
    await until(lambda: price(first, "AAAA") == 101.0)
    await first.publish(first.clock())
    await first.stop()
    for step in range(5):
        await xadd_trade(redis, "BBBB", 50.0 + step)
    await redis.xtrim(TICKS, maxlen=2, approximate=False)  # three never-applied entries gone
    second = await engines()
    await until(lambda: price(second, "BBBB") == 54.0)
    assert "were trimmed unapplied" in second.status()["stream"]["warning"]
    assert second.stats.ticks_applied == 2


async def test_a_deleted_stream_is_joined_again(engines: Callable[[], Any], redis: Redis) -> None:
    engine = await engines()
    await xadd_trade(redis, "AAAA", 101.0)
    await until(lambda: price(engine, "AAAA") == 101.0)
    await redis.delete(TICKS)
    await asyncio.sleep(1.5)  # the blocked read comes back and finds the group gone
    await xadd_trade(redis, "BBBB", 51.0)
    await until(lambda: price(engine, "BBBB") == 51.0, timeout=15)


async def test_the_producer_example_feeds_the_engine(
    engines: Callable[[], Any], redis_url: str
) -> None:
    engine = await engines()
    command = [
        sys.executable, str(ROOT / "examples" / "stream_producer.py"),
        "--redis-url", redis_url, "--namespace", NAMESPACE,
        "--secid", "AAAA", "--price", "105.5", "--count", "3",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    await until(lambda: engine.stats.ticks_applied == 3)
    assert price(engine, "AAAA") == 105.5


class LosesOneReply(RedisStore):
    """A Redis store whose connection breaks once right after Redis handed entries over: the
    entries are delivered (pending for the reader) but the reply never arrives."""

    lost = 0

    async def next_tick_entries(self, *args: Any, **kwargs: Any) -> Any:
        entries = await super().next_tick_entries(*args, **kwargs)
        if entries and not self.lost:
            self.lost = len(entries)
            raise StoreUnavailable("connection reset while reading the reply")
        return entries


async def test_entries_whose_reply_was_lost_are_read_again_once(
    redis_url: str, redis: Redis
) -> None:
    store = LosesOneReply(redis_url, NAMESPACE)
    await store.open()
    engine = Engine(api_definition(), store, grid=False, live_interval=None, ingest_stream=True)
    await engine.start()
    try:
        for step in range(1, 4):
            await xadd_trade(redis, "AAAA", 100.0 + step)
        await until(lambda: price(engine, "AAAA") == 103.0)
        await xadd_trade(redis, "BBBB", 51.0)
        await until(lambda: price(engine, "BBBB") == 51.0)
        assert store.lost >= 1
        assert engine.stats.ticks_applied == 4  # each once
        await until(lambda: (engine.status()["stream"] or {}).get("pending") == 0)
    finally:
        await engine.stop()
        await store.close()
