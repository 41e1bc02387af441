"""The fan-out's write path: many subscribers on a real uvicorn get every update once and in
order with one task per connection (the server's own), a send the socket takes at once runs to
its end where it is made, one that must wait goes on in a task, and an idle connection keeps no
queue. The slow-consumer side of the same path is in test_ws_slow.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from serving import (
    RunningServer,
    grid_start,
    make_app,
    make_engine,
    receive,
    running,
    wait_until,
    ws_connect,
)

from app.broadcast import Broadcaster
from app.outbox import NOTHING_QUEUED, Entry, Outbox
from app.subscription import Client, Policy
from app.ws import Turn, finish, step
from streaming.store.memory import MemoryStore

GRID = grid_start()
CODES = ("IMOEX", "RTSI")
CLIENTS = 40
ROUNDS = 5


async def server_tasks(server: RunningServer) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return await server.call(count)


@pytest.mark.system
async def test_every_subscriber_gets_every_update_once_in_order_with_one_task_each() -> None:
    store = MemoryStore()
    engine = make_engine(store)
    async with running(make_app(store, engine)) as server:
        idle_tasks = await server_tasks(server)
        clients = [await ws_connect(server, compression=None) for _ in range(CLIENTS)]
        try:
            for ws in clients:
                await ws.send(json.dumps({"op": "subscribe", "indices": list(CODES)}))
                assert {(await receive(ws))["type"] for _ in CODES} == {"snapshot"}

            async def all_attached() -> bool | None:
                broadcaster: Broadcaster = server.app.state.broadcaster

                async def count() -> int:
                    return broadcaster.clients()

                return True if await server.call(count) == CLIENTS else None

            await wait_until(all_attached)
            # One task per connection, the server's: no reader, sender or watcher beside it.
            assert await server_tasks(server) - idle_tasks <= CLIENTS
            for n in range(1, ROUNDS + 1):
                assert await server.call(lambda n=n: engine.publish(GRID + n))
            for ws in clients:
                got: dict[str, list[int]] = {code: [] for code in CODES}
                for _ in range(ROUNDS * len(CODES)):
                    message = await receive(ws)
                    assert message["type"] == "update" and "conflated" not in message
                    got[message["code"]].append(message["seq"])
                assert got == {code: list(range(1, ROUNDS + 1)) for code in CODES}
        finally:
            for ws in clients:
                await ws.close()


async def test_a_send_the_socket_takes_at_once_completes_without_a_task() -> None:
    written: list[str] = []

    async def immediate() -> None:
        written.append("now")

    assert step(immediate()) is None
    assert written == ["now"]

    writable = asyncio.Event()

    async def backed_up() -> None:
        await writable.wait()
        written.append("later")

    send = backed_up()
    waiting = step(send)
    assert isinstance(waiting, asyncio.Future)  # it waits on the socket: a task takes over
    task = asyncio.create_task(finish(send, waiting))
    await asyncio.sleep(0.01)
    assert written == ["now"] and not task.done()
    writable.set()
    await asyncio.wait_for(task, 5)
    assert written == ["now", "later"]


async def test_an_abandoned_send_writes_nothing() -> None:
    writable = asyncio.Event()
    written: list[str] = []

    async def backed_up() -> None:
        await writable.wait()
        written.append("late")

    send = backed_up()
    task = asyncio.create_task(finish(send, step(send)))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writable.set()
    await asyncio.sleep(0.01)
    assert written == [] and task.cancelled()


async def test_one_writer_at_a_time_in_the_order_they_asked() -> None:
    turn = Turn()
    order: list[str] = []
    await turn.take()

    async def writer(name: str) -> None:
        await turn.take()
        order.append(name)
        turn.give()

    waiting = [asyncio.create_task(writer(name)) for name in ("a", "b")]
    await asyncio.sleep(0.01)
    assert order == [] and turn.taken
    turn.give()
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert sorted(order) == ["a", "b"] and not turn.taken


def test_an_idle_outbox_holds_no_queue_and_tells_its_listener() -> None:
    outbox = Outbox(capacity=4)
    told: list[int] = []
    outbox.listener = lambda: told.append(len(outbox))
    assert outbox._queue is NOTHING_QUEUED
    text = '{"type":"update","code":"IMOEX","seq":1}'
    outbox.put(Entry(("index", "IMOEX"), 1, text, 0.0))
    outbox.put(Entry(("index", "RTSI"), 1, text, 0.0))
    assert told == [1, 2]
    first, second = outbox.pop(), outbox.pop()
    assert first is not None and second is not None
    assert (first.key[1], second.key[1]) == ("IMOEX", "RTSI")
    assert outbox.pop() is None and outbox._queue is NOTHING_QUEUED and len(outbox) == 0


def shared_client(open_round: bool = True) -> tuple[Client, list[int]]:
    """A client whose connection takes a round's frames straight to its socket (or not);
    counts how often it was asked."""
    asked: list[int] = []

    def opened() -> bool:
        asked.append(1)
        return open_round

    client = Client(Policy())
    client.open_round = opened
    return client, asked


def test_a_quiet_connection_takes_the_round_frames_without_queueing() -> None:
    client, asked = shared_client()
    key = ("index", "IMOEX")
    client.index["IMOEX"] = False
    assert client.offer_shared(key, 5, "five", b"F5", 0.0) == 0
    assert client.offer_shared(("index", "RTSI"), 9, "nine", b"F9", 0.0) == 0
    assert len(asked) == 1  # asked once per round
    assert not len(client.outbox)
    assert client.floors[key] == 5
    assert client.take_pending() == [b"F5", b"F9"]
    assert client.sent == 2 and client.take_pending() is None


def test_a_round_frame_at_or_below_what_the_client_has_is_not_sent() -> None:
    """A snapshot read after the commit but before the channel message set the floor."""
    client, _ = shared_client()
    key = ("index", "IMOEX")
    client.floors[key] = 7
    client.offer_shared(key, 7, "seven", b"F7", 0.0)
    client.offer_shared(key, 8, "eight", b"F8", 0.0)
    assert client.take_pending() == [b"F8"]
    assert client.floors[key] == 8


def test_behind_a_queue_or_a_hold_or_a_busy_socket_the_frame_is_queued() -> None:
    key = ("index", "IMOEX")
    busy, _ = shared_client(open_round=False)
    busy.index["IMOEX"] = False
    busy.offer_shared(key, 1, "one", b"F1", 0.0)
    assert busy.pending is None and len(busy.outbox) == 1

    queued, asked = shared_client()
    queued.index["IMOEX"] = False
    queued.offer_heartbeat("beat")
    queued.offer_shared(key, 1, "one", b"F1", 0.0)
    assert not asked and queued.pending is None and len(queued.outbox) == 2

    holding, asked = shared_client()
    holding.index["IMOEX"] = False
    holding.hold(key)
    holding.offer_shared(key, 1, "one", b"F1", 0.0)
    assert not asked and holding.pending is None and holding.first_held(key) == 1


def test_an_unsubscribe_or_a_new_hold_takes_the_key_out_of_the_round() -> None:
    """Nothing of a key goes out after its unsubscribe is acknowledged, nor ahead of the
    snapshot a new subscription reads."""
    client, _ = shared_client()
    imoex, rtsi = ("index", "IMOEX"), ("index", "RTSI")
    client.offer_shared(imoex, 5, "i5", b"I5", 0.0)
    client.offer_shared(rtsi, 9, "r9", b"R9", 0.0)
    client.forget(imoex)
    assert client.pending_keys == [rtsi]
    client.hold(rtsi)
    assert client.take_pending() == []
    assert client.sent == 0
