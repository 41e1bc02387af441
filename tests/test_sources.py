"""The simulator and the replay feed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from factories import SMALL_BASE

from streaming.errors import ConfigError
from streaming.methodology.calculator import Calculator
from streaming.sources.replay import ReplaySource
from streaming.sources.simulator import SimulatedMarket, SimulatorSettings, tick_size
from streaming.ticks import Tick

START = datetime(2026, 11, 20, 7, tzinfo=UTC).timestamp()


def market(seed: int) -> SimulatedMarket:
    return SimulatedMarket(SMALL_BASE, Calculator(SMALL_BASE).prices, SimulatorSettings(seed=seed))


def run_market(m: SimulatedMarket, steps: int) -> list[Tick]:
    ticks: list[Tick] = []
    for n in range(steps):
        ticks.extend(m.step(0.1, START + n * 0.1))
    return ticks


def test_same_seed_same_market_other_seed_other_market() -> None:
    one, two, other = (
        run_market(market(3), 500),
        run_market(market(3), 500),
        run_market(market(4), 500),
    )
    assert one == two
    assert one != other


def test_simulated_ticks_are_valid_and_move_gently() -> None:
    ticks = run_market(market(5), 3000)  # five minutes of market
    assert len(ticks) > 1000
    assert {t.secid for t in ticks} == {"A", "B", "C"}
    calc = Calculator(SMALL_BASE)
    calc.apply_ticks(ticks)
    assert all(t.price > 0 for t in ticks)
    # 2 % a day: five minutes move the whole index far less than 5 %.
    assert abs(calc.capitalization / 9000.0 - 1) < 0.05
    # prices sit on their tick grid
    for t in ticks[:200]:
        step = tick_size(t.price)
        assert abs(t.price / step - round(t.price / step)) < 1e-6


def test_arrivals_are_bursty() -> None:
    m = market(11)
    counts = np.array([len(m.step(0.1, START)) for _ in range(5000)])
    # a Poisson stream has variance equal to its mean; bursts make it much larger
    assert counts.var() > 3 * counts.mean()


def test_tick_size() -> None:
    assert tick_size(250.0) == pytest.approx(0.01)
    assert tick_size(16.8) == pytest.approx(0.001)
    assert tick_size(6000.0) == pytest.approx(0.1)


async def test_replay_submits_good_ticks_and_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    lines = [
        json.dumps({"secid": "A", "price": 11, "time": "2026-11-20T07:00:00Z"}),
        "not json",
        json.dumps({"secid": "A", "price": -1, "time": "2026-11-20T07:00:01Z"}),
        json.dumps({"secid": "B", "price": 21, "time": "2026-11-20T07:00:02Z"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    source = ReplaySource(path, frozenset(SMALL_BASE.secids), speed=0)
    received: list[Tick] = []

    def submit(batch: object) -> int:
        assert isinstance(batch, Sequence)
        received.extend(batch)
        return len(batch)

    await source.run(submit)
    assert [(t.secid, t.price) for t in received] == [("A", 11.0), ("B", 21.0)]
    assert [n for n, _ in source.report.rejected] == [2, 3]
    assert "price" in source.report.rejected[1][1]


async def test_replay_csv_keeps_recorded_pace(tmp_path: Path) -> None:
    import time

    path = tmp_path / "day.csv"
    path.write_text(
        "secid,price,time\nA,11,2026-11-20T07:00:00Z\nB,21,2026-11-20T07:00:01Z\nC,zz,2026-11-20T07:00:01Z\n"
    )
    source = ReplaySource(path, frozenset(SMALL_BASE.secids), speed=2.0)
    received: list[Tick] = []
    started = time.monotonic()
    await source.run(lambda batch: received.extend(batch) or len(batch))
    elapsed = time.monotonic() - started
    assert [t.secid for t in received] == ["A", "B"]
    assert elapsed >= 0.45  # one recorded second at double speed
    assert source.report.rejected[0][0] == 4


def test_replay_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        ReplaySource(tmp_path / "none.csv", frozenset())
