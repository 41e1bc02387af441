"""What the HTTP edge is built from, and how request handlers reach it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from app.access import Access
from app.errors import ApiError
from app.models import ResponseBodies
from app.ratelimit import RateLimiter
from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.definition import Family, IndexDefinition
from streaming.publication import Publication
from streaming.store.base import Store

if TYPE_CHECKING:
    from app.broadcast import Broadcaster

MIB = 1024 * 1024
# How often the channel of a store is checked: the Redis store keeps its `listening` flag down
# for at least its first reconnect delay (0.1 s) after losing the channel, so a drop it
# reports is seen before it subscribes again.
CHANNEL_CHECK_SECONDS = 0.05
# The longest values are kept without a store read, seconds: the bound on serving a value whose
# announcement was lost in a channel drop the store does not report (redis-py reconnects a
# pub/sub connection by itself, and what is announced meanwhile never arrives).
KEEP_SECONDS = 0.1


def _consume_error(task: asyncio.Future[dict[str, Publication]]) -> None:
    # Every waiter gets the error; this only keeps asyncio from reporting it as unread when
    # all of them went away first.
    if not task.cancelled():
        task.exception()


class LatestValues:
    """The store's latest value per index, read about once per publication instead of once per
    request.

    For a store whose publications reach this process over a channel that can be down (Redis,
    which has a `listening` flag), the values read are kept and answered until the store's
    fan-out hands this process anything (a publication, or one the engine could not commit),
    until the channel is seen down, or for KEEP_SECONDS at most; the next request then reads
    the store again, and the requests that come in meanwhile share that read. A store without
    such a channel (the memory store, in this process) is read on every request: that read is
    a dictionary copy.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._values: Mapping[str, Publication] | None = None
        self._until = 0.0  # monotonic seconds: the kept values are read again after this
        self._version = 0  # counts the reasons to read again
        self._reading: tuple[int, asyncio.Future[dict[str, Publication]], float] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False  # both tasks are following the store

    @property
    def kept(self) -> bool:
        """True when a read now answers without asking the store."""
        return self._values is not None and time.monotonic() < self._until and self._following()

    async def start(self) -> None:
        """Follow the store's fan-out from now on (if its values can be kept at all)."""
        if self._tasks or not hasattr(self._store, "listening"):
            return
        publications = self._store.subscribe()  # registered now: nothing committed is missed
        self._tasks = [
            asyncio.create_task(self._follow(publications), name="latest-values"),
            asyncio.create_task(self._watch_channel(), name="latest-values-channel"),
        ]
        self._running = True
        for task in self._tasks:
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running = False  # either task ending ends the keeping, for good
        self._forget()

    async def stop(self) -> None:
        """Stop following; every read goes to the store again."""
        tasks, self._tasks = self._tasks, []
        self._running = False
        self._forget()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def read(self) -> Mapping[str, Publication]:
        """The last committed value per index code (not to be modified)."""
        values = self._values
        now = time.monotonic()
        if values is not None and now < self._until and self._following():
            return values
        if not self._following():
            return await self._store.latest()
        version = self._version
        reading = self._reading
        if reading is None or reading[0] != version or reading[1].done():
            task = asyncio.ensure_future(self._store.latest())
            task.add_done_callback(_consume_error)
            self._reading = reading = (version, task, now)
        values = await asyncio.shield(reading[1])
        if version == self._version and self._following():
            # Nothing was announced while it was being read: good until the next announcement.
            self._values, self._until = values, reading[2] + KEEP_SECONDS
        return values

    def _following(self) -> bool:
        return self._running and bool(getattr(self._store, "listening", False))

    def _forget(self) -> None:
        self._values = None
        self._version += 1
        self._reading = None

    async def _follow(self, publications: AsyncIterator[Publication]) -> None:
        async for _ in publications:
            self._forget()

    async def _watch_channel(self) -> None:
        while True:
            if not getattr(self._store, "listening", False):
                self._forget()
            await asyncio.sleep(CHANNEL_CHECK_SECONDS)


@dataclass(slots=True)
class Services:
    """The parts one API process runs with; engine is None in an API-only process."""

    definition: Family | IndexDefinition  # a single definition is a family of one
    store: Store
    engine: Engine | None
    ingest_token: str
    max_body_bytes: int = 4 * MIB  # POST /v1/ticks body, bytes
    ws_queue_size: int = 256  # messages queued per WebSocket client before conflation
    max_ticks_per_request: int = 100_000
    ws_max_message_bytes: int = 64 * 1024  # one incoming WebSocket message, bytes
    ws_max_subscriptions: int = 64  # index codes per WebSocket connection
    stale_after_seconds: int = 900  # a line with no trade for this long is flagged stale
    admin_token: str | None = None  # None: the admin endpoints answer 503
    ws_heartbeat_seconds: float = 10.0  # a heartbeat after this long with nothing sent
    ws_max_lag_seconds: float = 30.0  # a client this far behind is closed (4008)
    ws_max_dropped: int = 0  # a client that lost more updates to conflation is closed; 0: never
    ws_live_min_interval_ms: int = 100  # the shortest live-channel interval a client may ask for
    ws_replay_limit: int = 10_000  # updates replayed per index on resume; more: a gap snapshot
    access: Access = field(default_factory=Access)  # API keys and connection limits
    ingest_stream: bool = False  # POST /v1/ticks appends to the store's durable stream
    ingest_limit: RateLimiter = field(default_factory=RateLimiter)  # ticks and FX, per token
    cors_origins: tuple[str, ...] = ()  # browser origins allowed by CORS; empty: no CORS at all
    # The REST bodies of the latest values, made once per publication (app.rest).
    bodies: ResponseBodies = field(default_factory=ResponseBodies)
    # The store's latest values, kept between publications where that is exact.
    latest_values: LatestValues = field(init=False)

    def __post_init__(self) -> None:
        self.latest_values = LatestValues(self.store)
        if isinstance(self.definition, IndexDefinition):
            self.definition = Family.of(self.definition)
        for name in (
            "max_body_bytes",
            "ws_queue_size",
            "max_ticks_per_request",
            "ws_max_message_bytes",
            "ws_max_subscriptions",
            "stale_after_seconds",
            "ws_live_min_interval_ms",
            "ws_replay_limit",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        for name in ("ws_heartbeat_seconds", "ws_max_lag_seconds"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ConfigError(name, f"must be a number of seconds, got {seconds!r}")
            if not (math.isfinite(seconds) and seconds > 0):
                raise ConfigError(name, f"must be a positive number of seconds, got {seconds!r}")
        dropped = self.ws_max_dropped
        if isinstance(dropped, bool) or not isinstance(dropped, int) or dropped < 0:
            raise ConfigError("ws_max_dropped", f"must be an integer >= 0, got {dropped!r}")
        if self.admin_token and self.admin_token == self.ingest_token:
            # One shared secret would let every tick feeder reschedule bases.
            raise ConfigError("admin_token", "must differ from the ingest token")

    @property
    def family(self) -> Family:
        """The indices this process serves."""
        assert isinstance(self.definition, Family)  # made so in __post_init__
        return self.definition

    def spec(self, code: str) -> IndexSpec:
        """The index of this code, or a 404 naming it and the known codes."""
        try:
            return self.family.spec(code)
        except KeyError:
            known = list(self.family.codes)
            raise ApiError(
                404,
                f"unknown index {code!r}; known: {', '.join(known)}",
                code=code,
                known=known,
            ) from None


def services_of(connection: HTTPConnection) -> Services:
    """The Services of the app serving this request or WebSocket."""
    services: Services = connection.app.state.services
    return services


async def request_services(connection: HTTPConnection) -> Services:
    """services_of as a request dependency: a coroutine, so FastAPI calls it on the event loop
    instead of handing it to its thread pool on every request."""
    return services_of(connection)


def broadcaster_of(connection: HTTPConnection) -> Broadcaster:
    """The process-wide fan-out of the app serving this WebSocket."""
    broadcaster: Broadcaster = connection.app.state.broadcaster
    return broadcaster


def leading_engine(services: Services) -> Engine:
    """The engine of this process when it leads; 503 (nothing applied, so a proxy may pass the
    request on to another engine) when there is none or it stands by."""
    if services.engine is None:
        raise ApiError(503, "this process serves the API only and runs no engine")
    if services.engine.state != "running":
        raise ApiError(503, "this engine stands by: the leading engine takes changes")
    return services.engine
