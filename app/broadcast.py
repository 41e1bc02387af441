"""Fan-out of publications to WebSocket clients: one consumer of the store channel per process,
one serialisation per publication, one bounded queue per client.

Slow-consumer policy: each client has a queue of at most `capacity` updates. When it is full the
OLDEST queued update is dropped (the newer value supersedes it) and the client's `dropped`
counter goes up. Publishing never waits for a client, so a stuck client delays nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from streaming.publication import Publication
from streaming.store.base import Store

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Update:
    """One publication, serialised once and shared by every subscriber."""

    code: str
    seq: int
    text: str  # the JSON {"type": "update", ...} message


def serialise(publication: Publication) -> Update:
    """The update message of a publication as compact JSON text."""
    text = json.dumps(publication.message("update"), separators=(",", ":"))
    return Update(publication.code, publication.seq, text)


class Subscriber:
    """A client's bounded queue of updates (drop-oldest when full) and its subscribed codes."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.codes: set[str] = set()
        self.dropped = 0  # updates discarded because the client did not keep up
        self.delivered = 0
        self._queue: deque[Update] = deque()
        self._ready = asyncio.Event()

    def offer(self, update: Update) -> None:
        """Queue an update without ever waiting; drop the oldest one if the queue is full."""
        if len(self._queue) >= self.capacity:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(update)
        self._ready.set()

    async def next(self) -> Update:
        """Wait for and take the oldest queued update."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def __len__(self) -> int:
        return len(self._queue)


class Broadcaster:
    """Consumes store.subscribe() in one task and hands each update to the subscribed clients."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_code: dict[str, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self.received = 0  # publications taken from the store channel
        self.dropped_total = 0  # updates dropped across all clients since start
        self.channel_errors = 0

    async def start(self) -> None:
        """Subscribe to the store channel now, then consume it in a single task."""
        if self._task is None:
            # Subscribed before start() returns: nothing published after startup is missed.
            channel = self._store.subscribe()
            self._task = asyncio.create_task(self._run(channel), name="broadcast")

    async def stop(self) -> None:
        """Stop consuming; clients stay registered until they disconnect."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def register(self, subscriber: Subscriber, codes: Iterable[str]) -> None:
        """Deliver future publications of these codes to the subscriber."""
        for code in codes:
            subscriber.codes.add(code)
            self._by_code.setdefault(code, set()).add(subscriber)

    def unregister(self, subscriber: Subscriber, codes: Iterable[str] | None = None) -> None:
        """Stop delivering these codes (all of them when None) to the subscriber."""
        for code in list(subscriber.codes if codes is None else codes):
            subscriber.codes.discard(code)
            clients = self._by_code.get(code)
            if clients is not None:
                clients.discard(subscriber)
                if not clients:
                    del self._by_code[code]

    def dispatch(self, publication: Publication) -> None:
        """Serialise once and queue for every subscriber of the code; never waits."""
        clients = self._by_code.get(publication.code)
        self.received += 1
        if not clients:
            return
        update = serialise(publication)
        for client in clients:
            if len(client) >= client.capacity:
                self.dropped_total += 1
            client.offer(update)

    def clients(self) -> int:
        """How many distinct clients are subscribed to anything."""
        return len({client for clients in self._by_code.values() for client in clients})

    def stats(self) -> dict[str, Any]:
        """Counters for the readiness endpoint."""
        return {
            "running": self.running,
            "clients": self.clients(),
            "publications_received": self.received,
            "updates_dropped": self.dropped_total,
            "channel_errors": self.channel_errors,
        }

    async def _run(self, channel: AsyncIterator[Publication]) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                async for publication in channel:
                    self.dispatch(publication)
                    delay = RETRY_FIRST_SECONDS
                log.warning("publication channel ended; subscribing again in %.1f s", delay)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A failing channel must not end the fan-out for the life of the process.
                self.channel_errors += 1
                log.warning("publication channel failed (%s); retrying in %.1f s", error, delay)
            finally:
                close = getattr(channel, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            channel = self._store.subscribe()
