"""The fan-out's write path: many subscribers on a real uvicorn get every update once and in
order with one task per connection (the server's own), a send the socket takes at once runs to
its end where it is made, one that must wait goes on in a task, and an idle connection keeps no
queue. The slow-consumer side of the same path is in test_ws_slow.py."""

from __future__ import annotations

import asyncio
import json
import math
import time

from serving import RunningServer, make_app, make_engine, receive, running, wait_until, ws_connect

from app.broadcast import Broadcaster
from app.outbox import NOTHING_QUEUED, Entry, Outbox
from app.ws import Turn, finish, step
from streaming.store.memory import MemoryStore

GRID = float(math.floor(time.time())) - 3600
CODES = ("IMOEX", "RTSI")
CLIENTS = 40
ROUNDS = 5


async def server_tasks(server: RunningServer) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return await server.call(count)


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
