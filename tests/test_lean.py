"""app.lean: Flag and Inbox behave as the asyncio.Event and asyncio.Queue they stand in for."""

from __future__ import annotations

import asyncio

import pytest

from app.lean import Flag, Inbox


async def test_flag_wakes_every_waiter_and_stays_set_until_cleared() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set()
    assert await asyncio.wait_for(flag.wait(), 1) is True  # set: returns at once
    flag.clear()
    assert not flag.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.05)


async def test_flag_waiter_cancelled_is_forgotten_and_others_still_woken() -> None:
    flag = Flag()
    cancelled = asyncio.create_task(flag.wait())
    kept = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    flag.set()
    assert await asyncio.wait_for(kept, 1) is True


async def test_flag_set_then_cleared_before_the_waiter_runs_still_wakes_it() -> None:
    """As asyncio.Event: a set() that happened wakes the waiter even if cleared right after."""
    flag = Flag()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    flag.set()
    flag.clear()
    assert await asyncio.wait_for(waiter, 1) is True


async def test_inbox_is_fifo_and_wakes_its_reader() -> None:
    inbox: Inbox[int] = Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await asyncio.wait_for(reader, 1) == 1
    assert inbox.qsize() == 1 and not inbox.empty()
    assert await inbox.get() == 2
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()


async def test_inbox_reader_cancelled_loses_nothing() -> None:
    inbox: Inbox[str] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    inbox.put_nowait("kept")
    assert await asyncio.wait_for(inbox.get(), 1) == "kept"


async def test_inbox_refuses_a_second_waiting_reader() -> None:
    inbox: Inbox[int] = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        await inbox.get()
    inbox.put_nowait(7)
    assert await asyncio.wait_for(first, 1) == 7
