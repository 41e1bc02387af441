"""The index arithmetic, with golden numbers worked by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from streaming.errors import ConfigError, TickRejected
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.calculator import Calculator, IndexSpec
from streaming.ticks import Tick

# Three lines. Q·FF·W: A = 1000·0.5·1 = 500, B = 200·1·0.5 = 100, C = 50·0.4·1 = 20.
BASE = IndexBase(
    (
        Constituent("A", "A", 500.0, 1000, 0.5, 1.0, reference_price=10.0),
        Constituent("B", "B", 100.0, 200, 1.0, 0.5, reference_price=20.0),
        Constituent("C", "C", 20.0, 50, 0.4, 1.0, reference_price=100.0),
    )
)
# MC at reference = 10·500 + 20·100 + 100·20 = 5000 + 2000 + 2000 = 9000.


def test_capitalization_and_values_by_hand() -> None:
    calc = Calculator(BASE)
    assert calc.capitalization == 9000.0
    imoex = IndexSpec("IMOEX", "RUB", 3.0)
    rtsi = IndexSpec("RTSI", "USD", 0.5)
    assert imoex.value(calc.capitalization, None) == 3000.0  # 9000 / 3
    assert rtsi.value(calc.capitalization, 90.0) == 200.0  # 9000 / (90 · 0.5)
    calc.apply("B", 25.0)  # MC += (25 - 20) · 100 = 500
    assert calc.capitalization == 9500.0
    assert imoex.value(calc.capitalization, None) == pytest.approx(3166.6666666666665)
    weights = calc.weights()
    assert weights.tolist() == pytest.approx([5000 / 95, 2500 / 95, 2000 / 95])
    assert float(weights.sum()) == pytest.approx(100.0)


def test_prices_override_reference_and_unknown_are_named() -> None:
    calc = Calculator(BASE, {"C": 50.0})
    assert calc.capitalization == 8000.0  # 9000 - 50·20
    with pytest.raises(ConfigError, match="ZZZ"):
        Calculator(BASE, {"ZZZ": 1.0, "A": 2.0})


def test_line_without_any_price_is_an_error() -> None:
    base = IndexBase((Constituent("A", "A", 1.0), Constituent("B", "B", 1.0, reference_price=2.0)))
    with pytest.raises(ConfigError, match="A"):
        Calculator(base)
    assert Calculator(base, {"A": 3.0}).capitalization == 5.0


def test_bad_ticks_never_move_the_capitalization() -> None:
    calc = Calculator(BASE)
    for secid, price in [("ZZZ", 10.0), ("A", -1.0), ("A", 0.0), ("A", math.nan), ("A", math.inf)]:
        with pytest.raises(TickRejected):
            calc.apply(secid, price)
    assert calc.capitalization == 9000.0
    assert calc.prices.tolist() == [10.0, 20.0, 100.0]


def test_usd_index_needs_fx() -> None:
    with pytest.raises(ConfigError, match="fx"):
        IndexSpec("RTSI", "USD", 1.0).value(100.0, None)
    with pytest.raises(ConfigError, match="currency"):
        IndexSpec("X", "EUR", 1.0)
    with pytest.raises(ConfigError, match="divisor"):
        IndexSpec("X", "RUB", 0.0)


def test_incremental_agrees_with_full_resum_to_1e_9_over_a_million_ticks() -> None:
    rng = np.random.default_rng(7)
    n = 50
    shares = rng.uniform(1e6, 5e10, n)
    prices = rng.uniform(1.0, 7000.0, n)
    base = IndexBase(
        tuple(
            Constituent(f"L{i}", f"L{i}", float(shares[i]), reference_price=float(prices[i]))
            for i in range(n)
        )
    )
    calc = Calculator(base)
    lines = rng.integers(0, n, 1_000_000)
    moves = np.exp(rng.normal(0, 0.001, 1_000_000))
    for i, move in zip(lines.tolist(), moves.tolist(), strict=True):
        secid = calc.secids[i]
        calc.apply(secid, float(calc.prices[i]) * move)
    incremental = calc.capitalization
    full = float(calc.prices @ calc.shares)
    assert abs(incremental - full) / full < 1e-9
    assert calc.resum() == full


def test_apply_ticks_records_times_and_roll_reference() -> None:
    calc = Calculator(BASE)
    moment = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert calc.apply_ticks([Tick("A", 11.0, moment), Tick("A", 12.0, moment)]) == 2
    assert calc.capitalization == 10000.0  # 9000 + (12 - 10)·500
    assert calc.tick_times[0] == moment.timestamp()
    assert math.isnan(calc.tick_times[1])
    assert calc.reference_capitalization() == 9000.0
    calc.roll_reference()
    assert calc.reference_capitalization() == 10000.0
    assert np.isnan(calc.tick_times).all()


def test_restore_ignores_unknown_and_bad_prices() -> None:
    calc = Calculator(BASE)
    calc.restore({"A": 11.0, "GONE": 5.0, "B": -3.0}, {"A": 1.0e9, "GONE": 2.0})
    assert calc.prices.tolist() == [11.0, 20.0, 100.0]
    assert calc.capitalization == 9500.0
    assert calc.tick_times[0] == 1.0e9
