"""What the HTTP edge is built from, and how request handlers reach it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from app.access import Access
from app.errors import ApiError
from app.ratelimit import RateLimiter
from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.definition import Family, IndexDefinition
from streaming.store.base import Store

if TYPE_CHECKING:
    from app.broadcast import Broadcaster

MIB = 1024 * 1024


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

    def __post_init__(self) -> None:
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


def broadcaster_of(connection: HTTPConnection) -> Broadcaster:
    """The process-wide fan-out of the app serving this WebSocket."""
    broadcaster: Broadcaster = connection.app.state.broadcaster
    return broadcaster
