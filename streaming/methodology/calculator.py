"""Index capitalization: MC = Σ P·Q·FF·W, updated per tick in O(1), re-summed with numpy at
every publication so float drift never accumulates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.errors import ConfigError
from streaming.methodology.base import IndexBase
from streaming.ticks import Tick

FloatArray = npt.NDArray[np.float64]

CURRENCIES = ("RUB", "USD")


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One published index over the shared capitalization: RUB = MC/D, USD = MC/(FX·D)."""

    code: str
    currency: str
    divisor: float

    def __post_init__(self) -> None:
        if self.currency not in CURRENCIES:
            raise ConfigError(f"{self.code}.currency", f"must be one of {CURRENCIES}")
        if not (math.isfinite(self.divisor) and self.divisor > 0):
            raise ConfigError(f"{self.code}.divisor", f"must be positive, got {self.divisor!r}")

    def value(self, capitalization: float, fx_rate: float | None) -> float:
        """Index points from a capitalization in roubles and FX in roubles per dollar."""
        return index_value(self.currency, capitalization, self.divisor, fx_rate, self.code)


def index_value(
    currency: str, capitalization: float, divisor: float, fx_rate: float | None, code: str = ""
) -> float:
    """RUB: MC / D. USD: MC / (FX · D), FX in roubles per dollar. Index points."""
    if currency == "RUB":
        return capitalization / divisor
    if fx_rate is None or not (math.isfinite(fx_rate) and fx_rate > 0):
        raise ConfigError("fx_rate", f"{code or currency} needs a positive RUB per USD rate")
    return capitalization / (fx_rate * divisor)


class Calculator:
    """One base on its own: the family calculator with a single group, seen as flat arrays."""

    def __init__(self, base: IndexBase, prices: Mapping[str, float] | None = None) -> None:
        from streaming.methodology.family import FamilyCalculator, Group

        self.base = base
        self.family = FamilyCalculator([Group("index", base)], prices)
        self.secids: tuple[str, ...] = tuple(self.family.secids)
        self.position: dict[str, int] = self.family.position
        self.shares: FloatArray = self.family.shares[:, 0]

    @property
    def prices(self) -> FloatArray:
        """Last price per line, roubles."""
        row: FloatArray = self.family.prices[0]
        return row

    @property
    def reference(self) -> FloatArray:
        """Reference (previous close) price per line, roubles."""
        row: FloatArray = self.family.reference[0]
        return row

    @property
    def tick_times(self) -> FloatArray:
        """Epoch seconds (UTC) of each line's last tick; NaN where none arrived yet."""
        row: FloatArray = self.family.tick_times[0]
        return row

    @property
    def capitalization(self) -> float:
        """The incrementally maintained capitalization, roubles."""
        return float(self.family.capitalization[0])

    def apply(self, secid: str, price: float, epoch_seconds: float = math.nan) -> None:
        """Apply one trade price in O(1)."""
        self.family.apply(secid, price, epoch_seconds, (0,))

    def apply_ticks(self, ticks: Iterable[Tick]) -> int:
        """Apply validated ticks in order; return how many were applied."""
        count = 0
        for tick in ticks:
            self.apply(tick.secid, tick.price, tick.time.timestamp())
            count += 1
        return count

    def resum(self) -> float:
        """Recompute the capitalization from scratch (numpy dot) and adopt it."""
        return float(self.family.resum()[0])

    def reference_capitalization(self) -> float:
        """Capitalization at the reference (previous close) prices, roubles."""
        return self.family.reference_capitalization(0)

    def weights(self) -> FloatArray:
        """Each line's share of the capitalization, percent, unrounded."""
        return self.family.weights(0)

    def roll_reference(self) -> None:
        """Start a new trading day: today's last prices become the reference prices."""
        self.family.roll_reference()

    def restore(self, prices: Mapping[str, float], tick_times: Mapping[str, float]) -> None:
        """Adopt saved prices (and tick times) for the lines this base knows."""
        self.family.restore(
            {s: [p] for s, p in prices.items()}, {}, {s: [t] for s, t in tick_times.items()}
        )
