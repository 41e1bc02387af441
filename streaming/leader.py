"""The leader lease: of the engines on one store, the holder publishes; the others stand by and
take over when it stops renewing. Every write of the holder carries the lease (its fencing
token), so an old leader that was paused cannot overwrite a new one."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid

from streaming.errors import StoreUnavailable
from streaming.store.base import Store

log = logging.getLogger(__name__)


def engine_id() -> str:
    """A name for this engine process, unique per run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLease:
    """Take, renew and give up the lease; `hold()` is called every third of the lease."""

    def __init__(self, store: Store, ttl_seconds: float, owner: str | None = None) -> None:
        if not ttl_seconds > 0:
            raise ValueError(f"lease time must be positive, got {ttl_seconds}")
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.owner = owner or engine_id()
        self.lease: tuple[str, int] | None = None
        self._valid_until = 0.0  # monotonic: while the store is away, trust the lease this long

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl_seconds * 1000))

    @property
    def held(self) -> bool:
        """Whether this engine holds the lease as far as it can tell now."""
        return self.lease is not None and time.monotonic() < self._valid_until

    async def hold(self) -> bool:
        """Renew the lease, or take it if it is free; whether this engine leads now."""
        asked = time.monotonic()
        try:
            if self.lease is not None:
                if await self.store.renew_lease(self.lease, self.ttl_ms):
                    self._valid_until = asked + self.ttl_seconds
                    return True
                log.warning("leader lease %s lost to another engine", self.lease)
                self.lease = None
                return False
            taken = await self.store.acquire_lease(self.owner, self.ttl_ms)
        except StoreUnavailable:
            # Nobody can take the lease while the store is away; ours runs out on our own clock.
            return self.held
        if taken is not None:
            self.lease = taken
            self._valid_until = asked + self.ttl_seconds
            log.info("leader lease taken: %s (fencing token %d)", taken[0], taken[1])
        return taken is not None

    def lost(self) -> None:
        """A write was refused: the lease is somebody else's now."""
        self.lease = None

    async def release(self) -> None:
        if self.lease is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_lease(self.lease)
            self.lease = None
