"""Index capitalization: MC = Σ P·Q·FF·W, updated per tick in O(1), re-summed with numpy at
every publication so float drift never accumulates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.errors import ConfigError, TickRejected
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
        if self.currency == "RUB":
            return capitalization / self.divisor
        if fx_rate is None or not (math.isfinite(fx_rate) and fx_rate > 0):
            raise ConfigError("fx_rate", f"{self.code} needs a positive RUB per USD rate")
        return capitalization / (fx_rate * self.divisor)


class Calculator:
    """Prices of the constituent lines and the capitalization they give, in roubles."""

    def __init__(self, base: IndexBase, prices: Mapping[str, float] | None = None) -> None:
        given = dict(prices or {})
        unknown = sorted(set(given) - set(base.secids))
        if unknown:
            raise ConfigError("prices", f"unknown secids: {', '.join(unknown)}")
        missing = [
            c.secid for c in base.constituents if c.reference_price is None and c.secid not in given
        ]
        if missing:
            raise ConfigError(
                "reference_price", f"no price for {', '.join(missing)} (base waprice is empty)"
            )
        self.base = base
        self.secids: tuple[str, ...] = base.secids
        self.position: dict[str, int] = {s: i for i, s in enumerate(self.secids)}
        self.shares: FloatArray = np.array([c.index_shares for c in base.constituents], np.float64)
        self.reference: FloatArray = np.array(
            [
                c.reference_price if c.reference_price is not None else given[c.secid]
                for c in base.constituents
            ],
            np.float64,
        )
        self.prices: FloatArray = self.reference.copy()
        for secid, price in given.items():
            self.prices[self.position[secid]] = price
        # Epoch seconds (UTC) of each line's last tick; NaN where none arrived yet.
        self.tick_times: FloatArray = np.full(len(self.secids), np.nan)
        self._capitalization = float(self.prices @ self.shares)

    @property
    def capitalization(self) -> float:
        """The incrementally maintained capitalization, roubles."""
        return self._capitalization

    def apply(self, secid: str, price: float, epoch_seconds: float = math.nan) -> None:
        """Apply one trade price in O(1)."""
        i = self.position.get(secid)
        if i is None:
            raise TickRejected("secid", f"unknown secid {secid!r}: not a constituent")
        if not (math.isfinite(price) and price > 0):
            raise TickRejected("price", f"must be positive and finite, got {price!r}")
        old = float(self.prices[i])
        self.prices[i] = price
        self.tick_times[i] = epoch_seconds
        self._capitalization += (price - old) * float(self.shares[i])

    def apply_ticks(self, ticks: Iterable[Tick]) -> int:
        """Apply validated ticks in order; return how many were applied."""
        count = 0
        for tick in ticks:
            self.apply(tick.secid, tick.price, tick.time.timestamp())
            count += 1
        return count

    def resum(self) -> float:
        """Recompute the capitalization from scratch (numpy dot) and adopt it."""
        self._capitalization = float(self.prices @ self.shares)
        return self._capitalization

    def reference_capitalization(self) -> float:
        """Capitalization at the reference (previous close) prices, roubles."""
        return float(self.reference @ self.shares)

    def weights(self) -> FloatArray:
        """Each line's share of the capitalization, percent, unrounded."""
        caps = self.prices * self.shares
        total = float(caps.sum())
        return caps * (100.0 / total)

    def restore(self, prices: Mapping[str, float], tick_times: Mapping[str, float]) -> None:
        """Adopt saved prices (and tick times) for the lines this base knows."""
        for secid, price in prices.items():
            i = self.position.get(secid)
            if i is not None and math.isfinite(price) and price > 0:
                self.prices[i] = price
        for secid, epoch in tick_times.items():
            i = self.position.get(secid)
            if i is not None:
                self.tick_times[i] = epoch
        self.resum()

    def roll_reference(self) -> None:
        """Start a new trading day: today's last prices become the reference prices."""
        self.reference = self.prices.copy()
        self.tick_times = np.full(len(self.secids), np.nan)
