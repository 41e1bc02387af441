"""The leading engine's reader of the tick stream: a Redis consumer group read in batches.

Feed handlers anywhere `XADD` ticks to `{namespace}:ticks` (format: streaming/tick_stream.py);
API processes append the ticks POSTed to them there too. The leading engine reads the stream in
the consumer group `engines`:
  - on taking the lead it places the group right after the last entry its committed state
    includes and removes every other reader, so whatever was read but not committed before (by
    a crashed leader, or by itself) comes again, in order, and nothing comes twice into a state;
  - it applies each batch, then acknowledges it together with the next read (one round trip);
    the ticks it refuses go to `{namespace}:ticks:rejected` with entry, position, field, reason;
  - after an error that may have lost a reply it first reads again what it was handed and had
    not acknowledged, skipping what it already applied;
  - every few seconds it checks it is still the only reader (an old leader paused past its
    lease may wake and read): if not, it places the group after its own last entry again;
  - it reports where it stands: entries kept, pending, not yet delivered, seconds behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Container
from datetime import datetime

from streaming.errors import StoreUnavailable, StreamGroupMissing
from streaming.metrics import ENGINE_REGISTRY
from streaming.sources import backoff_delay
from streaming.store.base import Store
from streaming.tasks import cancel_and_wait
from streaming.tick_stream import Fields, StreamLag, StreamReject, decode_entries, entry_key
from streaming.ticks import TickColumns

log = logging.getLogger(__name__)

ENTRIES_PER_READ = 500  # entries read at once (an entry: one trade, or a POSTed batch)
BLOCK_MS = 1000  # a read waits this long for an entry before it is made again
LAG_INTERVAL = 1.0  # seconds between lag reports
READERS_CHECK_INTERVAL = 2.0  # seconds between checks that no other engine reads
RETRY_INTERVAL = 0.1  # seconds before the first retry after an error (doubling)
RETRY_CAP = 5.0  # seconds: the longest wait between retries

READ_ENTRIES = ENGINE_REGISTRY.histogram(
    "index_ticker_stream_read_entries",
    "Entries per read of the tick stream (an entry: one trade or a batch).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)

Apply = Callable[[TickColumns, str], object]  # (good ticks, last entry id) -> anything


class TickStreamReader:
    """Reads the tick stream for one engine while it leads; `applied` is the last entry in it."""

    def __init__(
        self,
        store: Store,
        consumer: str,
        apply: Apply,
        known: Callable[[], Container[str]],
        now: Callable[[], datetime],
        *,
        entries_per_read: int = ENTRIES_PER_READ,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.store = store
        self.consumer = consumer
        self.apply = apply
        self.known = known
        self.now = now
        self.entries_per_read = entries_per_read
        self.block_ms = block_ms
        self.applied = "0-0"
        self.entries_read = 0
        self.ticks_read = 0
        self.rejected: Counter[str] = Counter()  # refused ticks by field
        self.lag: StreamLag | None = None
        self.warning: str | None = None  # trimmed entries found on joining

    async def run(self, after: str) -> None:
        """Join after entry `after` (the committed state's), then read until cancelled."""
        self.applied = after
        lag_task = asyncio.create_task(self._report_lag(), name="tick-stream-lag")
        try:
            await self._read(after)
        finally:
            await cancel_and_wait(lag_task)

    async def _join(self, after: str) -> None:
        failures = 0
        while True:
            try:
                warning = await self.store.join_tick_stream(self.consumer, after)
                break
            except StoreUnavailable:
                failures += 1
                await asyncio.sleep(backoff_delay(failures, RETRY_INTERVAL, RETRY_CAP))
        if warning is not None:
            self.warning = warning
            log.error("tick stream: %s", warning)
        log.info("reading the tick stream after entry %s as %s", after, self.consumer)

    async def _read(self, after: str) -> None:
        await self._join(after)
        applied: list[str] = []  # applied, to acknowledge with the next read
        rejects: list[StreamReject] = []
        again = False
        failures = 0
        checked = time.monotonic()
        while True:
            if time.monotonic() - checked >= READERS_CHECK_INTERVAL:
                checked = time.monotonic()
                if await self._someone_else_reads():
                    await self._join(self.applied)
                    applied, rejects, again = [], [], False
                    continue
            try:
                entries = await self.store.next_tick_entries(
                    self.consumer, self.entries_per_read, self.block_ms, applied, rejects, again
                )
            except StoreUnavailable:
                failures += 1
                again = True
                await asyncio.sleep(backoff_delay(failures, RETRY_INTERVAL, RETRY_CAP))
                continue
            except StreamGroupMissing:
                log.error("the tick stream or its group was deleted: joining it again")
                await self._join(self.applied)
                applied, rejects, again = [], [], False
                continue
            failures = 0
            applied, rejects = [], []
            if again:
                # What was handed over before the error: acknowledge what is already applied.
                done = entry_key(self.applied)
                applied = [entry for entry, _ in entries if entry_key(entry) <= done]
                entries = [(entry, fields) for entry, fields in entries if entry_key(entry) > done]
                again = bool(applied or entries)  # read the rest of them before new ones
            if entries:
                rejects = self._apply(entries)
                applied += [entry for entry, _ in entries]

    def _apply(self, entries: list[tuple[str, Fields]]) -> list[StreamReject]:
        last = entries[-1][0]
        READ_ENTRIES.observe(len(entries))
        try:
            decoded = decode_entries(entries, self.known(), self.now())
            ticks = decoded.ticks()
            self.apply(ticks, last)
        except Exception:
            # A bug must not stop the stream nor make it read the same entries for ever.
            log.exception("tick stream entries up to %s could not be applied", last)
            return []
        self.applied = last
        self.entries_read += len(entries)
        self.ticks_read += len(ticks)
        if decoded.rejects:
            self.rejected.update(reject.field for reject in decoded.rejects)
            first = decoded.rejects[0]
            log.warning(
                "refused %d tick(s) from the tick stream; first: entry %s%s: %s: %s",
                len(decoded.rejects),
                first.entry,
                "" if first.position is None else f" position {first.position}",
                first.field,
                first.reason,
            )
        return decoded.rejects

    async def _someone_else_reads(self) -> bool:
        try:
            readers = await self.store.tick_stream_readers()
        except (StoreUnavailable, StreamGroupMissing):
            return False
        others = sorted(name for name in readers if name != self.consumer)
        if others:
            log.warning(
                "another engine read the tick stream (%s): taking its entries back",
                ", ".join(others),
            )
        return bool(others)

    async def _report_lag(self) -> None:
        while True:
            with contextlib.suppress(StoreUnavailable, StreamGroupMissing):
                self.lag = await self.store.tick_stream_lag()
            await asyncio.sleep(LAG_INTERVAL)

    def status(self) -> dict[str, object]:
        """Where this reader stands, for status and metrics."""
        report: dict[str, object] = {
            "consumer": self.consumer,
            "applied": self.applied,
            "entries_read": self.entries_read,
            "ticks_read": self.ticks_read,
            "rejected": dict(self.rejected),
        }
        if self.lag is not None:
            report.update(self.lag.as_dict(self.applied))
        if self.warning is not None:
            report["warning"] = self.warning
        return report
