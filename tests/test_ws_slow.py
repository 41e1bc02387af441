"""Slow consumers on WS /v1/ws under a real uvicorn: a client that stops reading gets the latest
value of each index with the count of those it missed, never holds up a client that reads, stays
within a bounded queue, and is closed with a reason once it is too far behind. Then the queue and
the hand-over of held messages on their own, without a network."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from serving import RunningServer, make_app, make_engine, receive, running, wait_until, ws_connect
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.uri import parse_uri

from app.broadcast import Broadcaster
from app.outbox import HEARTBEAT, Entry, Outbox
from app.subscription import Client, Policy
from streaming.engine import Engine
from streaming.store.memory import MemoryStore

GRID = float(math.floor(time.time())) - 7200
CODES = ("IMOEX", "RTSI")
MAX_ROUNDS = 20_000

Served = tuple[RunningServer, Engine]


@contextlib.asynccontextmanager
async def serve(**settings: Any) -> AsyncIterator[Served]:
    store = MemoryStore()
    engine = make_engine(store)
    async with running(make_app(store, engine, **settings)) as server:
        yield server, engine


def tiny_receive_buffer_socket(port: int) -> socket.socket:
    """A connected socket whose kernel receive buffer is as small as the system allows."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def slow_client(server: RunningServer) -> ClientConnection:
    """A real client that reads only when told to: it buffers one message, then stops reading."""
    return await ws_connect(
        server,
        sock=tiny_receive_buffer_socket(server.port),
        max_queue=1,
        compression=None,
        ping_interval=None,
    )


async def broadcast(server: RunningServer) -> dict[str, Any]:
    broadcaster: Broadcaster = server.app.state.broadcaster

    async def read() -> dict[str, Any]:
        return broadcaster.stats()

    return await server.call(read)


async def subscribe(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"op": "subscribe", "indices": list(CODES)}))
    assert [(await receive(ws))["type"] for _ in CODES] == ["snapshot"] * len(CODES)


async def publish_in_step(
    server: RunningServer, engine: Engine, reader: ClientConnection, until: str, at_least: int
) -> int:
    """Publish round after round, each read in full by `reader` (so it is never behind), until
    the broadcast counter `until` reaches `at_least`; returns the rounds published."""
    rounds = 0
    while rounds < MAX_ROUNDS:
        rounds += 1
        assert await server.call(lambda grid=GRID + rounds: engine.publish(grid))
        got = sorted([(m["code"], m["seq"]) for m in [await receive(reader) for _ in CODES]])
        assert got == [(code, rounds) for code in CODES], "a reading client fell behind"
        if rounds % 25 == 0 and (await broadcast(server))[until] >= at_least:
            return rounds
    raise AssertionError(f"{until} never reached {at_least}")


@pytest.mark.system
async def test_a_slow_reader_gets_the_latest_values_and_the_count_it_missed() -> None:
    queue_size = 4
    async with serve(ws_queue_size=queue_size) as (server, engine):
        slow, fast = await slow_client(server), await ws_connect(server)
        try:
            await subscribe(slow)
            await subscribe(fast)
            rounds = await publish_in_step(server, engine, fast, "updates_dropped", 50)

            async def outbox_peak() -> int:
                broadcaster: Broadcaster = server.app.state.broadcaster
                return max(client.outbox.high_water for client in broadcaster._clients)

            # Bounded whatever the client does: the queue never held more than its capacity.
            assert await server.call(outbox_peak) <= queue_size

            last = {code: 0 for code in CODES}
            conflated = 0
            while any(seq < rounds for seq in last.values()):
                message = await receive(slow)
                code, seq = message["code"], message["seq"]
                # Each message says how many of its index it replaced: seqs skip exactly that.
                assert seq - last[code] - 1 == message.get("conflated", 0), (message, last)
                conflated += message.get("conflated", 0)
                last[code] = seq
            assert last == {code: rounds for code in CODES}  # the latest values arrived
            assert conflated >= 50
            assert (await broadcast(server))["closed_slow"] == 0
        finally:
            await fast.close()
            await slow.close()


@pytest.mark.system
async def test_a_client_too_far_behind_is_closed_with_the_reason() -> None:
    async with serve(ws_queue_size=4, ws_max_lag_seconds=1.0) as (server, engine):
        slow, fast = await slow_client(server), await ws_connect(server)
        try:
            await subscribe(slow)
            await subscribe(fast)
            rounds = await publish_in_step(server, engine, fast, "closed_slow", 1)
            # Reading again, it finds what was already on its way, then the close frame.
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await receive(slow)
            assert slow.close_code == 4008
            assert slow.close_reason is not None
            assert (
                slow.close_reason.startswith("too slow: ")
                and "s behind (limit 1 s)" in slow.close_reason
            )
            # The client that kept up is still served.
            assert await server.call(lambda: engine.publish(GRID + rounds + 1))
            assert {(await receive(fast))["seq"] for _ in CODES} == {rounds + 1}
        finally:
            await fast.close()
            await slow.close()


@pytest.mark.system
async def test_a_client_that_lost_too_many_updates_is_closed() -> None:
    async with serve(ws_queue_size=2, ws_max_dropped=10) as (server, engine):
        slow, fast = await slow_client(server), await ws_connect(server)
        try:
            await subscribe(slow)
            await subscribe(fast)
            await publish_in_step(server, engine, fast, "closed_slow", 1)
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await receive(slow)
            assert slow.close_code == 4008
            assert slow.close_reason is not None
            assert (
                slow.close_reason.startswith("too slow: ")
                and "updates dropped (limit 10)" in slow.close_reason
            )
        finally:
            await fast.close()
            await slow.close()


@pytest.mark.system
async def test_a_client_that_never_reads_is_let_go() -> None:
    # A raw socket that completes the handshake, subscribes, and never reads another byte: not
    # even a close frame can reach it, yet the server lets go of everything it held for it.
    async with serve(ws_queue_size=4, ws_max_lag_seconds=0.5) as (server, engine):
        fast = await ws_connect(server)
        sock = tiny_receive_buffer_socket(server.port)
        sock.setblocking(True)
        protocol = ClientProtocol(parse_uri(server.ws_url))
        try:
            protocol.send_request(protocol.connect())
            await asyncio.to_thread(sock.sendall, b"".join(protocol.data_to_send()))
            while protocol.handshake_exc is None and protocol.state.name == "CONNECTING":
                protocol.receive_data(await asyncio.to_thread(sock.recv, 4096))
            assert protocol.handshake_exc is None
            protocol.send_text(json.dumps({"op": "subscribe", "indices": list(CODES)}).encode())
            await asyncio.to_thread(sock.sendall, b"".join(protocol.data_to_send()))
            await subscribe(fast)
            await publish_in_step(server, engine, fast, "closed_slow", 1)

            async def only_the_reader_left() -> bool | None:
                stats = await broadcast(server)
                return True if stats["connections"] == stats["access"]["open"] == 1 else None

            # Forgotten by the fan-out at once, its place given back after the close attempt.
            await wait_until(only_the_reader_left, timeout=15)
        finally:
            sock.close()
            await fast.close()


@pytest.mark.system
async def test_a_stuck_client_does_not_delay_the_rest_of_the_service() -> None:
    async with serve(ws_queue_size=4) as (server, engine):
        stuck = [await slow_client(server) for _ in range(3)]
        try:
            for ws in stuck:
                await subscribe(ws)
            fast = await ws_connect(server)
            await subscribe(fast)
            await publish_in_step(server, engine, fast, "updates_dropped", 100)
            async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
                assert (await client.get("/v1/indices/IMOEX")).status_code == 200
            await fast.send(json.dumps({"op": "ping"}))
            assert (await receive(fast))["type"] == "pong"
            await fast.close()
        finally:
            for ws in stuck:
                ws.transport.abort()


# --- the queue itself, without a network -------------------------------------------------


def entry(code: str, seq: int, since: float = 0.0) -> Entry:
    return Entry(("index", code), seq, f'{{"code":"{code}","seq":{seq}}}', since)


async def test_a_full_queue_keeps_the_newest_per_key_in_place_with_the_count() -> None:
    outbox = Outbox(capacity=4)
    for item in [entry("A", 1, 1.0), entry("B", 1, 2.0), entry("A", 2, 3.0), entry("A", 3, 4.0)]:
        assert outbox.put(item) == 0
    assert outbox.put(entry("B", 2, 5.0)) == 3  # full: A1, A2 and B1 give way
    assert len(outbox) == 2 and outbox.high_water == 4
    assert outbox.oldest() == 1.0  # the lag counts from the oldest value not delivered
    first, second = await outbox.get(), await outbox.get()
    assert (first.key[1], first.seq, first.conflated) == ("A", 3, 2)
    assert json.loads(first.wire()) == {"code": "A", "seq": 3, "conflated": 2}
    assert (second.key[1], second.seq, second.conflated) == ("B", 2, 1)
    assert outbox.dropped == 3 and outbox.oldest() is None


def test_heartbeats_conflate_without_counting_as_dropped() -> None:
    outbox = Outbox(capacity=1)
    outbox.put(Entry(HEARTBEAT, None, '{"type":"heartbeat"}', 0.0))
    outbox.put(Entry(HEARTBEAT, None, '{"type":"heartbeat"}', 1.0))
    assert len(outbox) == 1 and outbox.dropped == 0


def test_messages_held_during_a_read_are_released_above_the_floor() -> None:
    client = Client(Policy(queue_size=4))
    client.index["IMOEX"] = False
    key = ("index", "IMOEX")
    client.hold(key)
    for seq in range(1, 11):  # the hold keeps the last four: 7..10
        client.offer(key, seq, f'{{"seq":{seq}}}')
    assert client.first_held(key) == 7 and len(client.outbox) == 0
    client.release(key, floor=3)
    released = list(client.outbox._queue)
    # 4..6 fell out of the hold: the first released message says so, as conflation would.
    assert [(e.seq, e.conflated) for e in released] == [(7, 3), (8, 0), (9, 0), (10, 0)]
    # Subscribing again starts over: what was queued goes, the new read sets the floor.
    client.hold(key)
    assert len(client.outbox) == 0
    client.offer(key, 11, '{"seq":11}')
    client.offer(key, 12, '{"seq":12}')
    client.release(key, floor=11)  # 11 was in the snapshot the client got: only 12 follows
    assert [e.seq for e in client.outbox._queue] == [12]
    assert client.floors[key] == 11
