"""A cheap WebSocket load generator for the feed: N raw-protocol clients on one event loop.

Each client is an asyncio Protocol speaking just enough RFC 6455 (handshake, masked client
frames, ping → pong, close), on uvloop when it is installed. On arrival a data chunk is stamped
with the wall clock and its frames are split; a frame's payload is interned (every subscriber
gets the same bytes for the same update) and parsed once per distinct payload, so the cost per
received message is a dict lookup and two appends. Receipt time minus the update's `time` (its
grid instant) is the latency.

Run it in a process of its own (`spawn_load` → `LoadHandle`): the parent waits for `ready`,
chooses the grid window to measure, and gets a `LoadReport` with per-message latencies and, per
client, every (code, seq) it received, so that losses and duplicates are counted, not assumed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import os
import resource
import socket
import struct
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np

SUBPROTOCOL = "index-ticker.v1"
CONNECT_CONCURRENCY = 100  # handshakes in flight at once (the server's backlog is finite)
CONNECT_TIMEOUT = 120.0  # seconds for one client to connect and get its snapshots
SLOW_RECEIVE_BUFFER = 2048  # bytes: a slow client's kernel receive buffer (the minimum)


def raise_open_files() -> int:
    """Raise this process's open-file limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def grid_epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 UTC time string."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Payload:
    """What one distinct text frame said (parsed once, however many clients got it)."""

    kind: str  # the message type: snapshot, update, heartbeat, ...
    code: str | None
    seq: int | None
    grid: float | None  # epoch seconds of its `time` (the grid instant of a value)
    conflated: int


def describe(payload: bytes) -> Payload:
    """Parse one frame payload into what the load generator counts."""
    try:
        message = json.loads(payload)
    except ValueError:
        return Payload("invalid", None, None, None, 0)
    if not isinstance(message, dict):
        return Payload("invalid", None, None, None, 0)
    kind = str(message.get("type"))
    stamp = message.get("time")
    grid = grid_epoch(stamp) if kind in ("snapshot", "update") and stamp else None
    seq = message.get("seq") if isinstance(message.get("seq"), int) else None
    return Payload(kind, message.get("code"), seq, grid, int(message.get("conflated", 0)))


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (the mask is zero: masking is mandatory, secrecy is not)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + b"\x00\x00\x00\x00" + payload


class Recorder:
    """Every frame every client of this process received: arrival time and interned payload."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.payloads: list[Payload] = []
        self.arrivals = array("d")
        self.clients = array("i")
        self.which = array("i")
        self.recording = True
        self.window_grids: np.ndarray[Any, Any] = np.zeros(0)  # the grid of each latency

    def intern(self, payload: bytes) -> int:
        number = self.ids.get(payload)
        if number is None:
            number = self.ids[payload] = len(self.payloads)
            self.payloads.append(describe(payload))
        return number


class FeedClient(asyncio.Protocol):
    """One raw WebSocket subscriber."""

    def __init__(
        self, number: int, recorder: Recorder, request: bytes, subscribe: Sequence[bytes]
    ) -> None:
        self.number = number
        self.recorder = recorder
        self.request = request
        self.subscribe = subscribe
        self.transport: asyncio.Transport | None = None
        self.handshaken = False
        self.buffer = b""
        self.snapshots = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self.stop_reading_when_ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"client {self.number} lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if not self.handshaken:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            head = data[:end].decode("latin-1")
            if not head.startswith("HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(head.splitlines()[0]))
                assert self.transport is not None
                self.transport.close()
                return
            self.handshaken = True
            assert self.transport is not None
            for message in self.subscribe:
                self.transport.write(client_frame(0x1, message))
            data = data[end + 4 :]
        self.frames(data, now)

    def frames(self, data: bytes, now: float) -> None:
        recorder = self.recorder
        position, size = 0, len(data)
        while size - position >= 2:
            first, second = data[position], data[position + 1]
            length = second & 0x7F
            start = position + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", data, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", data, start)
                start += 8
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            payload = data[start:end]
            position = end
            if opcode == 0x1:
                number = recorder.intern(payload)
                if recorder.recording:
                    recorder.arrivals.append(now)
                    recorder.clients.append(self.number)
                    recorder.which.append(number)
                if not self.ready.done() and recorder.payloads[number].kind == "snapshot":
                    self.snapshots += 1
                    if self.snapshots == len(self.subscribe_codes):
                        self.ready.set_result(None)
                        if self.stop_reading_when_ready and self.transport is not None:
                            self.transport.pause_reading()
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(client_frame(0xA, payload))
            elif opcode == 0x8:
                if len(payload) >= 2:
                    (self.close_code,) = struct.unpack_from("!H", payload)
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                if self.transport is not None:
                    self.transport.write(client_frame(0x8, payload[:2]))
                    self.transport.close()
        if position < size:
            self.buffer = data[position:]

    subscribe_codes: tuple[str, ...] = ()


@dataclass
class LoadSpec:
    """What one load process does."""

    url: str  # ws://127.0.0.1:PORT/v1/ws
    clients: int
    codes: tuple[str, ...] = ("IMOEX", "RTSI")
    slow: int = 0  # clients (the last ones) that stop reading once they have their snapshots
    slow_extra: tuple[str, ...] = ()  # JSON messages the slow clients also send
    first_number: int = 0  # client numbers start here (several load processes)


@dataclass
class LoadReport:
    """What the clients of one load process received in the measured window."""

    clients: int
    latencies: np.ndarray[Any, Any]  # seconds, receipt minus grid time, updates of fast clients
    grids: np.ndarray[Any, Any]  # epoch seconds: the grid instant of each latency
    expected: int  # updates every fast client should have: grids in the window × codes
    received: int  # updates received by fast clients in the window
    missing: int  # (client, code, grid) never received
    duplicates: int  # (client, code, seq) received more than once
    conflated_fast: int  # updates that fast clients were told were conflated away
    published_grids: int  # grid instants of the window that any client got an update of
    connect_seconds: float
    slow: list[dict[str, Any]] = field(default_factory=list)  # what each slow client saw


async def connect_all(
    spec: LoadSpec, recorder: Recorder
) -> tuple[list[FeedClient], list[socket.socket]]:
    """Open every client and wait for their snapshots."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(spec.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    subscribe = json.dumps({"op": "subscribe", "indices": list(spec.codes)}).encode()
    extra = tuple(message.encode() for message in spec.slow_extra)
    FeedClient.subscribe_codes = spec.codes
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients: list[FeedClient] = []
    sockets: list[socket.socket] = []

    clients.extend(
        FeedClient(spec.first_number + index, recorder, b"", ()) for index in range(spec.clients)
    )

    async def one(index: int) -> None:
        slow = index >= spec.clients - spec.slow
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        ).encode()
        messages = (subscribe, *extra) if slow else (subscribe,)
        client = clients[index]
        client.request = request
        client.subscribe = messages
        client.stop_reading_when_ready = slow
        async with gate:
            if slow:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RECEIVE_BUFFER)
                sock.setblocking(False)
                await loop.sock_connect(sock, (host, port))
                sockets.append(sock)
                await loop.create_connection(lambda: client, sock=sock)
            else:
                await loop.create_connection(lambda: client, host, port)
            await asyncio.wait_for(asyncio.shield(client.ready), CONNECT_TIMEOUT)

    outcomes = await asyncio.gather(
        *(one(index) for index in range(spec.clients)), return_exceptions=True
    )
    failed = {id(c) for c, o in zip(clients, outcomes, strict=True) if o is not None}
    for client in clients:
        if id(client) in failed and client.transport is not None:
            client.transport.abort()
    return [c for c in clients if id(c) not in failed], sockets


def arrays(recorder: Recorder) -> tuple[np.ndarray[Any, Any], ...]:
    """Copies of the recorded columns: (arrival seconds, client numbers, payload numbers)."""
    return (
        np.array(recorder.arrivals, dtype=np.float64),
        np.array(recorder.clients, dtype=np.int32),
        np.array(recorder.which, dtype=np.int32),
    )


def analyse(
    spec: LoadSpec, recorder: Recorder, grids_expected: Sequence[float], fast: set[int]
) -> tuple[np.ndarray[Any, Any], int, int, int, int, int, int]:
    """Latencies of the window's updates, and how many were expected, received, missing,
    duplicated and declared conflated, over the fast clients; and how many of the grid
    instants any client got an update of (a server that falls behind skips some)."""
    first, last = min(grids_expected), max(grids_expected)
    kinds = recorder.payloads
    wanted = np.array(
        [
            p.kind == "update" and p.code in spec.codes and p.grid is not None
            and first <= p.grid <= last
            for p in kinds
        ],
        dtype=bool,
    )  # fmt: skip
    grids = np.array([p.grid if p.grid is not None else np.nan for p in kinds], dtype=float)
    arrivals, owners, which = arrays(recorder)
    fast_mask = np.isin(owners, np.fromiter(fast, dtype=np.int32, count=len(fast)))
    chosen = wanted[which] & fast_mask
    latencies = arrivals[chosen] - grids[which[chosen]]
    recorder.window_grids = grids[which[chosen]]
    expected = len(grids_expected) * len(spec.codes) * len(fast)
    seen: set[tuple[int, int]] = set()
    duplicates = 0
    conflated = 0
    for owner, number in zip(owners[chosen].tolist(), which[chosen].tolist(), strict=True):
        key = (owner, number)
        if key in seen:
            duplicates += 1
        seen.add(key)
        conflated += kinds[number].conflated
    distinct = {(owner, kinds[number].code, kinds[number].grid) for owner, number in seen}
    missing = expected - len(distinct)
    published = len({p.grid for n, p in enumerate(kinds) if wanted[n]})
    return latencies, expected, int(chosen.sum()), missing, duplicates, conflated, published


async def run(spec: LoadSpec, pipe: Connection) -> None:
    """Connect, report ready, record until asked for a window, then report on it."""
    recorder = Recorder()
    started = time.monotonic()
    clients, sockets = await connect_all(spec, recorder)
    connect_seconds = time.monotonic() - started
    pipe.send(("ready", len(clients), connect_seconds, spec.clients - len(clients)))
    loop = asyncio.get_running_loop()
    command = await loop.run_in_executor(None, pipe.recv)
    _, grids_expected, wait = command
    last = max(grids_expected)
    fast = {c.number for c in clients if not c.stop_reading_when_ready}
    # Wait until every fast client has the last grid of the window for every code (or time out).
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        _, owners, which = arrays(recorder)
        code_of = np.array(
            [
                spec.codes.index(p.code)
                if p.kind == "update" and p.grid == last and p.code in spec.codes
                else -1
                for p in recorder.payloads
            ],
            dtype=np.int64,
        )
        codes = code_of[which]
        pairs = np.unique(owners[codes >= 0].astype(np.int64) * len(spec.codes) + codes[codes >= 0])
        if len(pairs) >= len(fast) * len(spec.codes):
            break
        await asyncio.sleep(0.5)
    recorder.recording = False
    slow_reports = []
    slow_clients = [c for c in clients if c.stop_reading_when_ready]
    if slow_clients:
        counted = len(recorder.which)
        recorder.recording = True
        for client in slow_clients:
            if client.transport is not None and not client.transport.is_closing():
                client.transport.resume_reading()
        # asyncio.wait, not wait_for: a timeout must not cancel (and so complete) the futures.
        await asyncio.wait([c.closed for c in slow_clients], timeout=wait)
        recorder.recording = False
        for client in slow_clients:
            updates = [
                recorder.payloads[recorder.which[i]]
                for i in range(len(recorder.which))
                if recorder.clients[i] == client.number
                and recorder.payloads[recorder.which[i]].kind == "update"
            ]
            slow_reports.append(
                {
                    "disconnected": client.closed.done(),
                    "close_code": client.close_code,
                    "close_reason": client.close_reason,
                    "updates": len(updates),
                    "conflated": sum(p.conflated for p in updates),
                    "read_after_resume": len(recorder.which) - counted,
                }
            )
    latencies, expected, received, missing, duplicates, conflated, published = analyse(
        spec, recorder, grids_expected, fast
    )
    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    for sock in sockets:
        sock.close()
    pipe.send(
        (
            "report",
            LoadReport(
                clients=len(clients),
                latencies=latencies.astype(np.float32),
                grids=recorder.window_grids,
                expected=expected,
                received=received,
                missing=missing,
                duplicates=duplicates,
                conflated_fast=conflated,
                published_grids=published,
                connect_seconds=connect_seconds,
                slow=slow_reports,
            ),
        )
    )


def load_main(spec: LoadSpec, pipe: Connection) -> None:
    """Entry point of a load process."""
    raise_open_files()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio works, just more slowly
        pass
    asyncio.run(run(spec, pipe))


class LoadHandle:
    """A load process seen from the parent."""

    def __init__(self, spec: LoadSpec) -> None:
        context = mp.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=load_main, args=(spec, child), daemon=True)
        self.process.start()

    def ready(self, timeout: float) -> tuple[int, float, int]:
        """Wait for the clients to be subscribed; (clients, seconds it took, clients that
        could not connect or subscribe)."""
        if not self.pipe.poll(timeout):
            raise TimeoutError("the load process did not connect its clients in time")
        kind, clients, seconds, failed = self.pipe.recv()
        assert kind == "ready"
        return clients, seconds, failed

    def report(self, grids: Sequence[float], wait: float) -> LoadReport:
        """The report on the updates of these grid instants (epoch seconds); waits at most
        `wait` seconds for the last of them to reach every client."""
        self.pipe.send(("window", list(grids), wait))
        if not self.pipe.poll(wait * 3 + 60):
            raise TimeoutError("the load process did not report")
        kind, report = self.pipe.recv()
        assert kind == "report"
        self.process.join(10)
        return report  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def spawn_load(spec: LoadSpec, processes: int = 1) -> list[LoadHandle]:
    """Split the clients of `spec` over `processes` load processes (slow clients in the last)."""
    handles = []
    share, rest = divmod(spec.clients - spec.slow, processes)
    first = 0
    for n in range(processes):
        count = share + (1 if n < rest else 0)
        slow = spec.slow if n == processes - 1 else 0
        part = LoadSpec(
            spec.url, count + slow, spec.codes, slow, spec.slow_extra, first_number=first
        )
        first += count + slow
        handles.append(LoadHandle(part))
    return handles
