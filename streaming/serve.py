"""Wire settings into a running process: definition, store, sources, engine, API or operations
port, uvicorn."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import uvicorn

from streaming.cbr import CbrPoller, CbrPollSettings, CbrSource
from streaming.clock import ReplayClock
from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.leader import LeaderLease
from streaming.logs import configure_logging as install_logging
from streaming.methodology.calculator import Calculator
from streaming.methodology.definition import DEFAULT_FAMILY, Family, load_family
from streaming.methodology.fx import CbrRule
from streaming.settings import (
    EffectiveSettings,
    Settings,
    admin_token,
    api_keys,
    env_name,
    ingest_token,
    iss_token,
)
from streaming.sources import TickSource
from streaming.sources.iss import IssSource
from streaming.sources.replay import ReplaySource, first_tick_epoch
from streaming.sources.simulator import SimulatorSettings, SimulatorSource
from streaming.store.base import Store
from streaming.store.select import make_store

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("index_ticker")

WS_MAX_SIZE = 1024 * 1024  # no WebSocket client message is allowed near this big, bytes


@dataclass(frozen=True, slots=True)
class Assembly:
    """The parts of one service process, built from settings, not yet started."""

    family: Family
    store: Store
    engine: Engine | None  # None in an API-only process
    token: str
    token_generated: bool
    admin_token: str | None


def make_sources(
    settings: Settings, family: Family, clock: Callable[[], float] | None = None
) -> list[TickSource]:
    """The tick sources the feed setting names (the one place a feed is chosen)."""
    if settings.feed == "none":
        return []
    universe = family.universe()
    if settings.feed == "simulator":
        prices = Calculator(universe).prices  # validates that every line has a price
        return [SimulatorSource(universe, prices, SimulatorSettings(seed=settings.seed))]
    if settings.feed == "iss":
        return [
            IssSource(
                frozenset(universe.secids),
                settings.iss_url,
                iss_token(),
                settings.iss_interval_seconds,
            )
        ]
    path = settings.feed.removeprefix("replay:")
    return [
        ReplaySource(
            path,
            frozenset(universe.secids),
            settings.replay_speed,
            clock,
            trade_date=settings.trade_date(),
            utc_offset=family.session.utc_offset,
        )
    ]


def make_clock(settings: Settings, family: Family) -> tuple[Callable[[], float], float]:
    """The wall clock, or for a paced replay the recorded time from its first tick at N×."""
    if settings.feed.startswith("replay:") and settings.replay_speed > 0:
        start = first_tick_epoch(
            settings.feed.removeprefix("replay:"),
            trade_date=settings.trade_date(),
            utc_offset=family.session.utc_offset,
        )
        if start is not None:
            clock = ReplayClock(start, settings.replay_speed)
            return clock, clock.rate
    return time.time, 1.0


def make_engine(settings: Settings, family: Family, store: Store) -> Engine:
    """The engine for these settings: sources, clock, session, lease, ingest stream, FX feed."""
    clock, rate = make_clock(settings, family)
    cadence = settings.cadence or family.cadence_seconds
    lease = (
        LeaderLease(store, settings.lease_seconds or max(1.0, cadence / 2))
        if settings.leader_lease
        else None
    )
    engine = Engine(
        family,
        store,
        cadence=settings.cadence,
        timetable=family.timetable_for(settings.session),
        sources=make_sources(settings, family, None if clock is time.time else clock),
        fx_rate=settings.fx_rate,
        clock=clock,
        clock_rate=rate,
        lease=lease,
        ingest_stream=settings.ingest_stream,
    )
    if settings.fx_feed == "cbr":
        rule = engine.fx_settings.rule
        poller = CbrPoller(
            engine.add_fx,
            CbrPollSettings(base_url=settings.cbr_url, interval=settings.cbr_interval_seconds),
            rule=rule if isinstance(rule, CbrRule) else None,
            clock=engine.clock,
        )
        engine.sources = (*engine.sources, CbrSource(poller))
    return engine


def assemble(settings: Settings) -> Assembly:
    """Build the family, store, sources and engine from settings."""
    family = load_family(settings.definition or DEFAULT_FAMILY)
    store = make_store(settings.redis_url, settings.namespace, settings.history_limit)
    engine = make_engine(settings, family, store)
    token, generated = ingest_token()
    return Assembly(family, store, engine, token, generated, admin_token())


def assemble_api(settings: Settings) -> Assembly:
    """An API-only process: no engine; values, history and fan-out come from Redis, where the
    engine process (`index-ticker engine` or `serve`) commits them, and POST /v1/ticks appends to
    the durable ingest stream that engine reads."""
    if not settings.redis_url:
        raise ConfigError(
            "redis_url",
            "an API-only process reads the engine's state from Redis: give --redis-url or "
            "INDEX_TICKER_REDIS_URL",
        )
    family = load_family(settings.definition or DEFAULT_FAMILY)
    store = make_store(settings.redis_url, settings.namespace, settings.history_limit)
    token, generated = ingest_token()
    return Assembly(family, store, None, token, generated, admin_token())


def make_services(settings: Settings, parts: Assembly) -> Services:
    """The API's services from settings: limits, the feed's policies, API keys."""
    from app.access import Access
    from app.ratelimit import RateLimiter
    from app.services import Services

    access = Access(
        api_keys(),
        redis_url=settings.redis_url if settings.api_keys_redis else None,
        namespace=settings.namespace,
        max_per_key=settings.ws_max_connections_per_key,
        max_per_address=settings.ws_max_connections_per_address,
    )
    return Services(
        definition=parts.family,
        store=parts.store,
        engine=parts.engine,
        ingest_token=parts.token,
        admin_token=parts.admin_token,
        max_body_bytes=settings.max_body_bytes,
        ws_queue_size=settings.ws_queue_size,
        ws_max_subscriptions=settings.ws_max_subscriptions,
        ws_heartbeat_seconds=settings.ws_heartbeat_seconds,
        ws_max_lag_seconds=settings.ws_max_lag_seconds,
        ws_max_dropped=settings.ws_max_dropped,
        ws_live_min_interval_ms=settings.ws_live_min_interval_ms,
        ws_replay_limit=settings.ws_replay_limit,
        access=access,
        ingest_limit=RateLimiter(settings.ingest_rate_per_second, settings.ingest_burst),
        cors_origins=settings.cors_origins,
        ingest_stream=settings.ingest_stream or parts.engine is None,
    )


SHUTDOWN_GRACE_SECONDS = 5


def configure_logging(settings: Settings) -> None:
    """The process's log level and line format (text, or one JSON object per line), for every
    command that runs a service; uvicorn then runs with log_config=None and logs through it."""
    install_logging(settings.log_level, settings.log_format)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings: address, logging, the WebSocket protocol, keepalive and compression.

    The WebSocket protocol is app.ws.FeedProtocol, uvicorn's sans-I/O one (keepalive on timers,
    no task per connection) taking the fan-out's frames built once for every client.
    """
    from app.ws import FeedProtocol

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,  # configure_logging's handler, text or JSON
        # The client's address for per-address limits and logs, from the proxy's headers.
        "proxy_headers": True,
        "forwarded_allow_ips": list(settings.forwarded_allow_ips),
        # uvicorn formats an access-log line for every response even when the level hides it.
        "access_log": settings.log_level in ("debug", "info"),
        "ws": FeedProtocol,
        "ws_max_size": WS_MAX_SIZE,
        "ws_ping_interval": settings.ws_ping_interval or None,
        "ws_ping_timeout": settings.ws_ping_timeout or None,
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        # A stop does not wait for ever on clients that never close.
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS,
        "backlog": 4096,  # a burst of thousands of reconnecting feed clients
    }


def serve(settings: Settings, api_only: bool = False) -> None:
    """Run the all-in-one service (or, api_only, the REST/WebSocket edge alone) until
    interrupted."""
    from app.main import create_app

    configure_logging(settings)
    parts = assemble_api(settings) if api_only else assemble(settings)
    app = create_app(make_services(settings, parts))
    where = f"http://{settings.host}:{settings.port}"
    if parts.engine is None:
        print(
            f"index-ticker api: {', '.join(parts.family.codes)} from {settings.namespace} in "
            f"Redis; ticks to its ingest stream; dashboard at {where}",
            file=sys.stderr,
        )
    else:
        print(
            f"index-ticker: {', '.join(parts.family.codes)} every {parts.engine.cadence} s, "
            f"session {settings.session}, feed {settings.feed}, "
            f"state {'redis' if settings.redis_url else 'in memory'}; dashboard at {where}",
            file=sys.stderr,
        )
    if parts.token_generated:
        print(
            "index-ticker: no INDEX_TICKER_INGEST_TOKEN set; generated ingest token for this run: "
            f"{parts.token}",
            file=sys.stderr,
        )
    # What exists now (modules, the family, the app) lives as long as the process: keep it out
    # of the cyclic collector's full passes, which otherwise pause the grid for milliseconds.
    gc.freeze()
    uvicorn.run(app, **uvicorn_options(settings))


def engine_settings(effective: EffectiveSettings) -> Settings:
    """An engine process's settings: Redis required, the durable ingest stream and the leader
    lease always on (set to false anywhere, they are refused rather than ignored)."""
    settings = effective.settings
    if not settings.redis_url:
        raise ConfigError(
            "redis_url",
            "an engine keeps its state, the ingest stream and the leader lease in Redis: "
            "give --redis-url or INDEX_TICKER_REDIS_URL",
        )
    for key in ("ingest_stream", "leader_lease"):
        if effective.explicit(key) and not getattr(settings, key):
            source = effective.sources[key]
            raise ConfigError(
                env_name(key) if source == "env" else key,
                "is always on in an engine process: leave it unset",
                effective.config if source == "file" else None,
            )
    return replace(settings, ingest_stream=True, leader_lease=True)


def run_engine(settings: Settings) -> None:
    """Run the calculation and publication alone, with the operations port, until SIGTERM or
    SIGINT, which stop it at once and give the leader lease up for a standby to take."""
    from app.ops import create_ops_app

    configure_logging(settings)
    family = load_family(settings.definition or DEFAULT_FAMILY)
    store = make_store(settings.redis_url, settings.namespace, settings.history_limit)
    engine = make_engine(settings, family, store)
    token, generated = ingest_token()
    parts = Assembly(family, store, engine, token, generated, admin_token())
    services = make_services(settings, parts)
    print(
        f"index-ticker engine: {', '.join(family.codes)} every {engine.cadence} s, "
        f"session {settings.session}, feed {settings.feed}, namespace {settings.namespace}; "
        f"operations at http://{settings.ops_host}:{settings.ops_port} (/healthz, /readyz, "
        "/metrics; admin API and POST /v1/fx while it leads)",
        file=sys.stderr,
    )
    if generated:
        print(
            "index-ticker engine: no INDEX_TICKER_INGEST_TOKEN set; generated token for POST "
            f"/v1/fx on this run: {token}",
            file=sys.stderr,
        )
    gc.freeze()  # as in serve(): what exists now lives as long as the process
    uvicorn.run(
        create_ops_app(engine, store, services),
        host=settings.ops_host,
        port=settings.ops_port,
        log_level=settings.log_level,
        log_config=None,  # configure_logging's handler, text or JSON
        access_log=settings.log_level == "debug",  # health checks every few seconds otherwise
        lifespan="on",  # a store that does not open stops the process instead of being ignored
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
