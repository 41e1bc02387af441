"""Soak run on loopback: the real service, thousands of WebSocket subscribers, a steady tick rate
and periodic client churn, for a bounded time; checks that memory, file descriptors and latency
stay flat and that every client saw every update exactly once.

    python -m bench.soak --duration 600 --clients 2000 --json soak.json
    python -m bench.soak --duration 3600 --clients 4000 --load-processes 2 --redis

The service runs as a subprocess (`index-ticker serve --cadence 1 --feed none`); the subscribers
run in one or more separate load processes; this process posts ticks and samples the server.
See docs/soak.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from bench import harness
from bench.harness import (
    proc_cpu_seconds,
    proc_rss_kib,
    start_redis,
    stop_process,
)

CODES = ("IMOEX", "RTSI")
SUBPROTOCOL = Subprotocol("index-ticker.v1")
TOKEN = "soak-ingest-token-" + "0" * 24
START_TIMEOUT = 30.0  # seconds for the service to answer /healthz
RAMP_TIMEOUT = 180.0  # seconds for every client to connect before the measured run starts
SETTLE_TIMEOUT = 30.0  # seconds for churned clients to resume after churn stops
WALK_SIGMA = 0.0005  # relative price step per tick
WALK_BAND = 0.03  # prices stay within this fraction of the reference (far below the guard)


# ---------------------------------------------------------------------------------------------
# Load process: the subscribers.


class Client:
    """One subscriber: its connection and what it saw, per index, across reconnections."""

    __slots__ = (
        "conflated",
        "connect_failures",
        "drops",
        "duplicates",
        "first",
        "gaps",
        "last",
        "leaving",
        "missed",
        "received",
        "sessions",
        "ws",
    )

    def __init__(self) -> None:
        self.ws: ClientConnection | None = None
        self.leaving = False  # closed on purpose (churn): reconnect quickly, not an anomaly
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.received: dict[str, int] = dict.fromkeys(CODES, 0)
        self.duplicates = 0
        self.missed = 0  # seqs skipped without a conflation note: a real loss
        self.conflated = 0  # seqs skipped and declared by the server as conflated
        self.gaps = 0  # gap snapshots (history no longer reached back)
        self.sessions = 0
        self.drops = 0  # connections lost without being churned
        self.connect_failures = 0


@dataclass
class Load:
    """The subscribers of one load process and their shared counters."""

    url: str
    churn_pause: float
    stopping: bool = False
    connected: int = 0
    latencies: list[float] = field(default_factory=list)
    close_codes: dict[str, int] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)

    def grid_seconds(self, text: str) -> float:
        """Epoch seconds of a grid time string; cached since every client gets the same few."""
        seconds = self.times.get(text)
        if seconds is None:
            if len(self.times) > 64:
                self.times.clear()
            seconds = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            self.times[text] = seconds
        return seconds

    async def follow(self, client: Client) -> None:
        """Keep one client subscribed until the run stops, resuming with from_seq each time."""
        delay = 0.2
        while not self.stopping:
            subscribed = False
            try:
                async with connect(
                    self.url,
                    subprotocols=[SUBPROTOCOL],
                    open_timeout=60,
                    ping_interval=None,  # the server pings; answering is enough
                    compression=None,
                ) as ws:
                    client.ws = ws
                    client.sessions += 1
                    message: dict[str, Any] = {"op": "subscribe", "indices": list(CODES)}
                    if client.last:
                        message["from_seq"] = dict(client.last)
                    await ws.send(json.dumps(message))
                    # The receive loop is kept minimal: one parse, a few dict lookups.
                    async for text in ws:
                        received_at = time.time()
                        m = json.loads(text)
                        kind = m["type"]
                        if kind == "update" or kind == "snapshot":
                            self.value(client, m, kind, received_at)
                            if not subscribed:
                                subscribed = True
                                self.connected += 1
                        elif kind == "resumed" and not subscribed:
                            subscribed = True
                            self.connected += 1
                    code = ws.close_code
                    if not client.leaving and not self.stopping:
                        client.drops += 1
                        self.close_codes[str(code)] = self.close_codes.get(str(code), 0) + 1
            except ConnectionClosed as closed:
                if not client.leaving and not self.stopping:
                    client.drops += 1
                    code = str(closed.rcvd.code if closed.rcvd is not None else 1006)
                    self.close_codes[code] = self.close_codes.get(code, 0) + 1
            except (OSError, InvalidHandshake, TimeoutError):
                client.connect_failures += 1
            finally:
                client.ws = None
                if subscribed:
                    self.connected -= 1
            if self.stopping:
                break
            if client.leaving:
                client.leaving = False
                await asyncio.sleep(random.uniform(0, self.churn_pause))
                delay = 0.2
            else:
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 5.0)

    def value(self, client: Client, m: dict[str, Any], kind: str, received_at: float) -> None:
        """Account one snapshot or update: order, loss, duplicates, latency."""
        code = m["code"]
        seq = m["seq"]
        if seq is None:
            return
        last = client.last.get(code)
        if kind == "snapshot":
            if m.get("gap"):
                client.gaps += 1
            if last is not None:
                if seq <= last:
                    return  # a resubscribe snapshot at or before what we have: nothing new
                client.missed += seq - last - 1
        elif last is not None:
            if seq <= last:
                client.duplicates += 1
                return
            if seq > last + 1:
                if m.get("conflated"):
                    client.conflated += seq - last - 1
                else:
                    client.missed += seq - last - 1
            if not m.get("replayed"):
                self.latencies.append(received_at - self.grid_seconds(m["time"]))
        if last is None:
            client.first[code] = seq
        client.last[code] = seq
        client.received[code] += 1


async def run_load(
    number: int,
    url: str,
    clients: int,
    options: dict[str, float],
    reports: Queue[Any],
    churning: Event,
    stop: Event,
) -> None:
    load = Load(url, options["churn_pause"])
    pool = [Client() for _ in range(clients)]
    tasks = []
    closing: set[asyncio.Task[None]] = set()  # referenced until done, or they may be collected
    # Ramp up: a burst of thousands of handshakes would overflow the listen backlog.
    for i, client in enumerate(pool):
        tasks.append(asyncio.create_task(load.follow(client)))
        if i % 50 == 49:
            await asyncio.sleep(50 / options["ramp_rate"])
    started = time.monotonic()
    next_report = started + options["sample_every"]
    next_churn = started + options["churn_every"]
    while not stop.is_set():
        await asyncio.sleep(0.1)
        now = time.monotonic()
        if now >= next_report:
            next_report += options["sample_every"]
            latencies = np.asarray(load.latencies, dtype=np.float32)
            load.latencies = []
            reports.put(("window", number, load.connected, latencies.tobytes()))
        if options["churn_every"] > 0 and now >= next_churn:
            next_churn += options["churn_every"]
            closing = {task for task in closing if not task.done()}
            if churning.is_set():
                live = [c for c in pool if c.ws is not None and not c.leaving]
                victims = random.sample(live, int(len(live) * options["churn_fraction"]))
                for victim in victims:
                    victim.leaving = True
                    assert victim.ws is not None
                    closing.add(asyncio.create_task(victim.ws.close()))
                reports.put(("churned", number, len(victims)))
    load.stopping = True
    for client in pool:
        if client.ws is not None:
            closing.add(asyncio.create_task(client.ws.close()))
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
    summary = [
        {
            "first": client.first,
            "last": client.last,
            "received": client.received,
            "duplicates": client.duplicates,
            "missed": client.missed,
            "conflated": client.conflated,
            "gaps": client.gaps,
            "sessions": client.sessions,
            "drops": client.drops,
            "connect_failures": client.connect_failures,
        }
        for client in pool
    ]
    reports.put(("final", number, summary, load.close_codes))


def load_main(
    number: int,
    url: str,
    clients: int,
    options: dict[str, float],
    reports: Queue[Any],
    churning: Event,
    stop: Event,
) -> None:
    """Entry point of a load process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    asyncio.run(run_load(number, url, clients, options, reports, churning, stop))


# ---------------------------------------------------------------------------------------------
# The parent: service, ticks, sampling, verdict.


def proc_fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_minute(times: list[float], values: list[float]) -> float:
    """Least-squares slope of values against times (seconds), per minute."""
    if len(times) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(times) / 60.0, np.asarray(values), 1)[0])


def thirds(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last third of a series."""
    n = max(1, len(values) // 3)
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


@dataclass
class Ticker:
    """Posts a steady rate of random-walk ticks for a few lines of the index."""

    base_url: str
    lines: dict[str, float]  # secid -> reference price, roubles
    rate: float  # ticks per second
    batch: int
    accepted: int = 0
    rejected: int = 0
    failed_requests: int = 0
    posted: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        prices = dict(self.lines)
        secids = list(prices)
        interval = self.batch / self.rate
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            next_at = time.monotonic()
            while not stop.is_set():
                body = []
                for _ in range(self.batch):
                    secid = random.choice(secids)
                    ref = self.lines[secid]
                    price = prices[secid] * math.exp(random.gauss(0, WALK_SIGMA))
                    price = min(max(price, ref * (1 - WALK_BAND)), ref * (1 + WALK_BAND))
                    prices[secid] = price
                    body.append({"secid": secid, "price": round(price, 4)})
                try:
                    answer = await http.post("/v1/ticks", json=body, headers=headers)
                    self.posted += len(body)
                    if answer.status_code == 200:
                        result = answer.json()
                        self.accepted += result["accepted"]
                        self.rejected += len(result["rejected"])
                    else:
                        self.failed_requests += 1
                except httpx.HTTPError:
                    self.failed_requests += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def start_service(
    args: argparse.Namespace, directory: Path, redis_url: str | None
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The service as a subprocess on a free port; (process, port, log path)."""
    # One address carries every client, so the per-address limit must admit them all.
    settings = f"ws_max_connections_per_address = {args.clients + 100}\n"
    if args.history_limit:
        settings += f"history_limit = {args.history_limit}\n"
    flags = ["--cadence", "1", "--feed", "none"]
    if redis_url:
        flags += ["--redis-url", redis_url, "--namespace", f"soak-{os.getpid()}"]
    return harness.start_service(
        directory,
        *flags,
        settings=settings,
        env={"INDEX_TICKER_INGEST_TOKEN": TOKEN},
        name="service",
    )


def reference_lines(base_url: str, count: int) -> dict[str, float]:
    """The `count` heaviest lines of IMOEX with their current (reference) prices."""
    lines = httpx.get(f"{base_url}/v1/indices/IMOEX/constituents", timeout=10).json()
    heaviest = sorted(lines["constituents"], key=lambda line: -line["weight"])[:count]
    return {line["secid"]: float(line["price"]) for line in heaviest}


def percentile_ms(values: np.ndarray[Any, Any], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if len(values) else None


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run; returns the summary."""
    directory = Path(tempfile.mkdtemp(prefix="soak-"))
    redis_process, redis_url = start_redis(directory) if args.redis else (None, None)
    service, port, log_path = start_service(args, directory, redis_url)
    base_url = f"http://127.0.0.1:{port}"
    pid = service.pid
    print(f"service pid {pid} on port {port}, log {log_path}", flush=True)
    context = mp.get_context("spawn")
    reports: Queue[Any] = context.Queue()
    churning = context.Event()
    stop = context.Event()
    options = {
        "churn_every": float(args.churn_every),
        "churn_fraction": args.churn_fraction,
        "churn_pause": args.churn_pause,
        "sample_every": float(args.sample_every),
        "ramp_rate": args.ramp_rate / args.load_processes,
    }
    shares = [args.clients // args.load_processes] * args.load_processes
    shares[0] += args.clients - sum(shares)
    loads = [
        context.Process(
            target=load_main,
            args=(n, f"ws://127.0.0.1:{port}/v1/ws", share, options, reports, churning, stop),
            daemon=True,
        )
        for n, share in enumerate(shares)
    ]
    ticker = Ticker(base_url, reference_lines(base_url, args.lines), args.tick_rate, args.batch)
    tick_stop = asyncio.Event()
    tick_task = asyncio.create_task(ticker.run(tick_stop))
    for process in loads:
        process.start()
    connected = [0] * len(loads)
    churned = 0
    finals: dict[int, tuple[list[dict[str, Any]], dict[str, int]]] = {}
    window_latencies: list[np.ndarray[Any, Any]] = []

    def drain() -> None:
        nonlocal churned
        while True:
            try:
                item = reports.get_nowait()
            except Exception:  # queue.Empty, imported lazily by multiprocessing
                return
            if item[0] == "window":
                connected[item[1]] = item[2]
                window_latencies.append(np.frombuffer(item[3], dtype=np.float32))
            elif item[0] == "churned":
                churned += item[2]
            elif item[0] == "final":
                finals[item[1]] = (item[2], item[3])

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:

        async def readyz() -> dict[str, Any]:
            body: dict[str, Any] = (await http.get("/readyz")).json()
            return body

        # Ramp: wait until every client is subscribed.
        ramp_started = time.monotonic()
        while time.monotonic() - ramp_started < RAMP_TIMEOUT:
            await asyncio.sleep(1)
            drain()
            if sum(connected) >= args.clients:
                break
        ramp_seconds = time.monotonic() - ramp_started
        print(f"{sum(connected)}/{args.clients} clients subscribed in {ramp_seconds:.1f} s",
              flush=True)  # fmt: skip
        drain()
        window_latencies.clear()
        churning.set()
        windows: list[dict[str, Any]] = []
        started = time.monotonic()
        cpu_before = proc_cpu_seconds(pid)
        header = (f"{'t s':>6} {'RSS MiB':>8} {'fds':>6} {'clients':>7} {'srv conn':>8} "
                  f"{'updates':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
                  f"{'cpu %':>6}")  # fmt: skip
        print(header, flush=True)
        while time.monotonic() - started < args.duration:
            await asyncio.sleep(args.sample_every)
            drain()
            latencies = np.concatenate(window_latencies) if window_latencies else np.zeros(0)
            window_latencies.clear()
            cpu_now = proc_cpu_seconds(pid)
            status = await readyz()
            window = {
                "t": round(time.monotonic() - started, 1),
                "rss_kib": proc_rss_kib(pid),
                "fds": proc_fds(pid),
                "clients": sum(connected),
                "server_connections": status["broadcast"]["connections"],
                # What a leak would show: descriptors beyond one per open connection.
                "fds_beyond_connections": proc_fds(pid) - status["broadcast"]["connections"],
                "updates": len(latencies),
                "p50_ms": percentile_ms(latencies, 50),
                "p99_ms": percentile_ms(latencies, 99),
                "max_ms": round(float(latencies.max()) * 1000, 1) if len(latencies) else None,
                "server_cpu_percent": round(100 * (cpu_now - cpu_before) / args.sample_every, 1),
            }
            cpu_before = cpu_now
            windows.append(window)
            print(f"{window['t']:>6.0f} {window['rss_kib'] / 1024:>8.1f} {window['fds']:>6} "
                  f"{window['clients']:>7} {window['server_connections']:>8} "
                  f"{window['updates']:>8} {window['p50_ms']!s:>7} {window['p99_ms']!s:>7} "
                  f"{window['max_ms']!s:>7} {window['server_cpu_percent']:>6}",
                  flush=True)  # fmt: skip
        # End: stop churn, let every client resume, note the server's seq, then stop.
        churning.clear()
        settle_started = time.monotonic()
        await asyncio.sleep(args.churn_pause + 1)
        while time.monotonic() - settle_started < SETTLE_TIMEOUT:
            drain()
            if sum(connected) >= args.clients:
                break
            await asyncio.sleep(args.sample_every / 2)
        final_status = await readyz()
        final_seq = {code: final_status["engine"]["seq"][code] for code in CODES}
        await asyncio.sleep(3)  # the next publications reach everyone
        tick_stop.set()
        await tick_task
        stop.set()
        deadline = time.monotonic() + 60
        while len(finals) < len(loads) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            drain()
        broadcast = final_status["broadcast"]
    for process in loads:
        process.join(5)
        if process.is_alive():
            process.kill()
    stop_process(service)
    if redis_process is not None:
        stop_process(redis_process)
    return verdict(args, windows, finals, final_seq, ticker, churned, ramp_seconds, broadcast)


def verdict(
    args: argparse.Namespace,
    windows: list[dict[str, Any]],
    finals: dict[int, tuple[list[dict[str, Any]], dict[str, int]]],
    final_seq: dict[str, int],
    ticker: Ticker,
    churned: int,
    ramp_seconds: float,
    broadcast: dict[str, Any],
) -> dict[str, Any]:
    """Clients' accounting, drift of RSS, fds and latency; the summary."""
    clients = [client for summary, _ in finals.values() for client in summary]
    close_codes: dict[str, int] = {}
    for _, codes in finals.values():
        for code, n in codes.items():
            close_codes[code] = close_codes.get(code, 0) + n
    exact = 0
    behind = 0
    for client in clients:
        ok = client["duplicates"] == 0 and client["missed"] == 0 and client["conflated"] == 0
        for code in CODES:
            first, last = client["first"].get(code), client["last"].get(code)
            if first is None or last is None:
                ok = False
                continue
            ok = ok and client["received"][code] == last - first + 1
            if last < final_seq[code]:
                behind += 1
                ok = False
        exact += ok
    third = max(1, len(windows) // 3)
    times = [w["t"] for w in windows]
    rss = [w["rss_kib"] / 1024 for w in windows]
    fds = [float(w["fds"]) for w in windows]
    lat = [(w["t"], w["p99_ms"], w["p50_ms"]) for w in windows if w["p99_ms"] is not None]
    rss_first, rss_last = thirds(rss)
    fds_first, fds_last = thirds(fds)
    extra = [float(w["fds_beyond_connections"]) for w in windows]
    extra_first, extra_last = thirds(extra)
    p99_first, p99_last = thirds([x[1] for x in lat]) if lat else (0.0, 0.0)
    p50_first, p50_last = thirds([x[2] for x in lat]) if lat else (0.0, 0.0)
    total = lambda key: sum(client[key] for client in clients)  # noqa: E731
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "duration_s": args.duration,
            "clients": args.clients,
            "load_processes": args.load_processes,
            "tick_rate": args.tick_rate,
            "batch": args.batch,
            "lines": args.lines,
            "churn_every_s": args.churn_every,
            "churn_fraction": args.churn_fraction,
            "cadence_s": 1,
            "store": "redis" if args.redis else "memory",
            "history_limit": args.history_limit,
        },
        "ramp_seconds": round(ramp_seconds, 1),
        "ticks": {
            "posted": ticker.posted,
            "accepted": ticker.accepted,
            "rejected": ticker.rejected,
            "failed_requests": ticker.failed_requests,
        },
        "clients": {
            "reported": len(clients),
            "exactly_once": exact,
            "behind_final_seq": behind,
            "duplicates": total("duplicates"),
            "missed": total("missed"),
            "conflated": total("conflated"),
            "gap_snapshots": total("gaps"),
            "sessions": total("sessions"),
            "churned": churned,
            "unexpected_drops": total("drops"),
            "connect_failures": total("connect_failures"),
            "close_codes": close_codes,
            "updates_received": sum(sum(c["received"].values()) for c in clients),
        },
        "final_seq": final_seq,
        "server_broadcast": broadcast,
        "drift": {
            "rss_mib_first_third": round(rss_first, 1),
            "rss_mib_last_third": round(rss_last, 1),
            "rss_mib_per_min": round(slope_per_minute(times[third:], rss[third:]), 3),
            "rss_mib_per_min_whole": round(slope_per_minute(times, rss), 3),
            "fds_first_third": round(fds_first, 1),
            "fds_last_third": round(fds_last, 1),
            "fds_per_min": round(slope_per_minute(times[third:], fds[third:]), 3),
            "fds_beyond_connections_first_third": round(extra_first, 1),
            "fds_beyond_connections_last_third": round(extra_last, 1),
            "fds_beyond_connections_per_min": round(slope_per_minute(times, extra), 3),
            "p50_ms_first_third": round(p50_first, 1),
            "p50_ms_last_third": round(p50_last, 1),
            "p99_ms_first_third": round(p99_first, 1),
            "p99_ms_last_third": round(p99_last, 1),
            "p99_ms_per_min": round(slope_per_minute([x[0] for x in lat], [x[1] for x in lat]), 3),
        },
        "windows": windows,
    }


def report(summary: dict[str, Any]) -> None:
    """The end-of-run table."""
    c, d, t = summary["clients"], summary["drift"], summary["ticks"]
    rows = [
        ("clients exactly once", f"{c['exactly_once']} / {summary['settings']['clients']}"),
        ("updates received", f"{c['updates_received']}"),
        ("duplicates / missed / conflated",
         f"{c['duplicates']} / {c['missed']} / {c['conflated']}"),
        ("gap snapshots", f"{c['gap_snapshots']}"),
        ("behind final seq", f"{c['behind_final_seq']}"),
        ("churned / sessions", f"{c['churned']} / {c['sessions']}"),
        ("unexpected drops (codes)", f"{c['unexpected_drops']} {c['close_codes']}"),
        ("ticks posted / accepted",
         f"{t['posted']} / {t['accepted']} ({t['failed_requests']} failed)"),
        ("RSS MiB first -> last third", f"{d['rss_mib_first_third']} -> {d['rss_mib_last_third']}"),
        ("RSS slope (after 1st third)", f"{d['rss_mib_per_min']} MiB/min"),
        ("fds first -> last third", f"{d['fds_first_third']} -> {d['fds_last_third']}"),
        ("fd slope (after 1st third)", f"{d['fds_per_min']} /min"),
        ("fds beyond connections", f"{d['fds_beyond_connections_first_third']} -> "
         f"{d['fds_beyond_connections_last_third']} ({d['fds_beyond_connections_per_min']} /min)"),
        ("p50 ms first -> last third", f"{d['p50_ms_first_third']} -> {d['p50_ms_last_third']}"),
        ("p99 ms first -> last third", f"{d['p99_ms_first_third']} -> {d['p99_ms_last_third']}"),
        ("p99 slope", f"{d['p99_ms_per_min']} ms/min"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Soak the service on loopback (docs/soak.md).")
    parser.add_argument("--duration", type=float, default=600, help="measured seconds (600)")
    parser.add_argument("--clients", type=int, default=2000, help="WebSocket subscribers (2000)")
    parser.add_argument("--load-processes", type=int, default=1, help="processes for clients (1)")
    parser.add_argument("--tick-rate", type=float, default=200, help="ticks per second (200)")
    parser.add_argument("--batch", type=int, default=20, help="ticks per POST (20)")
    parser.add_argument("--lines", type=int, default=10, help="IMOEX lines that tick (10)")
    parser.add_argument("--churn-every", type=float, default=30, help="seconds; 0: none (30)")
    parser.add_argument("--churn-fraction", type=float, default=0.1, help="churned share (0.1)")
    parser.add_argument("--churn-pause", type=float, default=2.0, help="max s offline (2)")
    parser.add_argument("--sample-every", type=float, default=5, help="seconds per window (5)")
    parser.add_argument("--ramp-rate", type=float, default=200, help="new connections per s")
    parser.add_argument(
        "--history-limit", type=int, help="publications kept per index (the service's default)"
    )
    parser.add_argument("--redis", action="store_true", help="state in a private redis-server")
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.load_processes < 1 or args.tick_rate <= 0 or args.batch < 1:
        parser.error("--clients, --load-processes, --batch must be >= 1; --tick-rate > 0")
    if not 0 <= args.churn_fraction <= 1:
        parser.error("--churn-fraction must be within 0..1")
    summary = asyncio.run(soak(args))
    report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nsummary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
