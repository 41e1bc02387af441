"""What GET /metrics exposes: the edge counters incremented where ticks come in, and at scrape
time the engine, the fan-out, the state store and the process read from the live objects.

A scrape costs O(indices + sources + label sets): counts kept by the objects themselves are
read, never recomputed by walking the connections.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import math
import os
import resource
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import streaming
from streaming.methodology.schedule import utc_from_epoch
from streaming.metrics import ENGINE_REGISTRY, REGISTRY, Family, Registry, Sample, render_families
from streaming.store.base import Store
from streaming.ticks import Rejection

if TYPE_CHECKING:
    from app.access import Access
    from app.broadcast import Broadcaster
    from streaming.engine import Engine

PING_TIMEOUT_SECONDS = 1.0  # a scrape waits no longer than this for the store to answer
ENGINE_STATES = ("created", "standby", "running", "stopped")
# The fields a tick can be rejected on (streaming.ticks; "ticks": a tick stream batch entry);
# any other, such as an unknown field a stream producer wrote, is counted as "other" so that the
# label set stays bounded.
TICK_FIELDS = frozenset({"tick", "secid", "price", "time", "volume", "phase", "ticks"})
STATUS_CLASSES = ("2xx", "4xx", "5xx")

INGEST_TICKS = REGISTRY.counter(
    "index_ticker_ingest_ticks_total",
    "Ticks received over POST /v1/ticks by validation outcome (accepted: handed to the engine "
    "or to the ingest stream; the price guard's verdicts are index_ticker_guard_ticks_total).",
    ("outcome",),
)
TICKS_REJECTED = REGISTRY.counter(
    "index_ticker_ticks_rejected_total",
    "Ticks refused by validation, by ingest path and by the tick field at fault.",
    ("source", "field"),
)
INGEST_REQUESTS = REGISTRY.counter(
    "index_ticker_ingest_requests_total",
    "POST /v1/ticks requests answered, by HTTP status class.",
    ("status",),
)
for _outcome in ("accepted", "rejected"):
    INGEST_TICKS.labels(_outcome)
for _status in STATUS_CLASSES:
    INGEST_REQUESTS.labels(_status)


def count_ingest(accepted: int, rejections: Iterable[Rejection], source: str = "http") -> None:
    """Count one answered batch: its accepted ticks and its rejections by field."""
    INGEST_TICKS.labels("accepted").inc(accepted)
    rejected = 0
    for rejection in rejections:
        TICKS_REJECTED.labels(source, _field(rejection.field)).inc()
        rejected += 1
    INGEST_TICKS.labels("rejected").inc(rejected)


def count_ingest_request(status_code: int) -> None:
    """Count one answered ingest request by its status class (2xx, 4xx, 5xx)."""
    INGEST_REQUESTS.labels(f"{status_code // 100}xx").inc()


async def ping_seconds(store: Store, timeout: float = PING_TIMEOUT_SECONDS) -> float | None:
    """Seconds the store took to answer a ping, None when it did not answer in `timeout`."""
    started = time.perf_counter()
    try:
        answered = await asyncio.wait_for(store.ping(), timeout)
    except Exception:
        return None
    return time.perf_counter() - started if answered else None


async def render_metrics(
    *,
    engine: Engine | None,
    store: Store,
    broadcaster: Broadcaster | None = None,
    access: Access | None = None,
) -> bytes:
    """The exposition of this process: edge counters, store, engine (when it runs one),
    fan-out (when it serves WebSocket clients) and process figures; Prometheus text 0.0.4."""
    ping = await ping_seconds(store)
    scrape = Registry()
    scrape.gauge(
        "index_ticker_build_info", "Always 1; the version in its label.", ("version",)
    ).labels(streaming.__version__).set(1)
    _store_metrics(scrape, store, ping)
    stream_rejects: Mapping[str, int] = {}
    if engine is not None:
        _engine_metrics(scrape, engine)
        stream_rejects = _stream_metrics(scrape, engine)
    if broadcaster is not None:
        _fanout_metrics(scrape, broadcaster)
    if access is not None:
        _access_metrics(scrape, access)
    _process_metrics(scrape)
    edge = _with_stream_rejects(REGISTRY.collect(), stream_rejects)
    observed = ENGINE_REGISTRY.collect() if engine is not None else ()
    return render_families(itertools.chain(edge, observed, scrape.collect()))


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


def _store_metrics(scrape: Registry, store: Store, ping: float | None) -> None:
    backend = store.name
    scrape.gauge(
        "index_ticker_store_up",
        "1 when the state store answered a ping at this scrape, 0 when it did not.",
        ("backend",),
    ).labels(backend).set(_flag(ping is not None))
    scrape.gauge(
        "index_ticker_store_ping_seconds",
        f"Seconds the state store took to answer a ping at this scrape; NaN when it did not "
        f"answer within {PING_TIMEOUT_SECONDS:g} s.",
        ("backend",),
    ).labels(backend).set(math.nan if ping is None else ping)
    listening = getattr(store, "listening", None)
    if isinstance(listening, bool):
        scrape.gauge(
            "index_ticker_store_channel_up",
            "1 while this process's subscription to the store's publication channel is live.",
            ("backend",),
        ).labels(backend).set(_flag(listening))


def _engine_metrics(scrape: Registry, engine: Engine) -> None:
    stats = engine.stats
    scrape.counter(
        "index_ticker_engine_ticks_applied_total", "Ticks that moved prices in the engine."
    ).inc(stats.ticks_applied)
    scrape.counter(
        "index_ticker_engine_publications_total",
        "Grid instants published (each publishes every index due at that instant).",
    ).inc(stats.publications)
    scrape.counter(
        "index_ticker_engine_commit_failures_total",
        "Publications whose commit to the state store failed (delivered locally, backlogged).",
    ).inc(stats.commit_failures)
    scrape.gauge(
        "index_ticker_engine_last_publish_seconds",
        "Wall seconds the last publication took, re-sum to commit; NaN before the first.",
    ).set(stats.last_publish_seconds)
    lag = scrape.gauge(
        "index_ticker_engine_recent_publication_lag_seconds",
        "Seconds from grid instant to committed publication over the engine's window of recent "
        "publications, as a gauge per quantile (0.5, 0.99, and 1 for the maximum); no samples "
        "before the first publication.",
        ("quantile",),
    )
    summary = stats.lag_summary()
    if summary is not None:
        for quantile, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
            lag.labels(quantile).set(float(summary[key]) / 1000)
    scrape.gauge(
        "index_ticker_engine_recent_publication_lag_count",
        "Publications in the window the lag quantiles are taken over.",
    ).set(len(stats.lag))
    scrape.gauge(
        "index_ticker_engine_drift_ratio",
        "Relative gap between the incremental and the re-summed capitalization at the last "
        "publication.",
    ).set(stats.last_drift)
    seq = scrape.gauge(
        "index_ticker_engine_seq", "Last published sequence number per index.", ("code",)
    )
    for code, number in engine.seq.items():
        seq.labels(code).set(number)
    value = scrape.gauge(
        "index_ticker_index_value",
        "Last published value per index, index points at full precision.",
        ("code",),
    )
    for code, points in engine.last_values.items():
        value.labels(code).set(points)
    state = scrape.gauge(
        "index_ticker_engine_state",
        "1 for the engine's current state, 0 for the others.",
        ("state",),
    )
    for name in (*ENGINE_STATES, *(() if engine.state in ENGINE_STATES else (engine.state,))):
        state.labels(name).set(_flag(engine.state == name))
    leading = engine.state == "running" and (engine.lease is None or engine.lease.held)
    scrape.gauge(
        "index_ticker_engine_leader",
        "1 while this engine publishes (it holds the leader lease, or runs without one).",
    ).set(_flag(leading))
    now = engine.clock()
    scrape.gauge("index_ticker_engine_cadence_seconds", "Seconds between grid instants.").set(
        engine.cadence
    )
    scrape.gauge(
        "index_ticker_engine_last_publication_timestamp_seconds",
        "Grid instant of the last publication, Unix seconds (engine clock); NaN before the first.",
    ).set(math.nan if engine.last_grid is None else engine.last_grid)
    scrape.gauge("index_ticker_engine_session_open", "1 while the session timetable is open.").set(
        _flag(engine.timetable.is_open(utc_from_epoch(now)))
    )
    scrape.gauge(
        "index_ticker_engine_feed_age_seconds",
        "Seconds since the engine last received ticks (engine clock); NaN before the first.",
    ).set(math.nan if engine.last_tick_epoch is None else now - engine.last_tick_epoch)
    scrape.gauge(
        "index_ticker_engine_feed_stale",
        "1 when no tick came within the engine's feed_stale_seconds (updates say stale).",
    ).set(
        _flag(
            engine.last_tick_epoch is None
            or now - engine.last_tick_epoch > engine.feed_stale_seconds
        )
    )
    scrape.gauge(
        "index_ticker_engine_backlog",
        "Publications waiting to be committed to the state store.",
    ).set(len(engine.backlog))
    _guard_metrics(scrape, engine)
    _fx_metrics(scrape, engine)
    _feed_metrics(scrape, engine)


def _stream_metrics(scrape: Registry, engine: Engine) -> Mapping[str, int]:
    """Where the engine's reader of the tick stream stands; its rejected ticks by field."""
    reader = getattr(engine, "stream_reader", None)
    status = getattr(reader, "status", None)
    if not callable(status):
        return {}
    report: Mapping[str, Any] = status()
    for key, name, help in (
        ("entries_read", "entries_read_total", "Tick stream entries this engine read."),
        ("ticks_read", "ticks_read_total", "Ticks this engine read from the tick stream."),
    ):
        if isinstance(report.get(key), int):
            scrape.counter(f"index_ticker_stream_{name}", help).inc(report[key])
    for key, name, help in (
        ("length", "length_entries", "Entries the tick stream keeps."),
        ("pending", "pending_entries", "Entries handed to the reader and not acknowledged."),
        (
            "undelivered",
            "undelivered_entries",
            "Entries not yet handed to the reader; NaN when Redis cannot tell (after a trim).",
        ),
        (
            "seconds_behind",
            "seconds_behind",
            "Seconds between the newest stream entry and the last one applied (0: caught up).",
        ),
    ):
        if key in report:
            number = report[key]
            scrape.gauge(f"index_ticker_stream_{name}", help).set(
                number if isinstance(number, int | float) else math.nan
            )
    rejected = report.get("rejected")
    if not isinstance(rejected, Mapping):
        return {}
    return {str(field): int(count) for field, count in rejected.items()}


def _with_stream_rejects(
    families: Iterable[Family], rejects: Mapping[str, int]
) -> Iterator[Family]:
    """The edge families, with the stream reader's rejects as `source="stream"` samples of the
    rejected-ticks counter (counted engine-side, where the stream is read)."""
    for family in families:
        if family.name == TICKS_REJECTED.name and rejects:
            by_field: collections.Counter[str] = collections.Counter()
            for field, count in rejects.items():
                by_field[_field(field)] += count
            stream = tuple(
                Sample("", (("source", "stream"), ("field", field)), count)
                for field, count in sorted(by_field.items())
            )
            family = replace(family, samples=family.samples + stream)
        yield family


def _field(field: str) -> str:
    return field if field in TICK_FIELDS else "other"


def _guard_metrics(scrape: Registry, engine: Engine) -> None:
    scrape.gauge(
        "index_ticker_guard_held_lines",
        "Lines whose latest trade the price guard holds back, waiting for confirmation.",
    ).set(len(engine.guard.held()))
    counters = engine.guard.counters
    ticks = scrape.counter(
        "index_ticker_guard_ticks_total",
        "Ticks through the price guard by verdict: accepted at once, held, released after "
        "confirmation, discarded.",
        ("outcome",),
    )
    for outcome in ("accepted", "held", "released", "discarded"):
        ticks.labels(outcome).inc(getattr(counters, outcome))


def _fx_metrics(scrape: Registry, engine: Engine) -> None:
    status = engine.fx_status()
    scrape.gauge(
        "index_ticker_fx_rate", "USD/RUB rate in force, roubles per dollar; NaN when none."
    ).set(math.nan if status.rate is None else status.rate)
    scrape.gauge(
        "index_ticker_fx_age_seconds", "Seconds since the rate in force took effect; NaN if none."
    ).set(math.nan if status.age is None else status.age.total_seconds())
    scrape.gauge(
        "index_ticker_fx_stale", "1 when the rate in force is older than its rule allows."
    ).set(_flag(status.stale))


def _feed_metrics(scrape: Registry, engine: Engine) -> None:
    """The numbers each source reports of itself (requests, errors, data age), by key."""
    feed = scrape.gauge(
        "index_ticker_feed_status_value",
        "Numeric fields of a feed's own status report (true/false as 1/0), by feed and key.",
        ("feed", "key"),
    )
    for source in engine.sources:
        report = getattr(source, "status", None)
        if not callable(report):
            continue
        fields: Mapping[str, Any] = report()
        for key, number in fields.items():
            if isinstance(number, bool):
                feed.labels(source.name, key).set(_flag(number))
            elif isinstance(number, int | float):
                feed.labels(source.name, key).set(number)


def _fanout_metrics(scrape: Registry, broadcaster: Broadcaster) -> None:
    counts = broadcaster.counts()
    scrape.gauge("index_ticker_ws_connections", "Open WebSocket feed connections.").set(
        counts["connections"]
    )
    subscribers = scrape.gauge(
        "index_ticker_ws_subscribers",
        "WebSocket connections subscribed, per channel and index code (live: code empty).",
        ("channel", "code"),
    )
    for channel in ("index", "constituents"):
        for code, number in sorted(counts[channel].items()):
            subscribers.labels(channel, code).set(number)
    subscribers.labels("live", "").set(counts["live"])
    for name, help, number in (
        (
            "index_ticker_ws_updates_dropped_total",
            "Queued messages conflated away (a newer one replaced them) across all clients.",
            broadcaster.dropped_total,
        ),
        (
            "index_ticker_ws_closed_slow_total",
            "WebSocket connections asked to close as too slow (4008).",
            broadcaster.closed_slow,
        ),
        (
            "index_ticker_broadcast_publications_total",
            "Publications taken from the store's channel by this process's fan-out.",
            broadcaster.received,
        ),
        (
            "index_ticker_broadcast_gaps_filled_total",
            "Publications read from history to cover a gap in the store's channel.",
            broadcaster.gaps_filled,
        ),
        (
            "index_ticker_broadcast_channel_errors_total",
            "Failures of the store channels the fan-out reads (each followed by a resubscribe).",
            broadcaster.channel_errors,
        ),
        (
            "index_ticker_broadcast_live_messages_total",
            "Live-value messages taken from the store's live channel.",
            broadcaster.live_received,
        ),
    ):
        scrape.counter(name, help).inc(number)
    scrape.gauge(
        "index_ticker_broadcast_running", "1 while the fan-out consumes the store channels."
    ).set(_flag(broadcaster.running))


def _access_metrics(scrape: Registry, access: Access) -> None:
    refused = scrape.counter(
        "index_ticker_ws_refused_total",
        "WebSocket connections refused at admission, by close code (4001 no key, 4003 unknown "
        "key, 4029 over a connection limit, 1013 keys cannot be checked).",
        ("close_code",),
    )
    for code, number in sorted(access.refused.items()):
        refused.labels(str(code)).inc(number)


def _process_metrics(scrape: Registry) -> None:
    times = os.times()
    scrape.counter(
        "index_ticker_process_cpu_seconds_total", "User and system CPU seconds of this process."
    ).inc(times.user + times.system)
    scrape.gauge(
        "index_ticker_process_resident_memory_bytes", "Resident memory of this process, bytes."
    ).set(_resident_bytes())
    scrape.gauge("index_ticker_process_open_fds", "Open file descriptors of this process.").set(
        _open_fds()
    )
    scrape.gauge("index_ticker_process_max_fds", "The soft limit on open file descriptors.").set(
        _max_fds()
    )
    scrape.gauge(
        "index_ticker_process_start_time_seconds", "When this process started, Unix seconds."
    ).set(_start_time())


def _resident_bytes() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return math.nan
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def _open_fds() -> float:
    try:
        # Linux 6.2 and later give the count as the directory's size: no listing of what may
        # be one descriptor per WebSocket client.
        size = os.stat("/proc/self/fd").st_size
        return float(size if size > 0 else len(os.listdir("/proc/self/fd")))
    except OSError:
        return math.nan


def _max_fds() -> float:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return math.inf if soft == resource.RLIM_INFINITY else float(soft)


@functools.cache
def _start_time() -> float:
    """From /proc: clock ticks after boot (stat field 22) plus the boot time."""
    try:
        with open("/proc/self/stat", encoding="utf-8", errors="replace") as stat:
            # The command name (field 2) may hold spaces and parentheses: count from its end.
            after_name = stat.read().rpartition(")")[2].split()
        with open("/proc/stat", encoding="ascii") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime "))
        return boot + int(after_name[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return math.nan
