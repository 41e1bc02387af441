"""Ingest throughput: ticks per second from arrival until reflected in the index.

1. Through the durable Redis Stream into the engine: a producer process XADDs batches the way
   POST /v1/ticks --ingest-stream does (RedisStore.append_ticks), or one trade per entry as a feed
   handler does; the engine reads the stream in its consumer group and
   applies it. Timed from the producer's first entry until the engine has applied every tick;
   the capitalizations and the applied count are checked against a numpy reference over the
   last price of each line. Baseline of the same run: the per-tick engine path (every entry
   decoded into Tick objects and applied one by one through the guard).
2. Through POST /v1/ticks of a service subprocess (--feed none), straight into the engine and
   with --ingest-stream, from a load process with several connections: timed from the first
   request until /readyz reports every tick applied. Baseline of the same run: batches of 10
   ticks (below the batch threshold: the per-tick path, one request per 10 ticks).

    python -m bench.ingest [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.harness import (
    TOKEN,
    Table,
    machine,
    ratio,
    start_redis,
    start_service,
    stop_process,
)
from streaming.engine import Engine, SubmitReport
from streaming.methodology.definition import Family, load_family
from streaming.store.redis import RedisStore
from streaming.ticks import Tick, TickColumns

NAMESPACE = "bench-ingest"
# Load processes start afresh: a fork inside a running event loop inherits that loop.
CONTEXT = multiprocessing.get_context("spawn")
ONE_TRADE_PIPELINE = 1_000  # one-trade entries XADDed per round trip
STEP = 0.002  # relative spread of prices around the reference: far inside the guard


def make_ticks(family: Family, count: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(secids, line codes, prices): trades of the family's lines near their reference prices."""
    universe = family.universe()
    secids = list(universe.secids)
    reference = np.array([c.reference_price or 1.0 for c in universe.constituents])
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, len(secids), count)
    prices = np.round(reference[codes] * np.exp(rng.normal(0, STEP, count)), 4)
    return secids, codes, prices


def reference_capitalization(
    family: Family, secids: list[str], codes: np.ndarray, prices: np.ndarray
) -> dict[str, float]:
    """Each base's capitalization at the last price of each line (roubles), with numpy."""
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    last_positions = len(codes) - 1 - first_from_end
    last = {secids[codes[i]]: prices[i] for i in last_positions.tolist()}
    result = {}
    for definition in family.definitions:
        base = definition.base.constituents
        price = np.array([last.get(c.secid, c.reference_price) for c in base], dtype=float)
        result[definition.name] = float(price @ np.array([c.index_shares for c in base]))
    return result


def produce(url: str, count: int, batch: int, seed: int, started: Any) -> None:
    """The load process: XADD the ticks in batches, as the ingest endpoint does."""

    async def run() -> None:
        family = load_family()
        secids, codes, prices = make_ticks(family, count, seed)
        epochs = np.full(count, time.time())
        store = RedisStore(url, NAMESPACE)
        await store.open()
        started.set()
        if batch == 1:  # one trade per entry, as a feed handler XADDs them (pipelined)
            redis = store._redis()
            for start in range(0, count, ONE_TRADE_PIPELINE):
                pipe = redis.pipeline(transaction=False)
                for i in range(start, min(count, start + ONE_TRADE_PIPELINE)):
                    fields = {"secid": secids[codes[i]], "price": repr(float(prices[i]))}
                    pipe.xadd(store.ticks_key, fields)  # type: ignore[arg-type]
                await pipe.execute()
            await store.close()
            return
        for start in range(0, count, batch):
            chunk = slice(start, start + batch)
            await store.append_ticks(
                TickColumns(secids, codes[chunk], prices[chunk], epochs[chunk])
            )
        await store.close()

    asyncio.run(run())


class TickByTickEngine(Engine):
    """The engine as it applied ticks before the batch path: Tick objects, one at a time."""

    def submit_report(self, ticks: list[Tick] | TickColumns) -> SubmitReport:  # type: ignore[override]
        return self.submit_each(list(ticks))


async def stream_run(
    url: str, family: Family, count: int, batch: int, seed: int, tick_by_tick: bool
) -> tuple[float, int, float]:
    """(seconds, ticks applied, largest relative capitalization gap to the reference)."""
    store = RedisStore(url, NAMESPACE)
    await store.open()
    await store._redis().delete(store.ticks_key, store.state_key)
    kind = TickByTickEngine if tick_by_tick else Engine
    engine = kind(family, store, grid=False, live_interval=None, ingest_stream=True)
    ready = CONTEXT.Event()
    producer = CONTEXT.Process(target=produce, args=(url, count, batch, seed, ready))
    if batch == 1:
        # One trade per entry: a Python producer is slower than the reader, so the stream is
        # filled first and the engine timed draining it.
        producer.start()
        producer.join()
        started = time.perf_counter()
        await engine.start()
    else:
        await engine.start()
        producer.start()
        while not ready.is_set() and producer.exitcode is None:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
    while engine.stats.ticks_applied < count and producer.exitcode in (None, 0):
        await asyncio.sleep(0.002)
    seconds = time.perf_counter() - started
    producer.join()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(engine.stop(), 5)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(store.close(), 5)
    secids, codes, prices = make_ticks(family, count, seed)
    expected = reference_capitalization(family, secids, codes, prices)
    calc = engine.calculator
    got = {g.name: float(calc.capitalization[j]) for j, g in enumerate(calc.groups)}
    gap = max(abs(got[name] - value) / value for name, value in expected.items())
    return seconds, engine.stats.ticks_applied, gap


def stream_table(quick: bool) -> Table:
    family = load_family()
    count = 200_000 if quick else 2_000_000
    baseline_count = 20_000 if quick else 200_000
    table = Table(
        "Ingest through the Redis Stream",
        "python -m bench.ingest" + (" --quick" if quick else ""),
        "ticks/s from the producer's first XADD (a separate process, batches encoded as POST "
        "/v1/ticks --ingest-stream writes them, or one trade per entry as a feed handler "
        "writes them: secid and price fields; those are written first and timed from the "
        "engine's start) until the engine (consumer group, 500 entries per read) has applied "
        "every tick; "
        "shipped family (8 indices), price guard on. Baseline: the per-tick engine path.",
        ["engine path", "batch", "ticks", "seconds", "ticks/s", "vs per-tick", "MC gap"],
    )
    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(Path(directory))
        try:
            runs = [
                ("per tick (baseline)", 1_000, baseline_count, True),
                ("batch", 1_000, count, False),
                ("batch", 10_000, count, False),
                ("one trade per entry", 1, count // 4, False),
            ]
            baseline = 0.0
            for name, batch, n, tick_by_tick in runs:
                seconds, applied, gap = asyncio.run(
                    stream_run(url, family, n, batch, 1, tick_by_tick)
                )
                rate = applied / seconds
                baseline = baseline or rate
                table.add(name, batch, applied, seconds, rate, ratio(rate, baseline), f"{gap:.1e}")
        finally:
            stop_process(redis)
    table.notes.append(
        "MC gap: largest relative difference between the engine's capitalizations and numpy "
        "over the last price of each line; every tick was applied (the ticks column)."
    )
    return table


def post_load(port: int, bodies: list[bytes], connections: int) -> None:
    """The load process: POST every body, `connections` at a time."""

    async def run() -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=120
        ) as client:
            queue = list(reversed(bodies))

            async def worker() -> None:
                while queue:
                    answer = await client.post("/v1/ticks", content=queue.pop())
                    answer.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(connections)))

    asyncio.run(run())


def applied(port: int) -> int:
    status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
    return int(status["engine"]["ticks_applied"])


def post_run(port: int, count: int, batch: int, connections: int, seed: int) -> float:
    family = load_family()
    secids, codes, prices = make_ticks(family, count, seed)
    names = [secids[c] for c in codes.tolist()]
    bodies = [
        orjson.dumps(
            [
                {"secid": s, "price": p}
                for s, p in zip(names[i : i + batch], prices[i : i + batch].tolist(), strict=True)
            ]
        )
        for i in range(0, count, batch)
    ]
    before = applied(port)
    load = CONTEXT.Process(target=post_load, args=(port, bodies, connections))
    started = time.perf_counter()
    load.start()
    load.join()
    while applied(port) < before + count:
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    if load.exitcode != 0:
        raise SystemExit("the load process failed")
    return seconds


def post_table(quick: bool) -> Table:
    count = 50_000 if quick else 500_000
    baseline_count = 5_000 if quick else 20_000
    connections = 4
    table = Table(
        "Ingest through POST /v1/ticks",
        "python -m bench.ingest" + (" --quick" if quick else ""),
        f"ticks/s from the first request ({connections} connections from a separate process) "
        "until /readyz reports every tick applied by the engine; service with --feed none, "
        "straight into the engine or through the Redis Stream (--ingest-stream). Baseline: "
        "batches of 10 ticks straight into the engine (the per-tick path).",
        ["mode", "batch", "ticks", "seconds", "ticks/s", "vs baseline"],
    )
    settings = "ingest_rate_per_second = 0\n"
    with tempfile.TemporaryDirectory() as directory:
        redis, url = start_redis(Path(directory))
        services = []
        try:
            straight, port, _ = start_service(
                Path(directory), "--feed", "none", settings=settings, name="straight"
            )
            services.append(straight)
            streamed, stream_port, _ = start_service(
                Path(directory),
                "--feed",
                "none",
                settings=settings
                + f'redis_url = "{url}"\nnamespace = "{NAMESPACE}-post"\ningest_stream = true\n',
                name="streamed",
            )
            services.append(streamed)
            baseline = baseline_count / post_run(port, baseline_count, 10, connections, 2)
            table.add("straight (baseline)", 10, baseline_count, baseline_count / baseline,
                      baseline, "1.00x")  # fmt: skip
            for mode, target in (("straight", port), ("--ingest-stream", stream_port)):
                for batch in (1_000, 10_000):
                    seconds = post_run(target, count, batch, connections, 3)
                    rate = count / seconds
                    table.add(mode, batch, count, seconds, rate, ratio(rate, baseline))
        finally:
            for process in services:
                stop_process(process)
            stop_process(redis)
    return table


def tables(quick: bool = False) -> list[Table]:
    result = [stream_table(quick), post_table(quick)]
    result[-1].notes.append(machine())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run to check the bench")
    args = parser.parse_args()
    for table in tables(args.quick):
        print(table.markdown())


if __name__ == "__main__":
    main()
