"""The in-process Store: state, latest values and history in memory, fan-out over bounded queues.

Nothing survives a restart; it serves a single process (tests, demos, a one-box deployment).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from streaming.errors import LeaseLost
from streaming.publication import EngineState, Publication
from streaming.store.base import DEFAULT_HISTORY_LIMIT
from streaming.tick_stream import BATCH_FIELD, Fields, StreamLag, StreamReject, entry_key
from streaming.ticks import Tick, encode_ticks

T = TypeVar("T")

DEFAULT_SUBSCRIBER_QUEUE = 1024  # publications buffered per subscriber before the oldest goes


class Subscription(Generic[T]):
    """A live feed of publications for one consumer, buffered in a bounded queue.

    Slow-consumer policy: when the queue is full the OLDEST buffered publication is dropped to make
    room for the new one (counted in `dropped`), so the publisher never waits on a consumer and a
    consumer that falls behind sees the most recent values. It is registered the moment it is
    created, so everything published afterwards is delivered; it ends when closed (or when its
    store closes) and is forgotten once nothing refers to it.
    """

    def __init__(self, maxsize: int, skip: Callable[[T], bool] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"subscriber queue size must be at least 1, got {maxsize}")
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize)
        self._closed = False
        self._skip = skip  # True for what was published before the subscription began
        self.dropped = 0

    def offer(self, publication: T) -> None:
        """Buffer one publication without waiting; drop the oldest buffered one when full."""
        if self._closed or (self._skip is not None and self._skip(publication)):
            return
        self._put(publication)

    def _put(self, item: T | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def end(self) -> None:
        """Stop the feed: a waiting consumer wakes up and the iteration finishes."""
        if not self._closed:
            self._closed = True
            # The None marker wakes a consumer blocked in get(); what is buffered before it is
            # still delivered.
            self._put(None)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """End the feed (async-generator style, so `contextlib.aclosing` works)."""
        self.end()


class Fanout(Generic[T]):
    """The set of live subscriptions of one process; publishing never blocks."""

    def __init__(self, queue_size: int = DEFAULT_SUBSCRIBER_QUEUE) -> None:
        self.queue_size = queue_size
        # Weak references: a consumer that stops iterating without closing must not leak a queue.
        self._subscriptions: weakref.WeakSet[Subscription[T]] = weakref.WeakSet()

    def subscribe(self, skip: Callable[[T], bool] | None = None) -> Subscription[T]:
        """A new subscription that receives everything published from now on (but what `skip`
        says was published before)."""
        subscription: Subscription[T] = Subscription(self.queue_size, skip)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, publications: Sequence[T]) -> None:
        """Hand the publications, in order, to every live subscription."""
        for subscription in list(self._subscriptions):
            if subscription.closed:
                self._subscriptions.discard(subscription)
                continue
            for publication in publications:
                subscription.offer(publication)

    def close(self) -> None:
        """End every subscription."""
        for subscription in list(self._subscriptions):
            subscription.end()
        self._subscriptions.clear()

    def __len__(self) -> int:
        return sum(1 for subscription in self._subscriptions if not subscription.closed)


class MemoryStore:
    """Store kept in this process: history bounded to `history_limit` values per index."""

    name = "memory"

    def __init__(
        self,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
    ) -> None:
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self.history_limit = history_limit
        self._state: EngineState | None = None
        self._latest: dict[str, Publication] = {}
        self._history: dict[str, deque[Publication]] = {}
        self._fanout: Fanout[Publication] = Fanout(subscriber_queue)
        self._live: Fanout[str] = Fanout(subscriber_queue)
        self._lease: tuple[str, int] | None = None
        self._lease_until = 0.0
        self._fence = 0
        self._tick_entries: list[Fields] = []
        self._tick_delivered = 0  # entries handed to the reader
        self._tick_rejects: list[StreamReject] = []
        self._tick_arrived = asyncio.Event()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """End every live subscription; the stored data stays readable."""
        self._fanout.close()
        self._live.close()

    async def ping(self) -> bool:
        """Always True: the memory is this process."""
        return True

    async def load_state(self) -> EngineState | None:
        """A copy of the last committed state, or None before the first commit."""
        return None if self._state is None else _copy_state(self._state)

    async def commit(
        self,
        state: EngineState,
        publications: Sequence[Publication],
        lease: tuple[str, int] | None = None,
    ) -> None:
        """Save state, latest values and history, then hand the publications to subscribers."""
        if lease is not None and lease != self._lease:
            raise LeaseLost("the leader lease is held by another engine")
        # A copy, as Redis would keep: the engine goes on mutating its own state object.
        self._state = _copy_state(state)
        for publication in publications:
            self._latest[publication.code] = publication
            self._append_history(publication)
        self._fanout.publish(publications)

    def _append_history(self, publication: Publication) -> None:
        values = self._history.get(publication.code)
        if values is None:
            values = self._history[publication.code] = deque(maxlen=self.history_limit)
        if not values or values[-1].time < publication.time:
            values.append(publication)  # the usual case: the grid only moves forward
            return
        # A value for an instant already published (a restart re-publishing its last grid point)
        # replaces it, so history keeps one value per instant, as the Redis store does.
        ordered = list(values)
        times = [value.time for value in ordered]
        at = bisect.bisect_left(times, publication.time)
        if at < len(ordered) and ordered[at].time == publication.time:
            ordered[at] = publication
        else:
            ordered.insert(at, publication)
        values.clear()
        values.extend(ordered[-self.history_limit :])

    async def latest(self) -> dict[str, Publication]:
        """The last committed value per index code."""
        return dict(self._latest)

    async def history(
        self, code: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[Publication]:
        """Values of `code` with since <= time <= until, ascending; the latest `limit` if more."""
        values = self._history.get(code)
        if not values or limit <= 0:
            return []
        selected = [
            value
            for value in values
            if (since is None or value.time >= since) and (until is None or value.time <= until)
        ]
        return selected[-limit:]

    def subscribe(self) -> AsyncIterator[Publication]:
        """Live publications committed from now on, through a bounded drop-oldest queue."""
        return self._fanout.subscribe()

    async def replay_after(self, code: str, seq: int, limit: int) -> list[Publication] | None:
        """Publications of `code` with a sequence number above `seq`, ascending (at most
        `limit`); None when the history kept no longer reaches back to seq + 1 (a gap)."""
        return select_after(list(self._history.get(code, ())), seq, limit)

    def deliver_locally(self, publications: Sequence[Publication]) -> None:
        """Hand publications to subscribers without storing them."""
        self._fanout.publish(publications)

    async def acquire_lease(self, owner: str, ttl_ms: int) -> tuple[str, int] | None:
        """The leader lease within this process (a memory store has one engine)."""
        now = time.monotonic()
        if self._lease is not None and self._lease_until > now and self._lease[0] != owner:
            return None
        self._fence += 1
        self._lease, self._lease_until = (owner, self._fence), now + ttl_ms / 1000
        return self._lease

    async def renew_lease(self, lease: tuple[str, int], ttl_ms: int) -> bool:
        if self._lease != lease:
            return False
        self._lease_until = time.monotonic() + ttl_ms / 1000
        return True

    async def release_lease(self, lease: tuple[str, int]) -> None:
        if self._lease == lease:
            self._lease = None

    async def append_ticks(self, ticks: Sequence[Tick]) -> str:
        """Keep validated ticks in an in-process stream (not durable: the process is the store)."""
        self._tick_entries.append({BATCH_FIELD: encode_ticks(ticks)})
        self._tick_arrived.set()
        return f"{len(self._tick_entries)}-0"

    async def join_tick_stream(self, consumer: str, after: str) -> str | None:
        """Read the in-process stream from after entry `after` (one reader: the engine)."""
        self._tick_delivered = min(entry_key(after)[0], len(self._tick_entries))
        return None

    async def next_tick_entries(
        self,
        consumer: str,
        count: int,
        block_ms: int | None,
        applied: Sequence[str] = (),
        rejects: Sequence[StreamReject] = (),
        again: bool = False,
    ) -> list[tuple[str, Fields]]:
        """The next entries, waiting up to block_ms for one (nothing to acknowledge here)."""
        self._tick_rejects.extend(rejects)
        start = self._tick_delivered
        if start >= len(self._tick_entries) and block_ms and not again:
            self._tick_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_arrived.wait(), block_ms / 1000)
        chosen = self._tick_entries[start : start + count]
        self._tick_delivered = start + len(chosen)
        return [(f"{start + i + 1}-0", fields) for i, fields in enumerate(chosen)]

    async def tick_stream_lag(self) -> StreamLag | None:
        """Where the reader stands in the in-process stream."""
        last = len(self._tick_entries)
        return StreamLag(
            length=last,
            last_entry=f"{last}-0",
            delivered=f"{self._tick_delivered}-0",
            pending=0,
            undelivered=last - self._tick_delivered,
            readers=1,
        )

    async def tick_stream_readers(self) -> dict[str, int]:
        """One reader, the engine, holding nothing unacknowledged."""
        return {}

    async def announce_live(self, message: str) -> None:
        """Hand a live-values message (JSON text) to this process's live subscribers."""
        self._live.publish([message])

    def subscribe_live(self) -> AsyncIterator[str]:
        """Live-values messages announced from now on (drop-oldest when a reader lags)."""
        return self._live.subscribe()

    @property
    def subscriber_count(self) -> int:
        """Subscriptions currently open."""
        return len(self._fanout)


def select_after(ordered: list[Publication], seq: int, limit: int) -> list[Publication] | None:
    """From publications ascending by seq: those above `seq` (at most `limit`), or None when
    the oldest kept is later than seq + 1 and so some are missing."""
    after = [p for p in ordered if p.seq > seq]
    if after and after[0].seq > seq + 1:
        return None
    if not after and ordered and ordered[-1].seq < seq:
        return []  # the client is ahead (e.g. a reset store): nothing to send, no gap to report
    return after[:limit]


def _copy_state(state: EngineState) -> EngineState:
    return EngineState.loads(state.dumps())
