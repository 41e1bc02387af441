"""examples/client.py against a real server: the connection is cut mid-stream (a TCP proxy drops
it while publications go on) or the whole service is killed and started again, and the client
resumes by sequence number: it sees every seq exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, start_service
from serving import make_app, make_engine, running, wait_until

from streaming.store.memory import MemoryStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "client.py"
GRID = float(math.floor(time.time())) - 3 * 3600
CODES = ("IMOEX", "RTSI")


def client_env() -> dict[str, str]:
    """The environment without proxy settings: the client talks to 127.0.0.1 directly."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"}


class DroppingProxy:
    """A TCP proxy in front of the server: cut() drops every connection through it, and while
    refusing it closes new ones at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refusing = False
        self.accepted = 0
        self._transports: list[asyncio.WriteTransport] = []
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, down_reader: asyncio.StreamReader, down: asyncio.StreamWriter) -> None:
        if self.refusing:
            down.transport.abort()
            return
        self.accepted += 1
        up_reader, up = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports += [down.transport, up.transport]
        for source, sink in ((down_reader, up), (up_reader, down)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    def cut(self) -> None:
        """Drop every connection now, without a close handshake (a network failure)."""
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()


class ExampleClient:
    """examples/client.py --json in a subprocess; its messages as they are printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.messages: list[dict[str, Any]] = []
        self.stderr = b""
        assert process.stdout is not None
        self._reader = asyncio.create_task(self._read(process.stdout))

    @classmethod
    async def start(cls, url: str, *codes: str) -> ExampleClient:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--json",
            "--url",
            url,
            *codes,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=client_env(),
        )
        return cls(process)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.messages.append(json.loads(line))

    def seqs(self, code: str) -> list[int]:
        """The seqs of the values of `code` printed, from its first snapshot on."""
        return [
            m["seq"]
            for m in self.messages
            if m["type"] in ("snapshot", "update") and m["code"] == code and m["seq"] is not None
        ]

    async def reaches(self, seq: int, timeout: float = 20.0) -> None:
        async def done() -> bool | None:
            return True if all(seq in self.seqs(code) for code in CODES) else None

        await wait_until(done, timeout=timeout)

    async def stop(self) -> str:
        """Interrupt the client; its stderr."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        assert self.process.stderr is not None
        self.stderr = await asyncio.wait_for(self.process.stderr.read(), 10)
        await asyncio.wait_for(self.process.wait(), 10)
        await self._reader
        return self.stderr.decode()


async def test_the_example_resumes_after_a_dropped_connection_without_loss() -> None:
    store = MemoryStore()
    engine = make_engine(store)
    async with running(make_app(store, engine)) as server:
        proxy = DroppingProxy(server.port)
        port = await proxy.start()
        client = await ExampleClient.start(f"ws://127.0.0.1:{port}/v1/ws", *CODES)
        grid = GRID

        async def publish(count: int) -> None:
            nonlocal grid
            for _ in range(count):
                grid += 1
                assert await server.call(lambda at=grid: engine.publish(at))

        try:
            await publish(1)
            await client.reaches(1)
            await publish(4)
            await client.reaches(5)
            proxy.refusing = True
            proxy.cut()  # mid-stream: the client tries again and again, refused
            await publish(5)  # seq 6..10 while it is away
            await asyncio.sleep(0.5)
            proxy.refusing = False
            await client.reaches(10)  # replayed on resume
            await publish(5)
            await client.reaches(15)
        finally:
            stderr = await client.stop()
            await proxy.close()
    assert proxy.accepted >= 2
    for code in CODES:
        seqs = client.seqs(code)
        assert seqs == sorted(set(seqs)), f"{code}: a seq seen twice: {seqs}"
        assert seqs[-1] == 15 and seqs == list(range(seqs[0], 16)), f"{code}: {seqs}"
    replayed = {(m["code"], m["seq"]) for m in client.messages if m.get("replayed")}
    assert replayed == {(code, seq) for code in CODES for seq in range(6, 11)}
    assert [m["type"] for m in client.messages].count("resumed") == len(CODES)
    assert "connection lost" in stderr and "duplicate" not in stderr and "conflated" not in stderr


def start(port: int, redis_url: str) -> subprocess.Popen[bytes]:
    return start_service(
        port, "--redis-url", redis_url, "--namespace", "client-example", "--feed", "simulator",
        "--cadence", "1", "--log-level", "warning", token="client-example-token-0123456789",
    )  # fmt: skip


async def answering(port: int) -> bool | None:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=1) as http:
            response = await http.get(f"http://127.0.0.1:{port}/v1/indices/IMOEX")
            return True if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


@contextlib.asynccontextmanager
async def service(port: int, redis_url: str) -> AsyncIterator[Callable[[], None]]:
    """The whole service in a process of its own; yields a function that kills it outright."""
    process = start(port, redis_url)
    try:
        await wait_until(lambda: answering(port), timeout=30)
        yield process.kill
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)


async def test_the_example_resumes_after_the_service_is_killed_and_restarted(
    redis_url: str,
) -> None:
    port = free_port()
    async with service(port, redis_url) as kill:
        client = await ExampleClient.start(f"ws://127.0.0.1:{port}/v1/ws", "IMOEX", "RTSI")
        try:
            await wait_until(lambda: _at_least(client, 3), timeout=30)
            kill()  # SIGKILL: no close frame, no goodbye
            before = client.seqs("IMOEX")[-1]
        except BaseException:
            await client.stop()
            raise
    try:
        async with service(port, redis_url):
            await wait_until(lambda: _beyond(client, before + 3), timeout=30)
    finally:
        stderr = await client.stop()
    for code in CODES:
        seqs = client.seqs(code)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{code}: {seqs}"
    assert "connection lost" in stderr and "duplicate" not in stderr


async def _at_least(client: ExampleClient, count: int) -> bool | None:
    return True if len(client.seqs("IMOEX")) >= count else None


async def _beyond(client: ExampleClient, seq: int) -> bool | None:
    return True if all(client.seqs(code)[-1] >= seq for code in CODES) else None
