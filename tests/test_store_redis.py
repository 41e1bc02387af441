"""The Redis store's own behaviour: key layout, atomic commits, restarts, outages, bad messages."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import (
    GRID_START,
    free_port,
    make_publication,
    make_state,
    redis_url_for,
    start_redis,
    stop_redis,
)

from streaming.errors import ConfigError, StoreUnavailable
from streaming.publication import EngineState, Publication
from streaming.store.redis import RedisStore, redact_url

WAIT_TIMEOUT = 15.0  # seconds: a guard against hanging, not a measurement


async def receive(feed: AsyncIterator[Publication], count: int) -> list[Publication]:
    """The next `count` publications of a feed."""
    async with asyncio.timeout(WAIT_TIMEOUT):
        return [await anext(feed) for _ in range(count)]


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds, failing after WAIT_TIMEOUT seconds."""
    async with asyncio.timeout(WAIT_TIMEOUT):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    opened = RedisStore(redis_url, namespace="test-ns", history_limit=50)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_key_layout(store: RedisStore, raw: redis.Redis) -> None:
    state = make_state(4)
    first, second = make_publication(4), make_publication(4, "RTSI")
    await store.commit(state, [first, second])
    saved = raw.get("test-ns:state")
    assert saved is not None and EngineState.loads(saved) == state
    assert raw.hgetall("test-ns:latest") == {
        b"IMOEX": first.record().encode(),
        b"RTSI": second.record().encode(),
    }
    assert raw.zrange("test-ns:history:IMOEX", 0, -1, withscores=True) == [
        (first.record().encode(), first.time.timestamp())
    ]
    assert store.channel == "test-ns:publications"
    assert sorted(raw.keys("*")) == [
        b"test-ns:history:IMOEX",
        b"test-ns:history:RTSI",
        b"test-ns:latest",
        b"test-ns:state",
    ]


async def test_commit_is_one_script_call(store: RedisStore, raw: redis.Redis) -> None:
    batch = [make_publication(1), make_publication(1, "RTSI")]
    await store.commit(make_state(1), batch)  # the first one loads the script
    raw.config_resetstat()
    await store.commit(make_state(2), [make_publication(2), make_publication(2, "RTSI")])
    stats = raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1  # one command, one round trip, atomic
    assert "cmdstat_multi" not in stats and "cmdstat_get" not in stats
    assert stats["cmdstat_publish"]["calls"] == 2
    assert stats["cmdstat_set"]["calls"] == 1
    assert stats["cmdstat_zadd"]["calls"] == 2


async def test_commit_reloads_its_script_after_redis_forgot_it(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A restarted Redis has no scripts: the next commit loads it again and writes."""
    await store.commit(make_state(1), [make_publication(1)])
    raw.script_flush()
    await store.commit(make_state(2), [make_publication(2)])
    assert await store.latest() == {"IMOEX": make_publication(2)}
    assert await store.load_state() == make_state(2)


async def test_a_grid_instant_published_again_replaces_its_history_value(
    store: RedisStore, raw: redis.Redis
) -> None:
    first = make_publication(3)
    await store.commit(make_state(3), [first])
    again = dataclasses.replace(first, value=first.value + 1)
    await store.commit(make_state(3), [again])
    assert raw.zrange("test-ns:history:IMOEX", 0, -1) == [again.record().encode()]


async def test_namespaces_are_separate(redis_url: str) -> None:
    one = RedisStore(redis_url, namespace="one")
    two = RedisStore(redis_url, namespace="two")
    await one.open()
    await two.open()
    try:
        feed = two.subscribe()
        await one.commit(make_state(1), [make_publication(1)])
        await two.commit(make_state(2), [make_publication(2, "RTSI")])
        assert await one.load_state() == make_state(1)
        assert await two.latest() == {"RTSI": make_publication(2, "RTSI")}
        assert await two.history("IMOEX", None, None, 10) == []
        assert await receive(feed, 1) == [make_publication(2, "RTSI")]
    finally:
        await one.close()
        await two.close()


async def test_a_restarted_process_sees_the_same_data(redis_url: str) -> None:
    before = RedisStore(redis_url)
    await before.open()
    for seq in range(3):
        await before.commit(make_state(seq), [make_publication(seq), make_publication(seq, "RTSI")])
    await before.close()

    after = RedisStore(redis_url)
    await after.open()
    try:
        assert await after.load_state() == make_state(2)
        assert await after.latest() == {
            "IMOEX": make_publication(2),
            "RTSI": make_publication(2, "RTSI"),
        }
        assert await after.history("RTSI", GRID_START, None, 10) == [
            make_publication(seq, "RTSI") for seq in range(3)
        ]
    finally:
        await after.close()


async def test_malformed_messages_are_skipped(store: RedisStore, raw: redis.Redis) -> None:
    feed = store.subscribe()
    good = make_publication(1)
    garbage = [
        b"not json at all",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"code": "IMOEX"}',
        good.record().replace('"seq":1', '"seq":"one"').encode(),
        good.record().replace(f'"value":{good.value!r}', '"value":"high"').encode(),
        good.record().replace('"time":"', '"time":"yesterday').encode(),
        good.record().replace('"seq":1', '"seq":1,"extra":2').encode(),
    ]
    for message in garbage:
        assert raw.publish(store.channel, message) == 1
    await store.commit(make_state(1), [good])
    assert await receive(feed, 1) == [good]
    assert store.listening


async def test_unreadable_latest_entries_are_left_out(store: RedisStore, raw: redis.Redis) -> None:
    await store.commit(make_state(1), [make_publication(1)])
    raw.hset("test-ns:latest", "BROKEN", "{")
    raw.zadd("test-ns:history:IMOEX", {"{": GRID_START.timestamp() - 1})
    assert await store.latest() == {"IMOEX": make_publication(1)}
    assert await store.history("IMOEX", None, None, 10) == [make_publication(1)]


@pytest.mark.system
async def test_open_fails_clearly_when_nothing_listens() -> None:
    port = free_port()
    store = RedisStore(f"redis://:s3cret@127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message
    assert await store.ping() is False
    await store.close()


async def test_open_names_a_malformed_url() -> None:
    store = RedisStore("http://user:pw@127.0.0.1:1/0")
    with pytest.raises(ConfigError) as caught:
        await store.open()
    assert caught.value.key == "redis_url"
    assert "pw" not in str(caught.value)


async def test_not_opened_store_refuses_reads() -> None:
    store = RedisStore(redis_url_for(free_port()))
    with pytest.raises(RuntimeError, match="not open"):
        await store.latest()


def test_redact_url_hides_passwords() -> None:
    assert redact_url("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://host:6379/0?password=pw&db=1") == (
        "redis://host:6379/0?password=%2A%2A%2A&db=1"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.system
async def test_subscription_survives_a_redis_restart(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path)
    store = RedisStore(redis_url_for(port))
    try:
        await store.open()
        feed = store.subscribe()
        await store.commit(make_state(0), [make_publication(0)])
        assert await receive(feed, 1) == [make_publication(0)]

        stop_redis(server)
        await eventually(lambda: not store.listening)
        assert await store.ping() is False
        with pytest.raises(StoreUnavailable):
            await store.commit(make_state(1), [make_publication(1)])

        server = start_redis(port, tmp_path)
        await eventually(lambda: store.listening)
        assert await store.ping() is True
        assert await store.load_state() is None  # the server keeps nothing on disk
        await store.commit(make_state(2), [make_publication(2)])
        assert await receive(feed, 1) == [make_publication(2)]
    finally:
        await store.close()
        stop_redis(server)
