"""REST throughput: requests/s of the read endpoints under wrk, against a bare Starlette app that
answers exactly the same bytes on the same uvicorn with the same options (bench/bare.py).

    python -m bench.rest [--quick] [--duration 5] [--rounds 5] [--connections 64]

The service runs as `index-ticker serve --cadence 1 --feed none`, once with the memory store and
once with --redis-url against a private redis-server; it is measured after its first publication.
wrk runs in its own process on loopback, one thread, 64 connections. Each round measures the bare
app and both services back to back, endpoint by endpoint, so that the noise of a shared machine
falls on all three alike; the tables show the median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import (
    Table,
    free_port,
    machine,
    proc_cpu_seconds,
    start_redis,
    start_service,
    stop_process,
)

ENDPOINTS = ("/v1/indices/IMOEX", "/v1/indices", "/v1/indices/IMOEX/constituents")
WRK = shutil.which("wrk") or "/usr/bin/wrk"
FIRST_PUBLICATION_TIMEOUT = 15.0  # seconds for the service to publish its first values

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True, slots=True)
class Run:
    """One wrk run against one server."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    cpu_us_per_request: float  # server process CPU (user + system) per answered request


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """(requests/s, p50 ms, p99 ms, requests, errors) from `wrk --latency` output."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if rate is None or total is None:
        raise ValueError(f"no request rate in wrk output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        errors += int(non_2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets is not None:
        errors += sum(int(group) for group in sockets.groups())
    return float(rate.group(1)), latency("50"), latency("99"), int(total.group(1)), errors


def run_wrk(url: str, pid: int, duration: float, connections: int) -> Run:
    """wrk against one URL in a process of its own, with the server's CPU time over the run."""
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    cpu_before = proc_cpu_seconds(pid)
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = proc_cpu_seconds(pid) - cpu_before
    rate, p50, p99, requests, errors = parse_wrk(output)
    return Run(rate, p50, p99, errors, 1e6 * cpu / requests if requests else float("nan"))


def wait_for_publication(port: int) -> None:
    """Until GET /v1/indices/IMOEX answers 200: the first publication has been made."""
    deadline = time.monotonic() + FIRST_PUBLICATION_TIMEOUT
    while time.monotonic() < deadline:
        if httpx.get(f"http://127.0.0.1:{port}/v1/indices/IMOEX").status_code == 200:
            return
        time.sleep(0.2)
    raise SystemExit(f"no publication on port {port} within {FIRST_PUBLICATION_TIMEOUT} s")


def fetch_bodies(port: int) -> dict[str, dict[str, str]]:
    """The service's answers to the measured endpoints: body text and content type."""
    bodies = {}
    for path in ENDPOINTS:
        response = httpx.get(f"http://127.0.0.1:{port}{path}")
        response.raise_for_status()
        bodies[path] = {"body": response.text, "content_type": response.headers["content-type"]}
    return bodies


def start_bare(
    directory: Path, bodies: dict[str, dict[str, str]]
) -> tuple[subprocess.Popen[bytes], int]:
    """bench/bare.py as a subprocess answering these bodies; (process, port)."""
    path = directory / "bodies.json"
    path.write_text(json.dumps(bodies))
    port = free_port()
    log = (directory / "bare.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare", "--port", str(port), "--bodies", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bare app exited:\n{(directory / 'bare.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("bare app did not answer")


def median_run(runs: list[Run]) -> Run:
    """The median of each figure over the rounds (errors summed)."""
    return Run(
        statistics.median(run.requests_per_second for run in runs),
        statistics.median(run.p50_ms for run in runs),
        statistics.median(run.p99_ms for run in runs),
        sum(run.errors for run in runs),
        statistics.median(run.cpu_us_per_request for run in runs),
    )


def median_ratio(runs: list[Run], baselines: list[Run], figure: str) -> float:
    """The median over the rounds of run / baseline of the same round: a load that comes and
    goes on a shared machine falls on both sides of each ratio."""
    return statistics.median(
        float(getattr(run, figure)) / float(getattr(base, figure))
        for run, base in zip(runs, baselines, strict=True)
    )


def measure(
    directory: Path, duration: float, rounds: int, connections: int
) -> tuple[dict[str, dict[str, list[Run]]], dict[str, int]]:
    """{endpoint: {server: runs, one per round}} and the body size per endpoint, bytes."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis, redis_url = start_redis(directory / "redis")
        processes.append(redis)
        flags = ("--cadence", "1", "--feed", "none")
        memory, memory_port, _ = start_service(directory, *flags, name="memory")
        processes.append(memory)
        with_redis, redis_port, _ = start_service(
            directory, *flags, "--redis-url", redis_url, name="redis"
        )
        processes.append(with_redis)
        wait_for_publication(memory_port)
        wait_for_publication(redis_port)
        bodies = fetch_bodies(memory_port)
        bare, bare_port = start_bare(directory, bodies)
        processes.append(bare)
        servers = {
            "bare Starlette, same bytes (baseline)": (bare_port, bare.pid),
            "service, memory store": (memory_port, memory.pid),
            "service, Redis store": (redis_port, with_redis.pid),
        }
        for port, pid in servers.values():  # warm up every route of every server
            for path in ENDPOINTS:
                run_wrk(f"http://127.0.0.1:{port}{path}", pid, 1, connections)
        runs: dict[str, dict[str, list[Run]]] = {
            path: {name: [] for name in servers} for path in ENDPOINTS
        }
        for _ in range(rounds):
            for path in ENDPOINTS:
                for name, (port, pid) in servers.items():
                    url = f"http://127.0.0.1:{port}{path}"
                    runs[path][name].append(run_wrk(url, pid, duration, connections))
        sizes = {path: len(bodies[path]["body"].encode()) for path in ENDPOINTS}
        return runs, sizes
    finally:
        for process in reversed(processes):
            stop_process(process)


def tables(quick: bool = False) -> list[Table]:
    """The REST throughput tables: a short run when quick (~30 s), else the real measurement."""
    return measured_tables(duration=2 if quick else 5, rounds=1 if quick else 5, connections=64)


def measured_tables(duration: float, rounds: int, connections: int) -> list[Table]:
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as name:
        results, sizes = measure(Path(name), duration, rounds, connections)
    command = (
        f"python -m bench.rest --duration {duration:g} --rounds {rounds}"
        f" --connections {connections}"
    )
    columns = ["endpoint", "server", "requests/s", "vs bare", "p50 ms", "p99 ms",
               "server CPU µs/request", "CPU vs bare", "errors"]  # fmt: skip
    table = Table(
        "REST throughput",
        command,
        f"wrk -t1 -c{connections} -d{duration:g}s --latency on loopback; medians over {rounds}"
        " round(s), each measuring the three servers back to back; the ratios are the median of"
        " the ratios within a round. Baseline: a bare Starlette app answering the same bytes on"
        " the same uvicorn with the same options."
        " `index-ticker serve --cadence 1 --feed none` publishes every second meanwhile.",
        columns,
    )
    for path in ENDPOINTS:
        by_server = results[path]
        baselines = next(iter(by_server.values()))
        for server, runs in by_server.items():
            run = median_run(runs)
            table.add(
                f"GET {path}",
                server,
                run.requests_per_second,
                f"{median_ratio(runs, baselines, 'requests_per_second'):.2f}x",
                run.p50_ms,
                run.p99_ms,
                run.cpu_us_per_request,
                f"{median_ratio(runs, baselines, 'cpu_us_per_request'):.2f}x",
                run.errors,
            )
    table.notes.append(
        "body sizes: " + ", ".join(f"{path} {size:,} bytes" for path, size in sizes.items())
    )
    table.notes.append(f"machine: {machine()}")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round (~30 s)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all servers")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    args = parser.parse_args()
    if args.quick:
        result = tables(quick=True)
    else:
        result = measured_tables(args.duration, args.rounds, args.connections)
    for table in result:
        print(table.markdown())


if __name__ == "__main__":
    main()
