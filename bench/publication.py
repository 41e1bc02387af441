"""How long one publication takes: engine.publish() (re-sum, build, commit) against the memory
store and a real Redis server, with the bare numpy re-sum as the baseline of the same run.

    python -m bench.publication [--rounds 2000] [--redis-server redis-server]

Prints a table; figures go to docs/benchmarks.md by hand with the date and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import numpy as np

from streaming.engine import Engine
from streaming.methodology.definition import load_definition, load_family
from streaming.store.base import Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore
from streaming.ticks import Tick

GRID = datetime(2026, 11, 20, 7, 0, tzinfo=UTC).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(rounds: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    timings = []
    for n in range(rounds):
        started = time.perf_counter()
        await step(n)
        timings.append(time.perf_counter() - started)
    return timings


async def engine_rounds(store: Store, rounds: int, family: bool = False) -> list[float]:
    definition = load_family() if family else load_definition()
    await store.open()
    engine = Engine(definition, store, clock=lambda: GRID)
    rng = np.random.default_rng(1)
    secids = engine.calculator.secids
    moment = datetime.fromtimestamp(GRID, UTC)

    async def step(n: int) -> None:
        i = int(rng.integers(len(secids)))
        engine.submit([Tick(secids[i], float(engine.calculator.prices[0, i]) * 1.0001, moment)])
        await engine.publish(GRID + n)

    try:
        await measure(50, step)  # warm up
        return await measure(rounds, step)
    finally:
        await store.close()


async def resum_rounds(rounds: int) -> list[float]:
    calculator = Engine(load_definition(), MemoryStore(), clock=lambda: GRID).calculator

    async def step(n: int) -> None:
        calculator.resum()

    return await measure(rounds, step)


def row(name: str, timings: list[float], baseline: float) -> str:
    p50 = statistics.median(timings) * 1e3
    p99 = float(np.percentile(timings, 99)) * 1e3
    return f"| {name} | {p50:.3f} | {p99:.3f} | {p50 / baseline:.0f}x |"


async def main_async(rounds: int, redis_binary: str) -> None:
    baseline_timings = await resum_rounds(rounds)
    baseline = statistics.median(baseline_timings) * 1e3
    results = [("numpy re-sum of MC alone (baseline)", baseline_timings)]
    results.append(("publish IMOEX+RTSI, memory store", await engine_rounds(MemoryStore(), rounds)))
    results.append(
        (
            "publish the shipped family (8 indices), memory store",
            await engine_rounds(MemoryStore(), rounds, family=True),
        )
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [
                redis_binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            store = RedisStore(f"redis://127.0.0.1:{port}/0")
            results.append(
                ("publish IMOEX+RTSI, Redis store (loopback)", await engine_rounds(store, rounds))
            )
        finally:
            server.terminate()
            server.wait()
    lines = load_definition().base
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {platform.python_version()},"
        f" {len(lines)} lines, 2 indices, {rounds} rounds"
    )
    print("| what | p50 ms | p99 ms | p50 vs baseline |")
    print("|---|---|---|---|")
    for name, timings in results:
        print(row(name, timings, baseline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2000, help="publications measured per row")
    parser.add_argument(
        "--redis-server",
        default=shutil.which("redis-server") or "redis-server",
        help="redis-server binary to start on a free port",
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.rounds, args.redis_server))


if __name__ == "__main__":
    main()
