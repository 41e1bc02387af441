"""One connection's bounded queue of outgoing feed messages, conflating when it fills.

Slow-consumer policy (docs/protocol.md): messages are queued in arrival order while there is room.
When the queue is full, it is conflated: per key (channel and index code) only the newest message
is kept, in the place it had, and it carries how many older ones of its key it replaced
(`"conflated": n` on the wire). A client that falls behind therefore always gets the latest value
of everything it subscribed to, and the queue holds at most max(capacity, number of keys) messages
whatever the client does. Heartbeats conflate too but are not counted as dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from app.protocol import text_frame, with_fields

Key = tuple[str, str]  # (channel, index code); ("heartbeat", "") and ("live", "") for the others
HEARTBEAT: Key = ("heartbeat", "")


@dataclass(slots=True)
class Entry:
    """A message waiting to be sent; its text is shared with every other client that gets it."""

    key: Key
    seq: int | None  # the publication's seq for ordered channels, None otherwise
    text: str  # compact JSON object
    since: float  # monotonic seconds: when the oldest value this entry stands for was queued
    conflated: int = 0  # older messages of this key it replaced
    frame: bytes | None = None  # the text as a WebSocket frame, built once and shared, if known

    def wire(self) -> str:
        """The text to send: the shared one, or a copy saying how many it replaced."""
        return with_fields(self.text, conflated=self.conflated) if self.conflated else self.text

    def wire_frame(self) -> bytes:
        """`wire()` as a WebSocket text frame: the shared one when there is one."""
        if self.frame is not None and not self.conflated:
            return self.frame
        return text_frame(self.wire())


NOTHING_QUEUED: deque[Entry] = deque(maxlen=0)  # shared and never appended to: always empty


class Outbox:
    """Bounded FIFO of entries with conflation per key once it is full; never waits to put."""

    __slots__ = ("_queue", "_ready", "capacity", "dropped", "high_water", "listener")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0  # messages replaced by a newer one of their key (heartbeats aside)
        self.high_water = 0  # the most entries ever held at once
        self.listener: Callable[[], None] | None = None  # told of every put (the sender)
        # Most of the time a connection has nothing queued: the deque exists only while it has.
        self._queue: deque[Entry] = NOTHING_QUEUED
        self._ready: asyncio.Event | None = None  # made only while someone waits in get()

    def put(self, entry: Entry) -> int:
        """Queue an entry, conflating if the queue is full; returns how many were dropped."""
        before = self.dropped
        if len(self._queue) >= self.capacity:
            self._conflate(entry)
        else:
            if self._queue is NOTHING_QUEUED:
                self._queue = deque()
            self._queue.append(entry)
        if len(self._queue) > self.high_water:
            self.high_water = len(self._queue)
        if self._ready is not None:
            self._ready.set()
        if self.listener is not None:
            self.listener()
        return self.dropped - before

    def _conflate(self, new: Entry) -> None:
        newest: dict[Key, Entry] = {}
        for entry in self._queue:
            older = newest.get(entry.key)
            if older is not None:
                self._absorb(entry, older)
            newest[entry.key] = entry
        older = newest.pop(new.key, None)
        if older is not None:
            self._absorb(new, older)
        kept = {id(entry) for entry in newest.values()}
        self._queue = deque(entry for entry in self._queue if id(entry) in kept)
        self._queue.append(new)

    def _absorb(self, newer: Entry, older: Entry) -> None:
        newer.since = min(newer.since, older.since)
        if newer.key != HEARTBEAT:
            newer.conflated += older.conflated + 1
            self.dropped += 1

    def discard(self, key: Key) -> None:
        """Forget every queued entry of this key (an unsubscribe or a fresh subscription)."""
        if any(entry.key == key for entry in self._queue):
            self._queue = deque(entry for entry in self._queue if entry.key != key)
            if not self._queue:
                self._queue = NOTHING_QUEUED

    def oldest(self) -> float | None:
        """Monotonic seconds when the oldest undelivered value was queued; None when empty."""
        return min((entry.since for entry in self._queue), default=None)

    def pop(self) -> Entry | None:
        """Take the oldest entry now, or None when there is none."""
        if not self._queue:
            return None
        entry = self._queue.popleft()
        if not self._queue:
            self._queue = NOTHING_QUEUED
        return entry

    async def get(self) -> Entry:
        """Wait for and take the oldest entry."""
        while not self._queue:
            if self._ready is None:
                self._ready = asyncio.Event()
            self._ready.clear()
            await self._ready.wait()
        entry = self.pop()
        assert entry is not None
        return entry

    def __len__(self) -> int:
        return len(self._queue)
