"""WebSocket fan-out on one API process: N subscribers to IMOEX and RTSI, one update per index
per second, against the naive baseline (bench/naive_ws.py: a bare Starlette app awaiting
`send_text` client by client) fed the same updates at the same cadence, in the same run.

    python -m bench.fanout [--clients 1000 2000 10000] [--seconds 20] [--quick]

Per run: latency = receipt time minus the update's grid time (p50, p99), server memory per
connection ((RSS with N subscribed - RSS before) / N), server CPU per grid instant (from
/proc/<pid>/stat over the window / grid instants), and a count check: every subscriber got
every update of the window exactly once. The slow-client runs add one client that stops
reading (tiny receive buffer, subscribed to the constituents of every index too, so that its
buffers fill in seconds): the others' latency must not suffer, and the service conflates it,
then closes it with 4008.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness import (
    Table,
    free_port,
    machine,
    percentile_ms,
    proc_cpu_seconds,
    proc_rss_kib,
    ratio,
    sleep_until,
    start_service,
    stop_process,
)
from bench.wsload import LoadReport, LoadSpec, raise_open_files, spawn_load

CODES = ("IMOEX", "RTSI")
CADENCE = 1
SLOW_LAG_SECONDS = 5  # the service's ws_max_lag_seconds in the slow-client runs


@dataclass
class Run:
    """The figures of one target at one number of subscribers."""

    target: str
    clients: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    kib_per_connection: float
    cpu_ms_per_grid: float
    idle_cpu_ms_per_grid: float
    expected: int
    received: int
    missing: int
    duplicates: int
    connect_seconds: float
    failed: int  # clients that could not connect and subscribe
    grids: int  # grid instants in the window
    closed_slow: int | None  # connections the service closed as too slow (its own counter)
    published_grids: int  # of which any client got an update
    slow: list[dict[str, Any]]


def templates(directory: Path) -> Path:
    """Value and constituents messages of the service, for the baseline to send."""
    process, port, _ = start_service(
        directory, "--cadence", str(CADENCE), "--feed", "none", name="template"
    )
    try:
        time.sleep(CADENCE * 1.5)
        body: dict[str, Any] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            for code in CODES:
                body[code] = client.get(f"/v1/indices/{code}").json()
            constituents = {}
            for code in client.get("/v1/indices").json():
                code = code["code"] if isinstance(code, dict) else code
                constituents[code] = client.get(f"/v1/indices/{code}/constituents").json()
    finally:
        stop_process(process)
    path = directory / "templates.json"
    path.write_text(json.dumps({"values": body, "constituents": constituents}))
    return path


def start_naive(directory: Path, template: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The baseline app as a subprocess, waited for until it answers."""
    port = free_port()
    log = (directory / "naive.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.naive_ws", "--port", str(port), "--template",
         str(template), "--cadence", str(CADENCE)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the baseline app did not start")


def measure(
    target: str, clients: int, seconds: int, directory: Path, template: Path, slow: int = 0
) -> Run:
    """One run: start the target, connect the subscribers, measure a window of grid instants."""
    if target == "service":
        settings = f"ws_max_connections_per_address = {clients + 100}\n"
        if slow:
            settings += f"ws_max_lag_seconds = {SLOW_LAG_SECONDS}\n"
        process, port, _ = start_service(
            directory, "--cadence", str(CADENCE), "--feed", "none", settings=settings,
            name=f"service-{clients}",
        )  # fmt: skip
    else:
        process, port = start_naive(directory, template)
    handles = []
    try:
        time.sleep(2)
        idle_start = time.time()
        idle_cpu = proc_cpu_seconds(process.pid)
        time.sleep(3)
        idle_ms = (proc_cpu_seconds(process.pid) - idle_cpu) * 1000 / (time.time() - idle_start)
        rss_before = proc_rss_kib(process.pid)
        extra = (
            tuple(
                json.dumps({"op": "subscribe", "channel": "constituents", "indices": [code]})
                for code in json.loads(template.read_text())["constituents"]
            )
            if slow
            else ()
        )
        spec = LoadSpec(f"ws://127.0.0.1:{port}/v1/ws", clients + slow, CODES, slow, extra)
        handles = spawn_load(spec, processes=1)
        connected = failed = 0
        connect_seconds = 0.0
        for handle in handles:
            count, took, refused = handle.ready(timeout=400)
            connected += count
            failed += refused
            connect_seconds = max(connect_seconds, took)
        time.sleep(3)  # a few grid instants with everyone subscribed
        rss_after = proc_rss_kib(process.pid)
        first = math.ceil(time.time()) + CADENCE
        grids = [first + CADENCE * n for n in range(seconds)]
        sleep_until(first - CADENCE / 2)
        cpu_start, wall_start = proc_cpu_seconds(process.pid), time.time()
        sleep_until(grids[-1] + CADENCE / 2)
        cpu_end, wall_end = proc_cpu_seconds(process.pid), time.time()
        reports: list[LoadReport] = [handle.report(grids, wait=30) for handle in handles]
        closed_slow = None
        if target == "service":
            status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
            closed_slow = status["broadcast"]["closed_slow"]
    finally:
        for handle in handles:
            handle.kill()
        stop_process(process)
    print(
        f"{target} {clients}: {connected} subscribed in {connect_seconds:.1f} s, {failed} failed",
        file=sys.stderr,
    )
    latencies = np.concatenate([r.latencies for r in reports])
    instants = (wall_end - wall_start) / CADENCE
    return Run(
        target=target,
        clients=clients,
        p50_ms=percentile_ms(latencies, 50),
        p99_ms=percentile_ms(latencies, 99),
        max_ms=float(latencies.max()) * 1000 if len(latencies) else float("nan"),
        kib_per_connection=(rss_after - rss_before) / connected,
        cpu_ms_per_grid=(cpu_end - cpu_start) * 1000 / instants,
        idle_cpu_ms_per_grid=idle_ms * CADENCE,
        expected=sum(r.expected for r in reports),
        received=sum(r.received for r in reports),
        missing=sum(r.missing for r in reports),
        duplicates=sum(r.duplicates for r in reports),
        connect_seconds=connect_seconds,
        failed=failed,
        grids=len(grids),
        closed_slow=closed_slow,
        published_grids=max(r.published_grids for r in reports),
        slow=[s for r in reports for s in r.slow],
    )


def delivered(run: Run) -> str:
    text = f"{run.received:,}/{run.expected:,}"
    if run.failed:
        text += f" ({run.failed:,} could not subscribe)"
    if run.missing or run.duplicates:
        text += f" ({run.missing:,} missing, {run.duplicates:,} twice)"
    if run.published_grids < run.grids:
        text += f"; only {run.published_grids} of {run.grids} grid instants sent"
    return text


def slow_client(run: Run, seen: dict[str, Any]) -> str:
    """What became of a slow client, from its side and from the server's counter."""
    if seen["close_code"]:
        fate = f"closed {seen['close_code']} ({seen['close_reason'][:48]})"
    elif seen["disconnected"]:
        fate = "dropped without a close frame (it read nothing when the close was due)"
    else:
        fate = "still connected"
    server = "" if run.closed_slow is None else f", server closed_slow = {run.closed_slow}"
    return f"{fate}; got {seen['updates']} updates, {seen['conflated']} conflated{server}"


def tables(quick: bool = False) -> list[Table]:
    """Service against the naive baseline at each size, then with one slow client."""
    sizes = [200] if quick else ARGS_SIZES
    seconds = 5 if quick else ARGS_SECONDS
    raise_open_files()  # inherited by the service and the load processes
    results: list[tuple[Run, Run]] = []
    slow_results: list[tuple[Run, Run]] = []
    with tempfile.TemporaryDirectory(prefix="fanout-") as name:
        directory = Path(name)
        template = templates(directory)
        for size in sizes:
            service = measure("service", size, seconds, directory, template)
            naive = measure("naive", size, seconds, directory, template)
            results.append((service, naive))
        slow_size = sizes[0] if quick else min(2000, max(sizes))
        # Long enough for the stuck client's buffers to fill and its lag to pass the limit.
        slow_seconds = seconds if quick else max(seconds, 4 * SLOW_LAG_SECONDS)
        service = measure("service", slow_size, slow_seconds, directory, template, slow=1)
        naive = measure("naive", slow_size, slow_seconds, directory, template, slow=1)
        slow_results.append((service, naive))
    fan = Table(
        title="WebSocket fan-out, one API process",
        command="python -m bench.fanout",
        about=(
            "N subscribers to IMOEX and RTSI (cadence 1 s, `--feed none`), raw-protocol clients "
            "in a separate process; latency is receipt minus grid time; baseline: a bare "
            "Starlette app awaiting `send_text` client by client, same updates, same cadence."
        ),
        columns=["clients", "target", "p50 ms", "p99 ms", "max ms", "KiB/conn",
                 "CPU ms/grid", "p99 vs baseline", "KiB/conn vs baseline",
                 "CPU vs baseline", "delivered"],
    )  # fmt: skip
    for service, naive in results:
        for run in (service, naive):
            name = "service" if run is service else "baseline"
            fan.add(
                run.clients, name, run.p50_ms, run.p99_ms, run.max_ms, run.kib_per_connection,
                run.cpu_ms_per_grid, ratio(run.p99_ms, naive.p99_ms),
                ratio(run.kib_per_connection, naive.kib_per_connection),
                ratio(run.cpu_ms_per_grid, naive.cpu_ms_per_grid), delivered(run),
            )  # fmt: skip
    fan.notes.append(
        "CPU ms/grid: server CPU over the window / grid instants (2 updates × N clients each); "
        "idle (no client) CPU ms/grid: "
        + ", ".join(f"{r.target} {r.idle_cpu_ms_per_grid:.1f}" for pair in results for r in pair)
    )
    fan.notes.append(f"Machine: {machine()}")
    slow = Table(
        title="WebSocket fan-out with one client that stops reading",
        command="python -m bench.fanout",
        about=(
            "as above, plus one subscriber with a 2 KiB receive buffer that stops reading "
            "after its snapshots (also subscribed to every index's constituents, so that its "
            f"buffers fill within seconds); service ws_max_lag_seconds = {SLOW_LAG_SECONDS}."
        ),
        columns=["clients", "target", "p50 ms", "p99 ms", "max ms", "p99 vs baseline",
                 "delivered to the others", "slow client"],
    )  # fmt: skip
    for service, naive in slow_results:
        for run in (service, naive):
            name = "service" if run is service else "baseline"
            told = "; ".join(slow_client(run, s) for s in run.slow)
            slow.add(
                run.clients, name, run.p50_ms, run.p99_ms, run.max_ms,
                ratio(run.p99_ms, naive.p99_ms), delivered(run), told,
            )  # fmt: skip
    return [fan, slow]


ARGS_SIZES = [1000, 2000, 10000]
ARGS_SECONDS = 20


def main() -> None:
    global ARGS_SIZES, ARGS_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=ARGS_SIZES)
    parser.add_argument("--seconds", type=int, default=ARGS_SECONDS, help="grid instants")
    parser.add_argument("--quick", action="store_true", help="200 clients, 5 s")
    args = parser.parse_args()
    ARGS_SIZES, ARGS_SECONDS = args.clients, args.seconds
    for table in tables(quick=args.quick):
        print(table.markdown())


if __name__ == "__main__":
    main()
