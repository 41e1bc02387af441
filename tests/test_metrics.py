"""Metrics: the library's exposition read back with Prometheus's own parser, and GET /metrics of
a real uvicorn serving an engine on a real Redis (ticks, publications, WebSocket connections,
the store's ping, a Redis that stops)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio
from conftest import free_port, redis_url_for, start_redis, stop_redis
from prometheus_client.parser import text_string_to_metric_families
from serving import (
    AUTH,
    RunningServer,
    api_definition,
    http_client,
    make_app,
    make_engine,
    receive,
    running,
    wait_until,
    ws_connect,
)

import streaming
from app.metrics import count_ingest_request
from streaming.engine import Engine
from streaming.errors import ConfigError, FieldError
from streaming.metrics import (
    CONTENT_TYPE,
    MAX_SERIES,
    Counter,
    Gauge,
    Histogram,
    Registry,
    render,
)
from streaming.store.redis import RedisStore

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, tuple[str, str]], Samples]:
    """(family name -> (type, help), (sample name, labels) -> value) via prometheus_client."""
    families: dict[str, tuple[str, str]] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = (family.type, family.documentation)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# --- the library ----------------------------------------------------------------------------


def test_render_reads_back_as_the_same_families_and_values() -> None:
    registry = Registry()
    ticks = registry.counter("index_ticker_t_ticks_total", "Ticks by outcome.", ("outcome",))
    ticks.labels("accepted").inc(3)
    ticks.labels("rejected").inc()
    ticks.labels("accepted").inc(0.5)
    plain = registry.counter("index_ticker_t_plain_total", "No labels.")
    plain.inc(7)
    seq = registry.gauge("index_ticker_t_seq", "Seq per index.", ("code",))
    seq.labels("IMOEX").set(41)
    seq.labels("IMOEX").inc()
    seq.labels("RTSI").set(12.25)
    seq.labels("RTSI").dec(0.25)
    registry.gauge("index_ticker_t_nan", "Not a number yet.").set(math.nan)
    registry.gauge("index_ticker_t_inf", "Infinite.").set(math.inf)
    registry.gauge("index_ticker_t_negative_inf", "Minus infinity.").set(-math.inf)

    text = render(registry).decode("utf-8")
    families, samples = parse(text)

    assert families["index_ticker_t_ticks"] == ("counter", "Ticks by outcome.")
    assert families["index_ticker_t_seq"] == ("gauge", "Seq per index.")
    assert value(samples, "index_ticker_t_ticks_total", outcome="accepted") == 3.5
    assert value(samples, "index_ticker_t_ticks_total", outcome="rejected") == 1
    assert value(samples, "index_ticker_t_plain_total") == 7
    assert value(samples, "index_ticker_t_seq", code="IMOEX") == 42
    assert value(samples, "index_ticker_t_seq", code="RTSI") == 12
    assert math.isnan(value(samples, "index_ticker_t_nan"))
    assert value(samples, "index_ticker_t_inf") == math.inf
    assert value(samples, "index_ticker_t_negative_inf") == -math.inf
    # The literal text: TYPE and HELP before the samples, special values as the format spells them.
    assert "# TYPE index_ticker_t_ticks_total counter\n" in text
    assert "index_ticker_t_nan NaN\n" in text
    assert "index_ticker_t_inf +Inf\n" in text
    assert "index_ticker_t_negative_inf -Inf\n" in text
    assert 'index_ticker_t_seq{code="IMOEX"} 42\n' in text
    assert text.endswith("\n")
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    awkward = 'back\\slash "quoted"\nnext line, кириллица'
    gauge = registry.gauge(
        "index_ticker_t_escaped", "Help with a \\ backslash\nand a second line.", ("what",)
    )
    gauge.labels(awkward).set(1)
    text = render(registry).decode("utf-8")

    assert 'what="back\\\\slash \\"quoted\\"\\nnext line, кириллица"' in text
    assert "# HELP index_ticker_t_escaped Help with a \\\\ backslash\\nand a second line.\n" in text
    families, samples = parse(text)
    assert value(samples, "index_ticker_t_escaped", what=awkward) == 1
    assert families["index_ticker_t_escaped"][1] == "Help with a \\ backslash\nand a second line."


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    registry = Registry()
    latency = registry.histogram(
        "index_ticker_t_latency_seconds", "Latency.", ("step",), buckets=(0.001, 0.01, 0.1, 1.0)
    )
    step = latency.labels("commit")
    # On a bound counts in that bucket (le: less than or equal); above the last: +Inf only.
    for seconds in (0.0005, 0.001, 0.005, 0.05, 0.1, 0.5, 3.0, 3.0):
        step.observe(seconds)
    latency.labels("read")  # a series with nothing observed yet
    families, samples = parse(render(registry).decode("utf-8"))

    assert families["index_ticker_t_latency_seconds"][0] == "histogram"
    buckets = {
        le: value(samples, "index_ticker_t_latency_seconds_bucket", step="commit", le=le)
        for le in ("0.001", "0.01", "0.1", "1", "+Inf")
    }
    assert buckets == {"0.001": 2, "0.01": 3, "0.1": 5, "1": 6, "+Inf": 8}
    assert value(samples, "index_ticker_t_latency_seconds_count", step="commit") == 8
    assert value(samples, "index_ticker_t_latency_seconds_sum", step="commit") == pytest.approx(
        0.0005 + 0.001 + 0.005 + 0.05 + 0.1 + 0.5 + 6.0
    )
    assert value(samples, "index_ticker_t_latency_seconds_bucket", step="read", le="+Inf") == 0
    assert value(samples, "index_ticker_t_latency_seconds_count", step="read") == 0


def test_histogram_times_a_block_even_when_it_raises() -> None:
    histogram = Histogram("index_ticker_t_block_seconds", "Block.", buckets=(60.0,))
    with histogram.time():
        time.sleep(0.01)
    with pytest.raises(RuntimeError), histogram.time():
        raise RuntimeError("boom")
    family = histogram.collect()
    count = next(s.value for s in family.samples if s.suffix == "_count")
    total = next(s.value for s in family.samples if s.suffix == "_sum")
    assert count == 2
    assert 0.01 <= total < 60.0


def test_a_gauge_or_counter_can_be_read_at_scrape_time() -> None:
    registry = Registry()
    connections = [3]
    registry.gauge("index_ticker_t_connections", "Read.", read=lambda: connections[0])
    registry.gauge(
        "index_ticker_t_per_code",
        "Read with labels.",
        ("code",),
        read=lambda: {("IMOEX",): connections[0] * 2, ("RTSI",): 1},
    )
    registry.counter("index_ticker_t_seen_total", "Read counter.", read=lambda: 10 * connections[0])
    _, first = parse(render(registry).decode())
    connections[0] = 5
    _, second = parse(render(registry).decode())

    assert value(first, "index_ticker_t_connections") == 3
    assert value(second, "index_ticker_t_connections") == 5
    assert value(second, "index_ticker_t_per_code", code="IMOEX") == 10
    assert value(second, "index_ticker_t_per_code", code="RTSI") == 1
    assert value(second, "index_ticker_t_seen_total") == 50


@pytest.mark.parametrize(
    ("make", "field", "words"),
    [
        (lambda: Counter("ticks_total", "x"), "name", "must start with 'index_ticker_'"),
        (lambda: Counter("index_ticker_ticks", "x"), "name", "must end with '_total'"),
        (lambda: Gauge("index_ticker_bad-name", "x"), "name", "not a Prometheus metric name"),
        (lambda: Gauge("index_ticker_g", "  "), "help", "must say what the metric means"),
        (lambda: Gauge("index_ticker_g", "x", ("bad-label",)), "labels", "not a Prometheus"),
        (lambda: Gauge("index_ticker_g", "x", ("__x",)), "labels", "not a Prometheus"),
        (lambda: Gauge("index_ticker_g", "x", ("a", "a")), "labels", "repeat"),
        (lambda: Histogram("index_ticker_h", "x", ("le",)), "labels", "reserved"),
        (lambda: Histogram("index_ticker_h_sum", "x"), "name", "sample suffix"),
        (lambda: Histogram("index_ticker_h", "x", buckets=(1.0, 1.0)), "buckets", "increase"),
        (lambda: Histogram("index_ticker_h", "x", buckets=()), "buckets", "at least one"),
        (lambda: Histogram("index_ticker_h", "x", buckets=(math.nan,)), "buckets", "finite"),
    ],
)
def test_a_badly_defined_metric_is_refused_naming_the_field(
    make: object, field: str, words: str
) -> None:
    assert callable(make)
    with pytest.raises(ConfigError) as raised:
        make()
    assert raised.value.key == field
    assert words in str(raised.value)


def test_misuse_is_refused_naming_the_field() -> None:
    counter = Counter("index_ticker_t_total", "x", ("source", "field"))
    with pytest.raises(FieldError, match="takes 2 label values") as wrong_count:
        counter.labels("http")
    assert wrong_count.value.field == "labels"
    with pytest.raises(FieldError, match=r"use \.labels"):
        counter.inc()
    with pytest.raises(FieldError, match="label values must be strings"):
        counter.labels("http", 3)  # type: ignore[arg-type]
    with pytest.raises(FieldError, match="only goes up") as down:
        counter.labels("http", "price").inc(-1)
    assert down.value.field == "amount"
    with pytest.raises(FieldError, match="only goes up"):
        counter.labels("http", "price").inc(math.nan)
    with pytest.raises(FieldError, match="NaN") as nan:
        Histogram("index_ticker_t_h", "x").observe(math.nan)
    assert nan.value.field == "value"

    bounded = Gauge("index_ticker_t_bounded", "x", ("code",))
    for number in range(MAX_SERIES):
        bounded.labels(str(number)).set(number)
    with pytest.raises(FieldError, match="free text"):
        bounded.labels("one too many")
    assert len(bounded.collect().samples) == MAX_SERIES

    registry = Registry()
    registry.gauge("index_ticker_t_once", "x")
    with pytest.raises(ConfigError, match="already registered"):
        registry.gauge("index_ticker_t_once", "y")
    other = Registry()
    other.gauge("index_ticker_t_once", "z")
    with pytest.raises(ConfigError, match="rendered twice"):
        render(registry, other)


# --- GET /metrics of a running service ------------------------------------------------------


async def scrape(server: RunningServer) -> Samples:
    async with http_client(server) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    _, samples = parse(response.text)
    return samples


async def test_metrics_follow_ticks_publications_and_the_store(redis_url: str) -> None:
    store = RedisStore(redis_url)
    engine = make_engine(store)
    async with running(make_app(store, engine)) as server, http_client(server) as client:
        before = await scrape(server)
        good = [{"secid": "AAAA", "price": 101.0}, {"secid": "BBBB", "price": 51.0}]
        bad = [
            {"secid": "ZZZZ", "price": 1.0},
            {"secid": "AAAA", "price": -1.0},
            {"secid": "CCCC", "price": 0},
            {"secid": "AAAA", "price": 2.0, "time": "not a time"},
            "not an object",
        ]
        first = await client.post("/v1/ticks", json=[*good, *bad], headers=AUTH)
        second = await client.post("/v1/ticks", json=[good[0]], headers=AUTH)
        refused = await client.post("/v1/ticks", json=good, headers={"Authorization": "Bearer no"})
        assert first.status_code == second.status_code == 200
        assert refused.status_code == 403
        assert first.json()["accepted"] == 2 and len(first.json()["rejected"]) == 5
        start = float(int(time.time()) - 10)  # grid instants in the past: lags are positive
        for step in range(3):
            await server.call(lambda step=step: engine.publish(start + step))  # type: ignore[misc]
        after = await scrape(server)

        def moved(name: str, **labels: str) -> float:
            key = (name, frozenset(labels.items()))
            return after[key] - before.get(key, 0.0)

        assert moved("index_ticker_ingest_ticks_total", outcome="accepted") == 3
        assert moved("index_ticker_ingest_ticks_total", outcome="rejected") == 5
        assert moved("index_ticker_ticks_rejected_total", source="http", field="secid") == 1
        assert moved("index_ticker_ticks_rejected_total", source="http", field="price") == 2
        assert moved("index_ticker_ticks_rejected_total", source="http", field="time") == 1
        assert moved("index_ticker_ticks_rejected_total", source="http", field="tick") == 1
        assert moved("index_ticker_ingest_requests_total", status="2xx") == 2
        assert moved("index_ticker_ingest_requests_total", status="4xx") == 1
        assert moved("index_ticker_ingest_requests_total", status="5xx") == 0

        assert value(after, "index_ticker_engine_publications_total") == 3
        assert value(after, "index_ticker_engine_publications_total") == engine.stats.publications
        assert value(after, "index_ticker_engine_ticks_applied_total") == 3
        assert value(after, "index_ticker_engine_seq", code="IMOEX") == engine.seq["IMOEX"] == 3
        assert value(after, "index_ticker_engine_commit_failures_total") == 0
        assert value(after, "index_ticker_engine_leader") == 1
        assert value(after, "index_ticker_engine_state", state="running") == 1
        assert value(after, "index_ticker_engine_state", state="standby") == 0
        assert value(after, "index_ticker_engine_last_publication_timestamp_seconds") == start + 2
        assert value(after, "index_ticker_engine_recent_publication_lag_count") == 3
        lag = [
            value(after, "index_ticker_engine_recent_publication_lag_seconds", quantile=q)
            for q in ("0.5", "0.99", "1")
        ]
        assert lag == sorted(lag) and lag[0] >= 0
        assert 0 <= value(after, "index_ticker_engine_feed_age_seconds") < 60
        assert value(after, "index_ticker_engine_feed_stale") == 0
        assert value(after, "index_ticker_index_value", code="IMOEX") == pytest.approx(
            engine.last_values["IMOEX"]
        )
        assert value(after, "index_ticker_guard_held_lines") == 0
        assert value(after, "index_ticker_fx_rate") == 90
        assert value(after, "index_ticker_store_up", backend="redis") == 1
        ping = value(after, "index_ticker_store_ping_seconds", backend="redis")
        assert 0 < ping < 1
        assert value(after, "index_ticker_store_channel_up", backend="redis") == 1
        assert value(after, "index_ticker_process_open_fds") >= 3
        assert value(after, "index_ticker_process_resident_memory_bytes") > 10 * 1024 * 1024
        assert value(after, "index_ticker_process_cpu_seconds_total") > 0
        assert value(after, "index_ticker_build_info", version=streaming.__version__) == 1

        openapi = (await client.get("/openapi.json")).json()
        assert "/metrics" not in openapi["paths"]


async def test_websocket_connections_come_and_go_in_the_gauges(redis_url: str) -> None:
    store = RedisStore(redis_url)
    engine = make_engine(store)
    async with running(make_app(store, engine)) as server:
        before = await scrape(server)
        assert value(before, "index_ticker_ws_connections") == 0

        async def connections(expected: int) -> Samples | None:
            samples = await scrape(server)
            return samples if value(samples, "index_ticker_ws_connections") == expected else None

        async with ws_connect(server) as ws:
            await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
            assert (await receive(ws))["type"] == "snapshot"
            during = await wait_until(lambda: connections(1))
            assert value(during, "index_ticker_ws_subscribers", channel="index", code="IMOEX") == 1
            await server.call(lambda: engine.publish(float(int(time.time()))))
            assert (await receive(ws))["type"] == "update"

            async def delivered() -> Samples | None:
                samples = await scrape(server)
                received = value(samples, "index_ticker_broadcast_publications_total")
                return samples if received >= 2 else None  # IMOEX and RTSI

            fanned = await wait_until(delivered)
            assert value(fanned, "index_ticker_ws_updates_dropped_total") == 0
        after = await wait_until(lambda: connections(0))
        assert (
            "index_ticker_ws_subscribers",
            frozenset({("channel", "index"), ("code", "IMOEX")}),
        ) not in after


async def test_an_api_process_counts_ticks_it_queues_and_has_no_engine_metrics(
    redis_url: str,
) -> None:
    store = RedisStore(redis_url)
    async with running(make_app(store, None, ingest_stream=True)) as server:
        before = await scrape(server)
        async with http_client(server) as client:
            answer = await client.post(
                "/v1/ticks",
                json=[{"secid": "AAAA", "price": 100.5}, {"secid": "AAAA", "volume": 1}],
                headers=AUTH,
            )
        assert answer.status_code == 200 and answer.json()["queued"] is True
        after = await scrape(server)
        key = ("index_ticker_ingest_ticks_total", frozenset({("outcome", "accepted")}))
        assert after[key] - before[key] == 1
        missing = (
            "index_ticker_ticks_rejected_total",
            frozenset({("source", "http"), ("field", "price")}),
        )
        assert after[missing] - before.get(missing, 0) == 1
        assert not any(name.startswith("index_ticker_engine_") for name, _ in after)
        assert value(after, "index_ticker_store_up", backend="redis") == 1


async def test_an_engine_reading_the_tick_stream_shows_where_it_stands(redis_url: str) -> None:
    store = RedisStore(redis_url)
    engine = Engine(api_definition(), store, cadence=1, grid=False, ingest_stream=True)
    producer = redis.asyncio.Redis.from_url(redis_url)
    async with running(make_app(store, engine, ingest_stream=True)) as server:
        try:
            before = await scrape(server)
            async with http_client(server) as client:
                answer = await client.post(
                    "/v1/ticks",
                    json=[{"secid": "AAAA", "price": 101.0}, {"secid": "BBBB", "price": 51.0}],
                    headers=AUTH,
                )
            assert answer.status_code == 200 and answer.json()["queued"] is True
            # A feed handler writing to the stream itself: one good trade, two refused ones.
            await producer.xadd(store.ticks_key, {"secid": "CCCC", "price": "401"})
            await producer.xadd(store.ticks_key, {"secid": "ZZZZ", "price": "1"})
            await producer.xadd(store.ticks_key, {"secid": "AAAA", "price": "1", "colour": "red"})

            async def caught_up() -> Samples | None:
                samples = await scrape(server)
                read = samples.get(("index_ticker_stream_entries_read_total", frozenset()))
                kept = samples.get(("index_ticker_stream_length_entries", frozenset()))
                return samples if read == 4 and kept == 4 else None

            after = await wait_until(caught_up, timeout=20)
        finally:
            await producer.aclose()
    rejected = "index_ticker_ticks_rejected_total"
    assert value(after, rejected, source="stream", field="secid") == 1
    assert value(after, rejected, source="stream", field="other") == 1  # not the producer's name
    assert value(after, "index_ticker_stream_ticks_read_total") == 3  # the good ones
    assert value(after, "index_ticker_stream_seconds_behind") >= 0
    assert value(after, "index_ticker_engine_ticks_applied_total") == 3
    accepted = ("index_ticker_ingest_ticks_total", frozenset({("outcome", "accepted")}))
    assert after[accepted] - before[accepted] == 2  # what the API took; the stream reader's own
    assert not any(dict(labels).get("field") == "colour" for _, labels in after)


@pytest.mark.system
async def test_a_scrape_answers_and_reports_redis_down_when_redis_stops(tmp_path: Path) -> None:
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    store = RedisStore(redis_url_for(port))
    engine = make_engine(store)
    try:
        async with running(make_app(store, engine)) as server:
            up = await scrape(server)
            assert value(up, "index_ticker_store_up", backend="redis") == 1
            assert value(up, "index_ticker_store_ping_seconds", backend="redis") >= 0

            stop_redis(redis_process)

            async def down() -> Samples | None:
                samples = await scrape(server)
                channel = value(samples, "index_ticker_store_channel_up", backend="redis")
                return samples if channel == 0 else None

            samples = await wait_until(down, timeout=20)
            assert value(samples, "index_ticker_store_up", backend="redis") == 0
            assert math.isnan(value(samples, "index_ticker_store_ping_seconds", backend="redis"))
            # The engine goes on from memory: its publication still shows, as a failed commit.
            await server.call(lambda: engine.publish(float(int(time.time()))))
            failed = await scrape(server)
            assert value(failed, "index_ticker_engine_commit_failures_total") == 1
            assert value(failed, "index_ticker_engine_backlog") == len(engine.family.codes)
    finally:
        stop_redis(redis_process)


def test_ingest_requests_count_by_status_class() -> None:
    from app.metrics import INGEST_REQUESTS

    before = {status: INGEST_REQUESTS.labels(status).value for status in ("2xx", "4xx", "5xx")}
    for status_code in (200, 201, 413, 429, 503):
        count_ingest_request(status_code)
    assert INGEST_REQUESTS.labels("2xx").value - before["2xx"] == 2
    assert INGEST_REQUESTS.labels("4xx").value - before["4xx"] == 2
    assert INGEST_REQUESTS.labels("5xx").value - before["5xx"] == 1


@pytest.mark.system
def test_process_figures_are_those_of_the_process_that_renders_them() -> None:
    script = (
        "import asyncio, os, sys\n"
        "from app.metrics import render_metrics\n"
        "from streaming.store.memory import MemoryStore\n"
        "held = [open(os.devnull) for _ in range(40)]\n"
        "async def both():\n"
        "    text = await render_metrics(engine=None, store=MemoryStore())\n"
        "    return text, len(os.listdir('/proc/self/fd'))\n"
        "text, listed = asyncio.run(both())\n"
        "sys.stdout.write(text.decode())\n"
        "sys.stderr.write(str(listed))\n"
    )
    launched = time.time()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    finished = time.time()
    _, samples = parse(done.stdout)
    # The kernel's boot time is in whole seconds: the start is known to about a second.
    started = value(samples, "index_ticker_process_start_time_seconds")
    assert launched - 1.5 <= started <= finished + 1.5
    # The 40 files the script holds open are in the count, which is what /proc lists (less
    # the descriptor the listing itself opens).
    assert value(samples, "index_ticker_process_open_fds") == int(done.stderr) - 1 >= 43
    assert value(samples, "index_ticker_process_resident_memory_bytes") > 1024 * 1024
    assert value(samples, "index_ticker_process_cpu_seconds_total") > 0
    assert value(samples, "index_ticker_process_max_fds") >= 43
    assert value(samples, "index_ticker_store_up", backend="memory") == 1
    assert not any(name.startswith("index_ticker_ws_") for name, _ in samples)
