"""The cyclic garbage collector, run when the service has time for it.

With thousands of connections the process holds millions of objects, and an automatic full
collection then pauses the event loop for a few hundred milliseconds at a random moment, often
in the middle of a fan-out round. Here automatic collection is off; the young generations are
collected right after a fan-out round has written every connection's updates (the next grid
instant is a cadence away), at most every `young_seconds`; a full collection follows at most
every `full_seconds`; and when no round happens (no subscribers, a closed session) a timer does
the same half a cadence after each grid instant, away from publications."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

from streaming.methodology.schedule import next_grid_instant

log = logging.getLogger(__name__)

YOUNG_SECONDS = 0.5  # young generations collected at most this often
FULL_SECONDS = 30.0  # a full collection at most this often


class Collector:
    """Collects garbage between fan-out rounds instead of whenever allocations say so."""

    def __init__(
        self,
        cadence: int,
        young_seconds: float = YOUNG_SECONDS,
        full_seconds: float = FULL_SECONDS,
    ) -> None:
        self.cadence = cadence
        self.young_seconds = young_seconds
        self.full_seconds = full_seconds
        self.collections = 0  # young and full, for status and tests
        self.full_collections = 0
        self._last = time.monotonic()
        self._last_full = self._last
        self._task: asyncio.Task[None] | None = None
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        """Take over from the automatic collector."""
        if self._task is not None:
            return
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._task = asyncio.create_task(self._between_grid_instants(), name="collector")

    async def stop(self) -> None:
        """Give collection back to the interpreter."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._was_enabled:
            gc.enable()

    def after_round(self) -> None:
        """A fan-out round has written its updates: a good moment, if one is due."""
        if self._task is not None and time.monotonic() - self._last >= self.young_seconds:
            self.collect()

    def collect(self) -> None:
        now = time.monotonic()
        full = now - self._last_full >= self.full_seconds
        gc.collect(2 if full else 1)
        self._last = time.monotonic()
        self.collections += 1
        if full:
            self._last_full = self._last
            self.full_collections += 1

    async def _between_grid_instants(self) -> None:
        while True:
            now = time.time()
            midway = next_grid_instant(now, self.cadence) - self.cadence / 2
            if midway <= now:
                midway += self.cadence
            await asyncio.sleep(midway - now)
            if time.monotonic() - self._last >= self.cadence / 2:
                try:
                    self.collect()
                except Exception:  # never seen; the loop must not die of it
                    log.exception("garbage collection failed")
