"""How long one publication takes: engine.publish() (re-sum, build, commit) against the memory
store and a real Redis server, with the bare numpy re-sum as the baseline of the same run.

    python -m bench.publication [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.harness import Table, machine, percentile_ms, start_redis, stop_process
from streaming.engine import Engine
from streaming.methodology.definition import load_definition, load_family
from streaming.store.base import Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore
from streaming.ticks import Tick

GRID = datetime(2026, 11, 20, 7, 0, tzinfo=UTC).timestamp()


async def measure(rounds: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    timings = []
    for n in range(rounds):
        started = time.perf_counter()
        await step(n)
        timings.append(time.perf_counter() - started)
    return timings


async def engine_rounds(store: Store, rounds: int, family: bool = False) -> list[float]:
    """Publish `rounds` times, one tick applied before each (the tick is not timed)."""
    definition = load_family() if family else load_definition()
    await store.open()
    engine = Engine(definition, store, clock=lambda: GRID)
    rng = np.random.default_rng(1)
    secids = engine.calculator.secids
    moment = datetime.fromtimestamp(GRID, UTC)
    timings = []
    try:
        for n in range(rounds + 50):
            i = int(rng.integers(len(secids)))
            price = float(engine.calculator.prices[0, i]) * 1.0001
            engine.submit([Tick(secids[i], price, moment)])
            started = time.perf_counter()
            await engine.publish(GRID + n)
            timings.append(time.perf_counter() - started)
        return timings[50:]  # the first ones warm up
    finally:
        await store.close()


async def resum_rounds(rounds: int) -> list[float]:
    calculator = Engine(load_definition(), MemoryStore(), clock=lambda: GRID).calculator

    async def step(n: int) -> None:
        calculator.resum()

    return await measure(rounds, step)


async def measure_all(rounds: int) -> list[tuple[str, list[float]]]:
    results = [("numpy re-sum of MC alone (baseline)", await resum_rounds(rounds))]
    results.append(("publish IMOEX+RTSI, memory store", await engine_rounds(MemoryStore(), rounds)))
    results.append(
        (
            "publish the shipped family (8 indices), memory store",
            await engine_rounds(MemoryStore(), rounds, family=True),
        )
    )
    with tempfile.TemporaryDirectory() as directory:
        server, url = start_redis(Path(directory))
        try:
            results.append(
                (
                    "publish IMOEX+RTSI, Redis store (loopback)",
                    await engine_rounds(RedisStore(url), rounds),
                )
            )
            results.append(
                (
                    "publish the shipped family, Redis store (loopback)",
                    await engine_rounds(RedisStore(url), rounds, family=True),
                )
            )
        finally:
            stop_process(server)
    return results


def tables(quick: bool = False, rounds: int | None = None) -> list[Table]:
    rounds = rounds or (200 if quick else 2000)
    results = asyncio.run(measure_all(rounds))
    table = Table(
        "One publication",
        f"python -m bench.publication --rounds {rounds}",
        "`Engine.publish()` after one tick: re-sum MC with numpy, build every publication (status,"
        " stale lines, top contributions), snapshot the state and commit state + latest + history"
        " + fan-out in one step. Baseline: the bare numpy re-sum.",
        ["what", "p50 ms", "p99 ms", "p50 vs baseline"],
    )
    baseline = statistics.median(results[0][1])
    for name, timings in results:
        table.add(
            name,
            percentile_ms(timings, 50),
            percentile_ms(timings, 99),
            f"{statistics.median(timings) / baseline:.0f}x",
        )
    table.notes.append(f"{rounds} publications per row; machine: {machine()}")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000, help="publications measured per row")
    parser.add_argument("--quick", action="store_true", help="200 rounds")
    args = parser.parse_args()
    for table in tables(args.quick, None if args.quick else args.rounds):
        print(table.markdown())


if __name__ == "__main__":
    main()
