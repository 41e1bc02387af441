"""Scale-out: one engine and 1, 2 or 4 stateless API processes (`index-ticker api`) sharing a
Redis, the same total number of WebSocket subscribers spread evenly over the API processes.
Baseline: the same subscribers on one API process, in the same run.

    python -m bench.scaleout [--clients 4000] [--seconds 20] [--quick]

Each API process gets every publication once through Redis pub/sub and fans it out to its own
subscribers; latency is receipt minus grid time at the subscribers (raw-protocol clients in load
processes of their own, bench/wsload.py), CPU is each API process's over the window. On this
2-core machine the processes share two cores, so the table shows the cost of the split and the
per-process load, not added capacity; docs/scaling.md turns these figures into the model for
100 000+ subscribers.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness import (
    Table,
    machine,
    percentile_ms,
    proc_cpu_seconds,
    proc_rss_kib,
    ratio,
    sleep_until,
    start_redis,
    start_service,
    stop_process,
)
from bench.wsload import LoadHandle, LoadReport, LoadSpec, raise_open_files

CODES = ("IMOEX", "RTSI")
CADENCE = 1


@dataclass
class Scale:
    """The figures of one configuration."""

    processes: int
    clients: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_grid: float  # all API processes together
    engine_cpu_ms_per_grid: float
    redis_cpu_ms_per_grid: float
    kib_per_connection: float
    expected: int
    received: int
    missing: int
    duplicates: int


def measure(processes: int, clients: int, seconds: int, directory: Path) -> Scale:
    """One configuration, with a fresh Redis, engine and API processes."""
    redis_process, redis_url = start_redis(directory / f"redis-{processes}")
    namespace = f"scaleout-{processes}"
    started: list[subprocess.Popen[bytes]] = []
    handles: list[LoadHandle] = []
    try:
        engine, _, _ = start_service(
            directory, "--redis-url", redis_url, "--namespace", namespace, "--cadence",
            str(CADENCE), "--feed", "simulator", "--ingest-stream", name=f"engine-{processes}",
        )  # fmt: skip
        started.append(engine)
        share = math.ceil(clients / processes)
        settings = f"ws_max_connections_per_address = {share + 100}\n"
        apis = []
        for n in range(processes):
            api, port, _ = start_service(
                directory, "--redis-url", redis_url, "--namespace", namespace,
                command="api", settings=settings, name=f"api-{processes}-{n}",
            )  # fmt: skip
            started.append(api)
            apis.append((api, port))
        time.sleep(2)
        rss_before = sum(proc_rss_kib(api.pid) for api, _ in apis)
        first_number = 0
        for n, (_, port) in enumerate(apis):
            count = min(share, clients - n * share)
            spec = LoadSpec(f"ws://127.0.0.1:{port}/v1/ws", count, CODES, first_number=first_number)
            first_number += count
            handles.append(LoadHandle(spec))
        connected = sum(handle.ready(timeout=300)[0] for handle in handles)
        time.sleep(3)
        rss_after = sum(proc_rss_kib(api.pid) for api, _ in apis)
        first = math.ceil(time.time()) + CADENCE
        grids = [first + CADENCE * n for n in range(seconds)]
        pids = [api.pid for api, _ in apis]
        sleep_until(first - CADENCE / 2)
        wall_start = time.time()
        cpu_start = [proc_cpu_seconds(pid) for pid in pids]
        engine_start = proc_cpu_seconds(engine.pid)
        redis_start = proc_cpu_seconds(redis_process.pid)
        sleep_until(grids[-1] + CADENCE / 2)
        instants = (time.time() - wall_start) / CADENCE
        api_cpu = sum(proc_cpu_seconds(pid) - s for pid, s in zip(pids, cpu_start, strict=True))
        engine_cpu = proc_cpu_seconds(engine.pid) - engine_start
        redis_cpu = proc_cpu_seconds(redis_process.pid) - redis_start
        reports: list[LoadReport] = [handle.report(grids, wait=30) for handle in handles]
    finally:
        for handle in handles:
            handle.kill()
        for process in reversed(started):
            stop_process(process)
        stop_process(redis_process)
    latencies = np.concatenate([r.latencies for r in reports])
    return Scale(
        processes=processes,
        clients=connected,
        p50_ms=percentile_ms(latencies, 50),
        p99_ms=percentile_ms(latencies, 99),
        max_ms=float(latencies.max()) * 1000 if len(latencies) else float("nan"),
        cpu_ms_per_grid=api_cpu * 1000 / instants,
        engine_cpu_ms_per_grid=engine_cpu * 1000 / instants,
        redis_cpu_ms_per_grid=redis_cpu * 1000 / instants,
        kib_per_connection=(rss_after - rss_before) / max(connected, 1),
        expected=sum(r.expected for r in reports),
        received=sum(r.received for r in reports),
        missing=sum(r.missing for r in reports),
        duplicates=sum(r.duplicates for r in reports),
    )


def tables(
    quick: bool = False, clients: int | None = None, seconds: int | None = None
) -> list[Table]:
    clients = clients or (200 if quick else 4000)
    seconds = seconds or (5 if quick else 20)
    raise_open_files()
    with tempfile.TemporaryDirectory(prefix="scaleout-") as name:
        runs = [measure(k, clients, seconds, Path(name)) for k in (1, 2, 4)]
    baseline = runs[0]
    table = Table(
        "Scale-out over Redis",
        f"python -m bench.scaleout --clients {clients} --seconds {seconds}",
        f"{clients:,} subscribers to IMOEX and RTSI spread evenly over 1, 2 or 4 `index-ticker"
        " api` processes fed by one engine (`serve --redis-url … --ingest-stream`, simulator"
        f" feed, cadence {CADENCE} s) through Redis pub/sub; {seconds} grid instants measured."
        " Latency = receipt minus grid time. Baseline: one API process.",
        ["API processes", "subscribers each", "p50 ms", "p99 ms", "max ms", "p99 vs 1 process",
         "API CPU ms/grid (all)", "engine CPU ms/grid", "Redis CPU ms/grid", "KiB/conn",
         "delivered"],
    )  # fmt: skip
    for run in runs:
        if run.clients < clients:
            table.notes.append(
                f"{run.processes} API processes: {run.clients:,} of {clients:,} subscribers"
                " connected in time; the figures are over those"
            )
        delivered = f"{run.received:,}/{run.expected:,}"
        if run.missing or run.duplicates:
            delivered += f" ({run.missing:,} missing, {run.duplicates:,} twice)"
        table.add(
            run.processes, math.ceil(run.clients / run.processes), run.p50_ms, run.p99_ms,
            run.max_ms, ratio(run.p99_ms, baseline.p99_ms), run.cpu_ms_per_grid,
            run.engine_cpu_ms_per_grid, run.redis_cpu_ms_per_grid, run.kib_per_connection,
            delivered,
        )  # fmt: skip
    table.notes.append(
        "All processes share the machine's 2 cores with the load processes: more API processes"
        " cannot add CPU here; the per-process figures feed the model in docs/scaling.md."
    )
    table.notes.append(f"Machine: {machine()}")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4000, help="subscribers in all")
    parser.add_argument("--seconds", type=int, default=20, help="grid instants measured")
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 5 s")
    args = parser.parse_args()
    chosen = (None, None) if args.quick else (args.clients, args.seconds)
    for table in tables(args.quick, *chosen):
        print(table.markdown())


if __name__ == "__main__":
    main()
