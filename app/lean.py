"""Lean stand-ins for asyncio.Event and asyncio.Queue, for objects that exist once per WebSocket
connection and so thousands of times over.

asyncio's own allocate a deque (760 bytes, empty) for their waiters, and a Queue has three of them
plus an Event: some 4 KiB for each connection that never has more than one waiter and rarely more
than one message queued. These keep the same interface and semantics (what uvicorn's WebSocket
protocol uses of them) and allocate only while someone waits.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Flag:
    """asyncio.Event's interface: set, clear, is_set, wait (any number of waiters)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True


class Inbox(Generic[T]):
    """asyncio.Queue's interface as one reader uses it: put_nowait, get, empty, qsize
    (unbounded, first in first out, one waiting reader at a time)."""

    __slots__ = ("_items", "_reader")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._reader: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def get(self) -> T:
        while not self._items:
            if self._reader is not None:
                raise RuntimeError("Inbox has one reader; another is already waiting")
            reader: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reader = reader
            try:
                await reader
            finally:
                self._reader = None
        return self._items.pop(0)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)
