"""Ticks applied per second by the calculator: one by one (O(1) each), in batches (vectorised),
and the naive baseline — a full numpy re-sum of the capitalization after every tick — all in the
same run on the shipped IMOEX base (42 lines) and the shipped family (8 indices, 6 bases).

    python -m bench.calculator [--ticks 1000000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.harness import Table, machine, ratio
from streaming.methodology.definition import load_definition, load_family
from streaming.methodology.family import FamilyCalculator, Group


def make_ticks(calc: FamilyCalculator, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lines = rng.integers(0, len(calc.secids), count)
    moves = np.exp(rng.normal(0, 0.0005, count))
    return lines, calc.prices[0, lines] * moves


def one_by_one(calc: FamilyCalculator, lines: np.ndarray, prices: np.ndarray) -> float:
    secids = calc.secids
    started = time.perf_counter()
    for i, price in zip(lines.tolist(), prices.tolist(), strict=True):
        calc.apply(secids[i], price, 0.0)
    return time.perf_counter() - started


def batched(calc: FamilyCalculator, lines: np.ndarray, prices: np.ndarray, size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(lines), size):
        calc.apply_batch(lines[start : start + size], prices[start : start + size])
    return time.perf_counter() - started


def naive(calc: FamilyCalculator, lines: np.ndarray, prices: np.ndarray) -> float:
    """Set the price, then re-sum every capitalization from scratch: the baseline."""
    started = time.perf_counter()
    for i, price in zip(lines.tolist(), prices.tolist(), strict=True):
        calc.prices[:, i] = price
        calc.resum()
    return time.perf_counter() - started


def tables(quick: bool = False, ticks: int | None = None, batch: int = 10_000) -> list[Table]:
    ticks = ticks or (200_000 if quick else 1_000_000)
    naive_ticks = min(ticks, 20_000 if quick else 100_000)
    imoex = load_definition()
    cases = {
        "IMOEX/RTSI base": lambda: FamilyCalculator([Group("IMOEX", imoex.base)]),
        "shipped family": lambda: FamilyCalculator(
            [Group(d.name, d.base, d.profile) for d in load_family().definitions]
        ),
    }
    table = Table(
        "The calculator",
        f"python -m bench.calculator --ticks {ticks} --batch {batch}",
        "ticks applied per second on one core: one by one (`FamilyCalculator.apply`, O(number of"
        f" bases holding the line)) and in batches of {batch:,} (`apply_batch`: the last price of"
        " each line wins, every capitalization moves by one product). Baseline: set the price and"
        " re-sum every capitalization with numpy after each tick (the naive full recompute).",
        ["calculator", "method", "ticks/s", "vs naive re-sum per tick"],
    )
    for name, build in cases.items():
        lines, prices = make_ticks(build(), ticks)
        baseline = naive_ticks / naive(build(), lines[:naive_ticks], prices[:naive_ticks])
        rows = [
            ("naive re-sum per tick (baseline)", baseline),
            ("one by one, O(1)", ticks / one_by_one(build(), lines, prices)),
            (f"batched ({batch})", ticks / batched(build(), lines, prices, batch)),
        ]
        for method, rate in rows:
            table.add(name, method, rate, ratio(rate, baseline))
    table.notes.append(
        f"{ticks:,} ticks per row, the baseline over {naive_ticks:,}; machine: {machine()}"
    )
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=1_000_000, help="ticks per measurement")
    parser.add_argument("--batch", type=int, default=10_000, help="ticks per batch")
    parser.add_argument("--quick", action="store_true", help="200 000 ticks")
    args = parser.parse_args()
    for table in tables(args.quick, None if args.quick else args.ticks, args.batch):
        print(table.markdown())


if __name__ == "__main__":
    main()
