"""Rate limits on the write endpoints: one token bucket per bearer token.

A bucket holds up to `burst` requests and refills at `rate` requests per second; a request takes
one, and a request that finds it empty is refused with 429 and the seconds until one is back.
Buckets are kept per token (by a digest, never the token itself) and only for requests that
authenticated, so a stranger cannot make the table grow: tokens are few, and the table is capped.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import ApiError
from streaming.errors import ConfigError

DEFAULT_RATE = 200.0  # requests per second per token
DEFAULT_BURST = 400  # requests a token may send at once
MAX_CALLERS = 64  # buckets kept; the least recently used goes first beyond this


@dataclass(slots=True)
class TokenBucket:
    """Requests a caller may make now: refills at `rate` per second up to `burst`."""

    rate: float  # requests per second
    burst: int
    tokens: float  # requests available at `updated`
    updated: float  # monotonic seconds

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` requests if available and return 0.0; else take nothing and return the
        seconds until they will be."""
        elapsed = max(0.0, now - self.updated)  # a clock that steps back refills nothing
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket would be full at `now`: forgetting it changes nothing."""
        return self.tokens + max(0.0, now - self.updated) * self.rate >= self.burst


def _caller_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]


class RateLimiter:
    """Token buckets per bearer token; `rate` 0 turns the limit off."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        *,
        max_callers: int = MAX_CALLERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ConfigError("ingest_rate_per_second", f"must be a number, got {rate!r}")
        if not (math.isfinite(rate) and rate >= 0):
            raise ConfigError("ingest_rate_per_second", f"must be 0 or more, got {rate!r}")
        for name, value in (("ingest_burst", burst), ("max_callers", max_callers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        self.rate = float(rate)
        self.burst = burst
        self.max_callers = max_callers
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0  # requests answered 429 since start

    @property
    def enabled(self) -> bool:
        """False when the rate is 0: every request passes."""
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_for(self, token: str, cost: float = 1.0) -> float:
        """Take `cost` requests from this token's bucket: 0.0 when allowed, else the seconds
        to wait (nothing is taken then)."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        caller = _caller_id(token)
        bucket = self._buckets.get(caller)
        if bucket is None:
            self._make_room(now)
            bucket = TokenBucket(self.rate, self.burst, float(self.burst), now)
            self._buckets[caller] = bucket
        else:
            self._buckets.move_to_end(caller)
        return bucket.take(now, cost)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_callers:
            return
        # Full buckets carry no state worth keeping; after them, the least recently used.
        for caller in [c for c, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[caller]
        while len(self._buckets) >= self.max_callers:
            self._buckets.popitem(last=False)

    def enforce(self, token: str, scope: str = "ingest") -> None:
        """Raise 429 with Retry-After (whole seconds, at least 1) when this token is over its
        rate; the request is counted otherwise."""
        wait = self.wait_for(token)
        if wait <= 0:
            return
        self.refused += 1
        retry_after = max(1, math.ceil(wait))
        raise ApiError(
            429,
            f"rate limit: at most {self.rate:g} requests per second per {scope} token"
            f" (bursts of {self.burst}); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            limit=self.rate,
            burst=self.burst,
            retry_after=retry_after,
        )
