"""A demo feed that looks like a market: a random walk per line with bursty trade arrivals."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streaming.methodology.base import IndexBase
from streaming.methodology.schedule import utc_from_epoch
from streaming.sources import Submit
from streaming.ticks import Tick

SECONDS_PER_SESSION = 8.8 * 3600  # 10:00-18:50, the main session


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """Daily volatility is a fraction (0.02 = 2 % per session); rates are trades per second."""

    seed: int = 1
    daily_volatility: float = 0.02
    market_volatility_share: float = 0.5  # part of the variance common to all lines
    trades_per_second: float = 40.0
    burst_probability: float = 0.02  # chance per step that a burst starts
    burst_multiplier: float = 25.0
    step_seconds: float = 0.1


def tick_size(price: float) -> float:
    """A price step giving five significant digits, like most TQBR lines."""
    return float(10.0 ** (math.floor(math.log10(price)) - 4))


class SimulatedMarket:
    """Pure generator of trades: seeded, so the same seed gives the same market."""

    def __init__(self, base: IndexBase, prices: np.ndarray, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.secids = base.secids
        self.rng = np.random.default_rng(settings.seed)
        self.prices = np.asarray(prices, dtype=np.float64).copy()
        caps = self.prices * np.array([c.index_shares for c in base.constituents])
        # Larger lines trade more often; square root keeps small ones visible.
        activity = np.sqrt(caps)
        self.activity = activity / activity.sum()
        self.burst_left = 0

    def step(self, seconds: float, now_epoch: float) -> list[Tick]:
        """Trades for one step of the given length, timed at now."""
        s = self.settings
        rate = s.trades_per_second
        if self.burst_left > 0:
            self.burst_left -= 1
            rate *= s.burst_multiplier
        elif self.rng.random() < s.burst_probability:
            self.burst_left = int(self.rng.integers(3, 20))
        count = int(self.rng.poisson(rate * seconds))
        if count == 0:
            return []
        lines = self.rng.choice(len(self.secids), size=count, p=self.activity)
        sigma = s.daily_volatility * math.sqrt(seconds / SECONDS_PER_SESSION)
        market = self.rng.normal() * sigma * math.sqrt(s.market_volatility_share)
        own_scale = sigma * math.sqrt(1 - s.market_volatility_share)
        moved = np.unique(lines)
        shocks = market + self.rng.normal(size=len(moved)) * own_scale
        self.prices[moved] *= np.exp(shocks)
        moment = utc_from_epoch(now_epoch)
        ticks = []
        for i in lines.tolist():
            price = self.prices[i]
            step = tick_size(price)
            ticks.append(
                Tick(
                    secid=self.secids[i],
                    price=round(round(price / step) * step, 10),
                    time=moment,
                    volume=float(self.rng.integers(1, 500)),
                )
            )
        return ticks


class SimulatorSource:
    """Runs a SimulatedMarket in real time."""

    name = "simulator"

    def __init__(
        self,
        base: IndexBase,
        prices: np.ndarray,
        settings: SimulatorSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.market = SimulatedMarket(base, prices, settings or SimulatorSettings())
        self.clock = clock

    async def run(self, submit: Submit) -> None:
        step = self.market.settings.step_seconds
        while True:
            await asyncio.sleep(step)
            ticks = self.market.step(step, self.clock())
            if ticks:
                submit(ticks)
