"""Hostile clients on WS /v1/ws under a real uvicorn: frames too large, not UTF-8, nested too
deep or flooded by the thousand, more connections from one address than allowed, a client that
floods requests and never reads their answers, and handshakes that never finish. Each gets an
error message or a close with a reason; the server stays healthy, answers everyone else, and
lets go of every connection, subscription and task afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from serving import (
    WS_MAX_SIZE,
    RunningServer,
    Served,
    grid_start,
    receive,
    serve,
    wait_until,
    ws_connect,
)
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.uri import parse_uri

from app.access import Access
from app.broadcast import Broadcaster

pytestmark = pytest.mark.system  # real servers, processes or sockets

GRID = grid_start()


@contextlib.asynccontextmanager
async def served_settled(**settings: Any) -> AsyncIterator[Served]:
    async with serve(**settings) as (server, engine, client):
        await settled(server, client)  # one connection made and gone: lazy parts are in place
        yield server, engine, client


async def on_server(server: RunningServer) -> dict[str, Any]:
    """The fan-out's counters and the number of tasks on the server's event loop."""
    broadcaster: Broadcaster = server.app.state.broadcaster

    async def read() -> dict[str, Any]:
        return {**broadcaster.stats(), "tasks": len(asyncio.all_tasks())}

    return await server.call(read)


async def settled(server: RunningServer, client: httpx.AsyncClient) -> int:
    """Make one connection and close it; return the task count once everything is let go."""
    async with ws_connect(server) as ws:
        await ws.send('{"op": "ping"}')
        assert (await receive(ws))["type"] == "pong"
    state = await wait_until(lambda: nothing_open(server))
    tasks: int = state["tasks"]
    return tasks


async def nothing_open(server: RunningServer) -> dict[str, Any] | None:
    state = await on_server(server)
    idle = state["connections"] == state["clients"] == state["access"]["open"] == 0
    return state if idle else None


async def healthy_and_all_let_go(
    server: RunningServer, client: httpx.AsyncClient, tasks: int | None = None
) -> None:
    """The server answers HTTP and a new feed client, holds no connection, subscription or
    admission, and runs no more tasks than it did before (`tasks`)."""
    assert (await client.get("/healthz")).status_code == 200
    async with ws_connect(server) as ws:
        await ws.send('{"op": "ping"}')
        assert (await receive(ws))["type"] == "pong"

    async def back_to(limit: int | None) -> bool | None:
        state = await nothing_open(server)
        if state is None or (limit is not None and state["tasks"] > limit):
            return None
        return True

    await wait_until(lambda: back_to(tasks), timeout=20)


async def closed_by_server(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes the connection; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


# --- frames that are not messages it can read ----------------------------------------------


async def test_a_message_beyond_the_frame_limit_is_closed_with_1009() -> None:
    async with served_settled() as (server, _, client):
        tasks = await settled(server, client)
        async with ws_connect(server, max_size=None) as ws:
            await ws.send("x" * (WS_MAX_SIZE + 1))
            assert await closed_by_server(ws) == (1009, "frame exceeds limit of 1048576 bytes")
        # The same size in fragments, each small: the whole message counts.
        async with ws_connect(server, max_size=None) as ws:
            await ws.send(["y" * 65_536 for _ in range(WS_MAX_SIZE // 65_536 + 1)])
            code, reason = await closed_by_server(ws)
            assert code == 1009 and "exceeds limit" in reason
        await healthy_and_all_let_go(server, client, tasks)


async def raw_connection(port: int) -> tuple[socket.socket, ClientProtocol]:
    """A completed WebSocket handshake on a plain socket, driven by the sans-I/O protocol."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/v1/ws"))
    protocol.send_request(protocol.connect())
    await asyncio.to_thread(sock.sendall, b"".join(protocol.data_to_send()))
    while protocol.state.name == "CONNECTING":
        protocol.receive_data(await asyncio.to_thread(sock.recv, 65_536))
    assert protocol.handshake_exc is None
    return sock, protocol


async def test_a_text_frame_that_is_not_utf8_is_closed_with_1007() -> None:
    async with served_settled() as (server, _, client):
        tasks = await settled(server, client)
        sock, protocol = await raw_connection(server.port)
        try:
            protocol.send_text(b'{"op": "ping", "x": "\xff\xfe"}')
            await asyncio.to_thread(sock.sendall, b"".join(protocol.data_to_send()))
            while protocol.close_rcvd is None:
                data = await asyncio.to_thread(sock.recv, 65_536)
                if not data:
                    break
                protocol.receive_data(data)
            assert protocol.close_rcvd is not None and protocol.close_rcvd.code == 1007
        finally:
            sock.close()
        await healthy_and_all_let_go(server, client, tasks)


HOSTILE_TEXTS = [
    ("[" * 30_000 + "]" * 30_000, "message", "not valid JSON"),  # nested beyond the parser
    ('{"op":' * 5_000 + '"ping"' + "}" * 5_000, "message", "not valid JSON"),
    ("ы" * 40_000, "message", "larger than 65536 bytes"),  # 40 000 characters, 80 000 bytes
    (
        '{"op": "subscribe", "indices": ["IMOEX"], "from_seq": {"IMOEX": 1e400}}',
        "from_seq.IMOEX",
        "integer",
    ),
    (
        '{"op": "subscribe", "indices": [' + ",".join(['"IMOEX"'] * 5000) + "]}",
        "indices",
        "at most 64",
    ),
    (
        '{"op": "subscribe", "indices": ["IMOEX"], "channel": {"$ne": 1}}',
        "channel",
        "must be a string",
    ),
    ('{"op": "\\ud800"}', "op", "unknown operation"),
    ("\x00", "message", "not valid JSON"),
]


async def test_hostile_text_messages_get_errors_and_the_connection_keeps_working() -> None:
    async with served_settled() as (server, engine, client):
        tasks = await settled(server, client)
        async with ws_connect(server) as ws:
            for text, field, words in HOSTILE_TEXTS:
                await ws.send(text)
                answer = await receive(ws)
                assert (answer["type"], answer["field"]) == ("error", field), (text[:40], answer)
                assert words in answer["reason"], answer
            # A thousand binary frames, some large: one error each, in order, nothing else.
            for n in range(1000):
                await ws.send(bytes(n % 256 for _ in range(60_000 if n % 100 == 0 else 16)))
            answers = [await receive(ws) for _ in range(1000)]
            assert {(a["type"], a["field"]) for a in answers} == {("error", "message")}
            assert (await on_server(server))["clients"] == 0  # none of it subscribed anything
            await ws.send('{"op": "subscribe", "indices": ["IMOEX"]}')
            assert (await receive(ws))["type"] == "snapshot"
            assert await server.call(lambda: engine.publish(GRID))
            update = await receive(ws)
            assert (update["type"], update["code"], update["seq"]) == ("update", "IMOEX", 1)
        await healthy_and_all_let_go(server, client, tasks)


# --- floods ---------------------------------------------------------------------------------

BURST = [
    ({"op": "subscribe", "indices": ["IMOEX", "RTSI"]}, ["snapshot", "snapshot"]),
    ({"op": "unsubscribe", "indices": ["RTSI"]}, ["unsubscribed"]),
    ({"op": "subscribe", "indices": ["NOPE"]}, ["error"]),
    ({"op": "ping"}, ["pong"]),
]
ROUNDS = 1500  # 6000 messages sent back to back, 7500 answers


async def test_thousands_of_subscribe_operations_in_a_burst_are_answered_in_order() -> None:
    async with served_settled() as (server, engine, client):
        tasks = await settled(server, client)
        async with ws_connect(server) as ws:
            texts = [json.dumps(message) for message, _ in BURST]
            expected = [kind for _ in range(ROUNDS) for _, kinds in BURST for kind in kinds]

            async def flood() -> None:
                for _ in range(ROUNDS):
                    for text in texts:
                        await ws.send(text)

            sending = asyncio.create_task(flood())
            got = [(await receive(ws, timeout=30))["type"] for _ in expected]
            await sending
            assert got == expected
            # Where the burst left it: IMOEX subscribed, RTSI not; one subscribed client.
            state = await on_server(server)
            assert (state["clients"], state["connections"]) == (1, 1)
            assert await server.call(lambda: engine.publish(GRID))
            update = await receive(ws)
            assert (update["type"], update["code"], update["seq"]) == ("update", "IMOEX", 1)
            await ws.send('{"op": "ping"}')
            assert (await receive(ws))["type"] == "pong"  # and no RTSI update before it
        await healthy_and_all_let_go(server, client, tasks)


async def test_connections_beyond_the_limit_per_address_are_refused_with_4029() -> None:
    limit, attempts = 10, 40
    async with served_settled(access=Access(max_per_address=limit)) as (server, _, client):
        tasks = await settled(server, client)
        admitted: list[ClientConnection] = []

        async def attempt() -> tuple[int, str] | None:
            ws = await ws_connect(server)
            try:
                await ws.send('{"op": "ping"}')
                await receive(ws)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code, closed.rcvd.reason
            admitted.append(ws)
            return None

        try:
            outcomes = await asyncio.gather(*(attempt() for _ in range(attempts)))
            refusals = Counter(outcome for outcome in outcomes if outcome is not None)
            assert len(admitted) == limit
            reason = f"too many connections: at most {limit} connections per client address"
            assert refusals == {(4029, reason): attempts - limit}
            state = await on_server(server)
            assert (state["connections"], state["access"]["open"]) == (limit, limit)
            assert state["access"]["refused"] == {"4029": attempts - limit}
        finally:
            await asyncio.gather(*(ws.close() for ws in admitted))
        await healthy_and_all_let_go(server, client, tasks)


async def test_a_client_that_floods_requests_and_never_reads_is_let_go() -> None:
    # Its answers pile up until the server cannot write, so the server stops reading it too;
    # the answer it is stuck on counts as lag, and past the limit the connection is dropped.
    async with served_settled(ws_max_lag_seconds=1.0) as (server, _, client):
        tasks = await settled(server, client)
        reader = await ws_connect(server)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(10)
        protocol = ClientProtocol(parse_uri(server.ws_url))
        try:
            protocol.send_request(protocol.connect())
            await asyncio.to_thread(sock.sendall, b"".join(protocol.data_to_send()))
            while protocol.state.name == "CONNECTING":
                protocol.receive_data(await asyncio.to_thread(sock.recv, 4096))
            sock.setblocking(False)
            ping = b'{"op":"ping"}'
            pending = b""
            deadline = time.monotonic() + 20
            blocked_since: float | None = None
            # Send pings until the server has stopped taking them for a second.
            while time.monotonic() < deadline:
                if not pending:
                    for _ in range(100):
                        protocol.send_text(ping)
                    pending = b"".join(protocol.data_to_send())
                try:
                    sent = sock.send(pending)
                    pending = pending[sent:]
                    blocked_since = None
                except BlockingIOError:
                    blocked_since = blocked_since or time.monotonic()
                    if time.monotonic() - blocked_since > 1.0:
                        break
                    await asyncio.sleep(0.01)
            assert blocked_since is not None, "the server kept reading a client that never reads"
            # Everyone else is served meanwhile.
            await reader.send('{"op": "ping"}')
            assert (await receive(reader))["type"] == "pong"
            assert (await client.get("/healthz")).status_code == 200

            async def only_the_reader() -> bool | None:
                state = await on_server(server)
                return True if state["connections"] == state["access"]["open"] == 1 else None

            await wait_until(only_the_reader, timeout=20)
            assert (await on_server(server))["closed_slow"] >= 1
        finally:
            sock.close()
            await reader.close()
        await healthy_and_all_let_go(server, client, tasks)


async def test_handshakes_that_never_finish_do_not_hold_up_anyone_else() -> None:
    async with served_settled() as (server, _, client):
        tasks = await settled(server, client)
        stalled = []
        try:
            for n in range(50):
                sock = socket.create_connection(("127.0.0.1", server.port))
                # Half a request line, or an upgrade request without its last empty line.
                sock.sendall(
                    b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    if n % 2
                    else b"GET /v1/indi"
                )
                stalled.append(sock)
            async with ws_connect(server) as ws:
                await ws.send('{"op": "subscribe", "indices": ["IMOEX"]}')
                assert (await receive(ws))["type"] == "snapshot"
            assert (await client.get("/v1/indices/IMOEX/constituents")).status_code == 200
        finally:
            for sock in stalled:
                sock.close()
        await healthy_and_all_let_go(server, client, tasks)
