"""Clocks for the engine: the wall clock, or recorded time running at N× for a replay."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class ReplayClock:
    """Epoch seconds that start at `start` (the first recorded tick) and run `speed` times as
    fast as the wall clock; `rate` tells the engine how to turn clock seconds into real ones."""

    start: float
    speed: float
    _origin: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"a replay clock needs a positive speed, got {self.speed}")

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self._origin) * self.speed

    def begin(self) -> None:
        """Recorded time starts now (when the service starts, not when it was assembled: at
        60× a slow start would otherwise skip the first grid instants)."""
        self._origin = time.monotonic()

    @property
    def rate(self) -> float:
        return self.speed


@dataclass(slots=True)
class SteppedClock:
    """Epoch seconds that move only when told: recorded time for a replay as fast as possible,
    stepped by the replay from one grid instant to the next."""

    now: float

    def __call__(self) -> float:
        return self.now

    def set(self, epoch: float) -> None:
        """Move to a moment (epoch seconds); recorded time never runs backwards."""
        self.now = max(self.now, epoch)
