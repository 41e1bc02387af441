"""Tick sources: each turns some feed into batches of validated ticks for the engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from streaming.ticks import Tick

Submit = Callable[[Sequence[Tick]], int]


class TickSource(Protocol):
    """A feed: runs until cancelled (or until it is exhausted), handing ticks to submit."""

    name: str

    async def run(self, submit: Submit) -> None: ...


def backoff_delay(failures: int, interval: float, cap: float) -> float:
    """Seconds to wait after `failures` errors in a row: the interval doubled per error, capped."""
    if failures <= 0:
        return interval
    return float(min(cap, interval * 2.0 ** min(failures, 64)))
