"""Run the real application under a real uvicorn server for integration tests.

`running(app)` serves an app on a free 127.0.0.1 port from a background thread with its own event
loop, and stops it cleanly. The store and engine given to the app live on that loop: tests reach
them with `await server.call(lambda: engine.publish(...))`, never from the test's own loop.

Also here: a four-line index definition whose values are worked out by hand, and the helpers the
API tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import uvicorn
import websockets.asyncio.client
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection

from app.main import Services, create_app
from app.ws import FeedProtocol
from streaming.engine import Engine
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.definition import IndexDefinition
from streaming.methodology.phases import SessionSpec
from streaming.store.base import Store

T = TypeVar("T")

STARTUP_TIMEOUT = 15.0  # seconds for uvicorn to run the lifespan and listen
SHUTDOWN_TIMEOUT = 15.0  # seconds for uvicorn to close connections and run the lifespan end
WS_MAX_SIZE = 1024 * 1024  # uvicorn's own cap on one incoming WebSocket message, bytes

TOKEN = "s3cret-ingest-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Q·FF·W and reference prices (roubles) of four lines; two lines share an issuer.
# Capitalization at reference: 100 000 + 100 000 + 200 000 + 50 000 = 450 000 roubles.
SHARES = {"AAAA": 1000.0, "BBBB": 2000.0, "CCCC": 500.0, "CCCP": 250.0}
REFERENCE = {"AAAA": 100.0, "BBBB": 50.0, "CCCC": 400.0, "CCCP": 200.0}
ISSUERS = {"AAAA": "Alpha", "BBBB": "Beta", "CCCC": "Gamma", "CCCP": "Gamma"}
RUB_DIVISOR = 4500.0  # IMOEX = MC / 4500: 100.00 at reference
USD_DIVISOR = 5.0  # RTSI = MC / (90 · 5): 1000.00 at reference
FX_RATE = 90.0  # roubles per dollar

API_BASE = IndexBase(
    tuple(
        Constituent(secid, ISSUERS[secid], SHARES[secid], reference_price=REFERENCE[secid])
        for secid in SHARES
    ),
    source="api-test",
)


MOSCOW_SECONDS = 3 * 3600  # the definitions' UTC offset


def grid_start() -> float:
    """A grid instant about an hour ago, but never before the current Moscow day began: an
    engine on the wall clock would otherwise see its publications roll the trading day (its
    reference prices and tick times) when a test runs in the first hour of a Moscow day."""
    now = math.floor(time.time())
    midnight = (now + MOSCOW_SECONDS) // 86_400 * 86_400 - MOSCOW_SECONDS
    return float(max(now - 3600, midnight))


def api_definition(cadence: int = 1) -> IndexDefinition:
    """IMOEX (RUB) and RTSI (USD) over the four-line base."""
    return IndexDefinition(
        name="api-test",
        base=API_BASE,
        indices=(IndexSpec("IMOEX", "RUB", RUB_DIVISOR), IndexSpec("RTSI", "USD", USD_DIVISOR)),
        fx_rate=FX_RATE,
        cadence_seconds=cadence,
        session=SessionSpec(),
    )


def by_hand(prices: dict[str, float]) -> tuple[float, float]:
    """(IMOEX, RTSI) straight from I = Σ P·Q·FF·W / D, reference prices where none is given."""
    mc = sum(SHARES[s] * prices.get(s, REFERENCE[s]) for s in SHARES)
    return mc / RUB_DIVISOR, mc / (FX_RATE * USD_DIVISOR)


def make_engine(store: Store, *, cadence: int = 1, live: bool = False) -> Engine:
    """An engine over the test definition: live publishes every `cadence` s, else only on call."""
    return Engine(api_definition(cadence), store, cadence=cadence, grid=live)


def make_app(
    store: Store, engine: Engine | None, *, token: str = TOKEN, **settings: Any
) -> FastAPI:
    """The application over the test definition."""
    return create_app(
        Services(
            definition=api_definition(),
            store=store,
            engine=engine,
            ingest_token=token,
            **settings,
        )
    )


def close_to(actual: float, expected: float, relative: float = 1e-9) -> bool:
    """Equal within a relative tolerance."""
    return math.isclose(actual, expected, rel_tol=relative, abs_tol=0.0)


@dataclass(slots=True)
class RunningServer:
    """A uvicorn server running in a thread: its URLs and a way onto its event loop."""

    app: FastAPI
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the server's event loop and wait for its result here."""

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        return await asyncio.wrap_future(future)


@contextlib.asynccontextmanager
async def running(app: FastAPI, *, ws_max_size: int = WS_MAX_SIZE) -> AsyncIterator[RunningServer]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port until the block ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))  # the port is ours from here on: no race for a free one
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        loop="asyncio",
        ws=FeedProtocol,  # the WebSocket protocol the service runs with (uvicorn_options)
        ws_max_size=ws_max_size,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[listener]))
        except BaseException as error:  # SystemExit when the lifespan startup fails
            failure.append(error)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())

    thread = threading.Thread(target=serve, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server did not start: {failure or 'exited'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {STARTUP_TIMEOUT} s")
            await asyncio.sleep(0.01)
        yield RunningServer(app=app, server=server, loop=loop, port=port)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            await asyncio.to_thread(thread.join, SHUTDOWN_TIMEOUT)
        listener.close()
        if not thread.is_alive():
            loop.close()
    if failure and not isinstance(failure[0], SystemExit):
        raise RuntimeError("the server failed") from failure[0]


def http_client(server: RunningServer) -> httpx.AsyncClient:
    """An HTTP client for the server that ignores proxy settings of the environment."""
    return httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=30.0)


def ws_connect(server: RunningServer, **options: Any) -> websockets.asyncio.client.connect:
    """A WebSocket connection to /v1/ws that ignores proxy settings of the environment."""
    return websockets.asyncio.client.connect(server.ws_url, proxy=None, **options)


async def receive(connection: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next text message as JSON; fail if none comes within `timeout` seconds."""
    text = await asyncio.wait_for(connection.recv(), timeout)
    assert isinstance(text, str), f"expected a text frame, got {text!r}"
    message: dict[str, Any] = json.loads(text)
    return message


async def wait_until(
    check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll until `check` returns something other than None; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


Served = tuple[RunningServer, Engine, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def serve(
    store: Store | None = None, *, live: bool = False, **settings: Any
) -> AsyncIterator[Served]:
    """The test definition's app and engine (memory store unless given) on a real uvicorn, with
    an HTTP client: live publishes every second, else only when a test calls publish."""
    from streaming.store.memory import MemoryStore

    store = store or MemoryStore()
    engine = make_engine(store, live=live)
    async with (
        running(make_app(store, engine, **settings)) as server,
        http_client(server) as client,
    ):
        yield server, engine, client
