"""Grid precision: how late each publication is committed after its grid instant, p50/p99 over a
run at the fastest cadence (1 s), idle and under tick load, against the floor of the same
machine: a bare event loop of the same kind sleeping to the same grid and doing nothing else.

    python -m bench.grid [--duration 120] [--rate 20000] [--quick]

The service runs as a subprocess (`index-ticker serve --cadence 1 --feed none`); ticks come from
a separate load process posting batches to POST /v1/ticks — of the service itself, or in the last
row of a separate `index-ticker api` process that appends them to the engine's ingest stream (the
split deployment, where the engine's event loop serves no HTTP load); the engine records the lag
of every publication (grid instant to commit) and reports p50/p99/max in /readyz
(`publication_lag_ms`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import random
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness import (
    TOKEN,
    Table,
    machine,
    percentile_ms,
    start_redis,
    start_service,
    stop_process,
)

BATCH = 500  # ticks per POST
WALK_SIGMA = 0.0005  # relative price step per tick
WALK_BAND = 0.03  # prices stay this close to the reference (far inside the guard)


def bare_loop(duration: float, results: Any) -> None:
    """The floor: the service's loop policy (uvloop when installed, as uvicorn picks it) waking
    at each 1 s grid instant the way the engine does, with no other work."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def run() -> list[float]:
        lags = []
        end = time.time() + duration
        while (now := time.time()) < end:
            target = math.floor(now) + 1.0
            while (delay := target - time.time()) > 0:
                await asyncio.sleep(delay)
            lags.append(time.time() - target)
        return lags

    results.put(asyncio.run(run()))


def post_ticks(port: int, rate: float, stop: Event, counts: Any) -> None:
    """Tick load: batches of BATCH ticks posted at `rate` ticks/s over one keep-alive connection."""
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=10) as client:
        lines = client.get(f"{base}/v1/indices/IMOEX/constituents").json()["constituents"]
        reference = {line["secid"]: float(line["price"]) for line in lines}
        prices = dict(reference)
        secids = list(reference)
        rng = random.Random(7)
        sent = rejected = 0
        interval = BATCH / rate
        next_at = time.monotonic()
        while not stop.is_set():
            batch = []
            for _ in range(BATCH):
                secid = rng.choice(secids)
                ref = reference[secid]
                price = prices[secid] * math.exp(rng.gauss(0, WALK_SIGMA))
                price = min(max(price, ref * (1 - WALK_BAND)), ref * (1 + WALK_BAND))
                prices[secid] = price
                batch.append({"secid": secid, "price": round(price, 4)})
            response = client.post(f"{base}/v1/ticks", json=batch, headers=headers)
            body = response.json()
            sent += body.get("accepted", 0)
            rejected += len(body.get("rejected", [])) if response.status_code == 200 else BATCH
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    counts.put((sent, rejected))


def service_lags(
    directory: Path,
    duration: float,
    rate: float,
    redis_url: str | None,
    name: str,
    split: bool = False,
) -> tuple[dict[str, Any], int, int]:
    """Run the service for `duration` s with `rate` ticks/s posted; its lag summary. `split`:
    the ticks go to a separate `index-ticker api` process in front of the engine's Redis (the
    split deployment), not to the engine's own HTTP server."""
    flags = ["--cadence", "1", "--feed", "none"]
    namespace = f"grid-{name}"
    if redis_url:
        flags += ["--redis-url", redis_url, "--namespace", namespace, "--ingest-stream"]
    settings = "ingest_rate_per_second = 10000000\ningest_burst = 10000000\n"
    process, port, _ = start_service(directory, *flags, settings=settings, name=name)
    api = None
    stop = mp.Event()
    counts: Any = mp.Queue()
    load = None
    try:
        post_port = port
        if split and redis_url:
            api, post_port, _ = start_service(
                directory, "--redis-url", redis_url, "--namespace", namespace,
                command="api", settings=settings, name=f"{name}-api",
            )  # fmt: skip
            time.sleep(2)  # the engine's first publications, which the load's first GET reads
        if rate:
            load = mp.Process(target=post_ticks, args=(post_port, rate, stop, counts))
            load.start()
        time.sleep(duration)
        stop.set()
        sent = rejected = 0
        if load is not None:
            sent, rejected = counts.get(timeout=30)
            load.join(10)
        engine = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["engine"]
        return engine["publication_lag_ms"], sent, rejected
    finally:
        stop.set()
        if api is not None:
            stop_process(api)
        stop_process(process)


def tables(quick: bool = False, duration: float | None = None, rate: float = 20_000) -> list[Table]:
    duration = duration or (10.0 if quick else 120.0)
    directory = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    table = Table(
        "Grid precision",
        f"python -m bench.grid --duration {duration:.0f} --rate {rate:.0f}",
        "publication lag = commit time minus grid instant, every publication at a 1 s cadence"
        f" over {duration:.0f} s, the service idle and under {rate:,.0f} ticks/s posted in"
        f" batches of {BATCH} from a separate process. Baseline: a bare event loop (uvloop)"
        " waking at the same grid instants, doing nothing else (the machine's floor).",
        ["run", "publications", "ticks applied", "p50 ms", "p99 ms", "max ms", "p99 vs floor"],
    )
    results: Any = mp.Queue()
    floor_process = mp.Process(target=bare_loop, args=(duration, results))
    floor_process.start()
    floor = np.asarray(results.get(timeout=duration + 30))
    floor_process.join()
    floor_p99 = percentile_ms(floor, 99)
    table.add(
        "bare event loop, no work (baseline)",
        len(floor),
        "—",
        percentile_ms(floor, 50),
        floor_p99,
        float(floor.max() * 1000),
        "1x",
    )
    redis_process, redis_url = start_redis(directory / "redis")
    try:
        runs = [
            ("service, memory store, idle", 0.0, None, False),
            (f"service, memory store, {rate:,.0f} ticks/s", rate, None, False),
            (f"service, Redis + ingest stream, {rate:,.0f} ticks/s", rate, redis_url, False),
            (
                f"engine + separate API process taking the ticks, Redis + ingest stream, "
                f"{rate:,.0f} ticks/s",
                rate,
                redis_url,
                True,
            ),
        ]
        for number, (label, load, url, split) in enumerate(runs):
            lag, sent, rejected = service_lags(
                directory, duration, load, url, f"run{number}", split=split
            )
            if rejected:
                table.notes.append(f"{label}: {rejected} ticks rejected by the service")
            table.add(
                label,
                lag["count"],
                sent,
                lag["p50"],
                lag["p99"],
                lag["max"],
                f"{lag['p99'] / floor_p99:.1f}x",
            )
    finally:
        stop_process(redis_process)
    table.notes.append(f"machine: {machine()}")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, help="seconds per run (default 120)")
    parser.add_argument("--rate", type=float, default=20_000, help="ticks/s posted under load")
    parser.add_argument("--quick", action="store_true", help="10 s runs")
    args = parser.parse_args()
    for table in tables(args.quick, args.duration, args.rate):
        print(table.markdown())


if __name__ == "__main__":
    main()
