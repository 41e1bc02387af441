"""Wire settings into a running service: definition, store, sources, engine, API, uvicorn."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from streaming.clock import ReplayClock
from streaming.engine import Engine
from streaming.methodology.calculator import Calculator
from streaming.methodology.definition import DEFAULT_FAMILY, Family, load_family
from streaming.methodology.timetable import AroundTheClock, Timetable
from streaming.settings import Settings, admin_token, ingest_token
from streaming.sources import TickSource
from streaming.sources.replay import ReplaySource, first_tick_epoch
from streaming.sources.simulator import SimulatorSettings, SimulatorSource
from streaming.store.select import make_store

log = logging.getLogger("index_ticker")


@dataclass(frozen=True, slots=True)
class Assembly:
    """The parts of one service process, built from settings, not yet started."""

    family: Family
    engine: Engine
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
    path = settings.feed.removeprefix("replay:")
    return [ReplaySource(path, frozenset(universe.secids), settings.replay_speed, clock)]


def make_timetable(settings: Settings, family: Family) -> Timetable:
    """The exchange timetable (--session moex) or around the clock (the demo)."""
    if settings.session == "moex":
        return family.timetable()
    return AroundTheClock(family.session.utc_offset)


def make_clock(settings: Settings) -> tuple[Callable[[], float], float]:
    """The wall clock, or for a paced replay the recorded time from its first tick at N×."""
    if settings.feed.startswith("replay:") and settings.replay_speed > 0:
        start = first_tick_epoch(settings.feed.removeprefix("replay:"))
        if start is not None:
            clock = ReplayClock(start, settings.replay_speed)
            return clock, clock.rate
    return time.time, 1.0


def assemble(settings: Settings) -> Assembly:
    """Build the family, store, sources and engine from settings."""
    family = load_family(settings.definition or DEFAULT_FAMILY)
    store = make_store(settings.redis_url, settings.namespace, settings.history_limit)
    clock, rate = make_clock(settings)
    engine = Engine(
        family,
        store,
        cadence=settings.cadence,
        timetable=make_timetable(settings, family),
        sources=make_sources(settings, family, None if clock is time.time else clock),
        fx_rate=settings.fx_rate,
        clock=clock,
        clock_rate=rate,
    )
    token, generated = ingest_token()
    return Assembly(family, engine, token, generated, admin_token())


def serve(settings: Settings) -> None:
    """Run the all-in-one service until interrupted."""
    from app.main import Services, create_app

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    parts = assemble(settings)
    app = create_app(
        Services(
            definition=parts.family,
            store=parts.engine.store,
            engine=parts.engine,
            ingest_token=parts.token,
            admin_token=parts.admin_token,
            max_body_bytes=settings.max_body_bytes,
        )
    )
    where = f"http://{settings.host}:{settings.port}"
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
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_max_size=1024 * 1024,  # no WebSocket client message is allowed near this big
    )
