"""The Store interface the engine writes to and the API reads from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol

from streaming.publication import EngineState, Publication
from streaming.tick_stream import Fields, StreamLag, StreamReject
from streaming.ticks import Tick

DEFAULT_HISTORY_LIMIT = 20_000  # values kept per index: more than a day at a 15 s cadence


class Store(Protocol):
    """Engine state, last values, bounded history and a live channel of publications."""

    name: str  # "memory" or "redis"

    async def open(self) -> None:
        """Connect (Redis) or do nothing (memory). Raises StoreUnavailable if it cannot."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backing store answers."""

    async def load_state(self) -> EngineState | None:
        """The state saved with the last publication, or None on a fresh store."""

    async def commit(
        self,
        state: EngineState,
        publications: Sequence[Publication],
        lease: tuple[str, int] | None = None,
    ) -> None:
        """Save state, latest values and history, then announce the publications, in one
        round trip where the backend allows it; with a lease, only while it is still held
        (LeaseLost otherwise)."""

    async def latest(self) -> dict[str, Publication]:
        """The last published value per index code."""

    async def history(
        self, code: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[Publication]:
        """Published values of one index in time order; with a limit, the latest ones."""

    def subscribe(self) -> AsyncIterator[Publication]:
        """Live publications as they are committed, from now on."""
        ...

    async def replay_after(self, code: str, seq: int, limit: int) -> list[Publication] | None:
        """Publications of one index above a sequence number, ascending, at most `limit`;
        None when the history kept no longer reaches back to seq + 1 (the client has a gap)."""

    def deliver_locally(self, publications: Sequence[Publication]) -> None:
        """Hand publications to this process's subscribers only (the store is unreachable)."""

    async def acquire_lease(self, owner: str, ttl_ms: int) -> tuple[str, int] | None:
        """Take the leader lease if free: (owner, fencing token), else None."""

    async def renew_lease(self, lease: tuple[str, int], ttl_ms: int) -> bool:
        """Extend the lease while it is still this engine's."""

    async def release_lease(self, lease: tuple[str, int]) -> None:
        """Give the lease up."""

    async def append_ticks(self, ticks: Sequence[Tick]) -> str:
        """Add validated ticks to the durable ingest stream; the entry id."""

    async def join_tick_stream(self, consumer: str, after: str) -> str | None:
        """Make `consumer` the one reader of the tick stream, placed after entry `after`: every
        later entry comes to it again, in order. A warning when some were trimmed unread."""

    async def next_tick_entries(
        self,
        consumer: str,
        count: int,
        block_ms: int | None,
        applied: Sequence[str] = (),
        rejects: Sequence[StreamReject] = (),
        again: bool = False,
    ) -> list[tuple[str, Fields]]:
        """Acknowledge the entries applied (recording their rejected ticks), then the next
        entries for `consumer` (`again`: those handed to it and not acknowledged)."""

    async def tick_stream_lag(self) -> StreamLag | None:
        """Where the reader stands in the tick stream; None before one joined."""

    async def tick_stream_readers(self) -> dict[str, int]:
        """The stream's readers and how many entries each holds unacknowledged."""

    async def announce_live(self, message: str) -> None:
        """Send a live-values message (JSON text) to every API process."""

    def subscribe_live(self) -> AsyncIterator[str]:
        """Live-values messages from now on."""
        ...
