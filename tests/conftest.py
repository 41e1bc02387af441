"""Shared fixtures: a private redis-server for the test session, flushed for each test.

`start_redis` / `stop_redis` / `free_port` are plain functions so that tests can run a server of
their own on a port they control (restarts, outages) without touching the shared one.

The two lanes: a test that starts a process or a server, or talks over a socket (Redis, uvicorn,
nginx, a browser), is marked `system`; `pytest -m "not system"` runs the rest. The marking is
enforced: a test without the mark that starts a process, listens or connects fails and says so.
Tests that ask for the Redis fixtures are marked by this file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from streaming.publication import EngineState, Publication
from streaming.store.base import DEFAULT_HISTORY_LIMIT, Store
from streaming.store.memory import DEFAULT_SUBSCRIBER_QUEUE, MemoryStore
from streaming.store.redis import RedisStore

REDIS_START_TIMEOUT = 10.0  # seconds for a fresh redis-server to answer PING

SYSTEM = "system"
REDIS_FIXTURES = frozenset({"redis_server", "redis_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that ask for the Redis fixtures talk to a real server: mark them `system`."""
    for item in items:
        if REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(SYSTEM)


class UnmarkedSystemTest(AssertionError):
    """A test outside the `system` lane started a process, listened or connected."""


@pytest.fixture(autouse=True)
def _fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the `system` lane, starting a process, listening or connecting is an error."""
    if request.node.get_closest_marker(SYSTEM) is not None:
        return

    def refuse(what: str) -> Callable[..., object]:
        def refused(*args: object, **kwargs: object) -> object:
            raise UnmarkedSystemTest(
                f"{request.node.nodeid} {what}: mark it @pytest.mark.system "
                "(the fast lane runs no processes, servers or sockets)"
            )

        return refused

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("starts a process"))
    monkeypatch.setattr(socket.socket, "listen", refuse("listens on a socket"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connects a socket"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connects a socket"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_url_for(port: int, db: int = 0) -> str:
    """The URL of a local redis-server on `port`."""
    return f"redis://127.0.0.1:{port}/{db}"


def start_redis(
    port: int, directory: Path, timeout: float = REDIS_START_TIMEOUT
) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:`port` without persistence and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH: install it (Debian package redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"redis-{port}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        while True:
            if process.poll() is not None:
                output = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"redis-server on port {port} exited with code {process.returncode}:\n{output}"
                )
            try:
                if client.ping():
                    return process
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                stop_redis(process)
                raise RuntimeError(
                    f"redis-server on port {port} did not answer PING in {timeout} s"
                )
            time.sleep(0.05)
    finally:
        client.close()


def stop_redis(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a redis-server started by start_redis and wait for it to exit (killing it if slow)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server private to this test session; yields its URL."""
    port = free_port()
    try:
        process = start_redis(port, tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(f"cannot start the test Redis: {exc}", pytrace=False)
    try:
        yield redis_url_for(port)
    finally:
        stop_redis(process)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server


GRID_START = datetime(2024, 3, 1, 7, 0, tzinfo=UTC)  # 10:00 Moscow time
GRID_STEP = timedelta(seconds=15)


def make_publication(
    seq: int, code: str = "IMOEX", value: float | None = None, time: datetime | None = None
) -> Publication:
    """A publication of `code` at grid point `seq` (15 s apart from GRID_START) for store tests."""
    usd = code.startswith("RTS")
    return Publication(
        code=code,
        currency="USD" if usd else "RUB",
        value=value if value is not None else 3000.0 + seq + 1 / 3,
        time=time if time is not None else GRID_START + seq * GRID_STEP,
        seq=seq,
        previous_close=2990.123456789,
        capitalization=4.5e13 + seq,
        divisor=1.5e10 / 7,
        fx_rate=91.2345678 if usd else None,
    )


def make_state(last_seq: int = 0, **extra: object) -> EngineState:
    """An engine state with awkward floats and every field filled, for round-trip tests."""
    return EngineState(
        trading_day="2024-03-01",
        prices={"SBER": 281.37, "GAZP": 0.1 + 0.2, "LKOH": 7123.5},
        reference_prices={"SBER": 280.0, "GAZP": 163.01, "LKOH": 7100.0},
        tick_times={"SBER": 1709276400.123, "GAZP": 1709276399.5},
        seq={"IMOEX": last_seq, "RTSI": last_seq},
        previous_close={"IMOEX": 3200.5, "RTSI": 1100.25},
        divisors={"IMOEX": 1.5e10 / 7, "RTSI": 1.1e9 / 3},
        fx_rate=91.2345678,
        last_grid=(GRID_START + last_seq * GRID_STEP).timestamp(),
        extra=dict(extra),
    )


StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.system)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which Store implementation a shared behavioural test runs against."""
    kind: str = request.param
    return kind


@pytest.fixture
async def store_factory(
    store_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[StoreFactory]:
    """Opens stores of the kind under test (all on one flushed Redis), closing them afterwards."""
    url: str | None = request.getfixturevalue("redis_url") if store_kind == "redis" else None
    opened: list[Store] = []

    async def make(
        history_limit: int = DEFAULT_HISTORY_LIMIT, subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    ) -> Store:
        store: Store
        if url is None:
            store = MemoryStore(history_limit, subscriber_queue)
        else:
            store = RedisStore(url, history_limit=history_limit, subscriber_queue=subscriber_queue)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    """An opened, empty store of the kind under test."""
    return await store_factory()


def start_service(port: int, *flags: str, token: str) -> subprocess.Popen[bytes]:
    """`index-ticker serve` as a real process on 127.0.0.1:`port` with the given flags and ingest
    token, its output discarded; the caller stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--port", str(port), *flags],
        env={**os.environ, "INDEX_TICKER_INGEST_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
