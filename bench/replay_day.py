"""Replay of the heaviest trading day: a synthetic tick file with that day's trade count and
per-line mix (NUMTRADES of the public MOEX data), realistic prices (a random walk from the
base's reference prices, inside the guard threshold) and times spread over the Moscow trading
day, replayed through the engine as fast as possible with every grid publication of the day
made on the replay clock; the close is checked against a reference computed here with numpy
over the last prices. Baselines of the same run: the row-by-row reader with the per-tick engine
path, and the naive full re-sum after every tick (both on the first part of the file). A second
table reads the same day written in the MOEX trades layout too (TRADEDATE, Moscow TRADETIME,
QUANTITY and the usual other columns): the bulk reader over the whole file against the row
reader over its first part, for both layouts.

    python -m bench.replay_day [--trades 3300000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import math
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.harness import Table, fmt, machine, ratio
from streaming.clock import SteppedClock
from streaming.engine import Engine
from streaming.methodology.definition import Family, load_definition, load_family
from streaming.sources.replay import (
    ReplayReport,
    read_bulk,
    read_columns,
    read_ticks,
    replay_on_grid,
)
from streaming.store.memory import MemoryStore
from streaming.ticks import TickColumns

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "moex"
TQBR = "tqbr_daily_2022-10_2023-06.csv"
TRADES = 3_300_000  # the heaviest day's trade count the measurement is sized for
QUICK_TRADES = 200_000
FALLBACK_DAY = date(2023, 3, 20)
MSK = timedelta(hours=3)
# Where the day's trades fall (Moscow time): windows and their share of the trades.
WINDOWS = [
    ((7, 0), (9, 50), 0.04),  # morning session
    ((9, 50), (10, 0), 0.01),  # opening auction
    ((10, 0), (18, 40), 0.85),  # continuous trading
    ((18, 40), (18, 50), 0.02),  # closing auction
    ((19, 5), (23, 50), 0.08),  # evening session
]
MAIN_PHASES = {1, 2, 3}  # windows that move the main-session indices
STEP = 0.0004  # per-trade relative price step (sigma): a few per cent over a day


def heaviest_day(secids: list[str]) -> tuple[date, dict[str, float], str]:
    """The day with the most trades in the data, the share of each line, and where it came from."""
    path = DATA / TQBR
    if not path.is_file():
        share = {s: 1 / len(secids) for s in secids}
        return FALLBACK_DAY, share, f"{path} absent: uniform mix over {len(secids)} lines"
    per_day: Counter[str] = Counter()
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    for row in rows:
        per_day[row["TRADEDATE"]] += int(float(row["NUMTRADES"] or 0))
    day, total = per_day.most_common(1)[0]
    mix = {row["SECID"]: float(row["NUMTRADES"] or 0) for row in rows if row["TRADEDATE"] == day}
    held = {s: n for s, n in mix.items() if s in secids and n > 0}
    left_out = sorted(set(mix) - set(held))
    share = {s: n / sum(held.values()) for s, n in held.items()}
    about = (
        f"mix of {day} from {TQBR} ({total:,} trades on {len(mix)} lines in the data; "
        f"{len(held)} lines held by the family, left out: {', '.join(left_out) or 'none'})"
    )
    return date.fromisoformat(day), share, about


def make_day(
    family: Family, trades: int, directory: Path, seed: int = 7
) -> tuple[Path, str, dict[str, np.ndarray]]:
    """Write the synthetic tick file (cached per size); (path, provenance, columns)."""
    universe = family.universe()
    secids = list(universe.secids)
    reference = {c.secid: c.reference_price for c in universe.constituents}
    day, share, about = heaviest_day(secids)
    rng = np.random.default_rng(seed)
    names = np.array(sorted(share))
    lines = rng.choice(len(names), size=trades, p=np.array([share[s] for s in names]))
    window = rng.choice(len(WINDOWS), size=trades, p=[w[2] for w in WINDOWS])
    starts = np.array([h * 3600 + m * 60 for (h, m), _, _ in WINDOWS], dtype=float)
    ends = np.array([h * 3600 + m * 60 for _, (h, m), _ in WINDOWS], dtype=float)
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC) - MSK
    millis = np.floor((starts[window] + rng.random(trades) * (ends[window] - starts[window])) * 1e3)
    order = np.argsort(millis, kind="stable")
    lines, window, millis = lines[order], window[order], millis[order]
    epochs = midnight.timestamp() + millis / 1e3
    # A random walk per line: each trade a small step from the line's previous trade.
    steps = np.exp(rng.normal(0, STEP, trades))
    prices = np.empty(trades)
    for n, secid in enumerate(names.tolist()):
        chosen = np.flatnonzero(lines == n)
        walk = float(reference[secid] or 1.0) * np.cumprod(steps[chosen])
        prices[chosen] = np.round(walk, 6)
    path = directory / f"day-{day}-{trades}-{seed}.csv"
    if not path.is_file():
        stamps = np.datetime_as_string(
            (epochs * 1e3).round().astype("int64").astype("datetime64[ms]"), unit="ms"
        )
        partial = path.with_suffix(".part")
        with partial.open("w", encoding="utf-8") as handle:
            handle.write("secid,price,time\n")
            text = names[lines].tolist()
            handle.writelines(
                f"{s},{p!r},{t}Z\n"
                for s, p, t in zip(text, prices.tolist(), stamps.tolist(), strict=True)
            )
        partial.rename(path)
    columns = {
        "lines": lines,
        "names": names,
        "prices": prices,
        "main": np.isin(window, list(MAIN_PHASES)),
        "millis": (epochs * 1e3).round().astype("int64"),
    }
    return path, about, columns


def make_trades(path: Path, columns: dict[str, np.ndarray], seed: int = 7) -> Path:
    """The same day in the MOEX trades layout, next to the tick file (cached per size)."""
    trades = path.with_name(path.stem + "-moex.csv")
    if trades.is_file():
        return trades
    rng = np.random.default_rng(seed + 1)  # its own stream: the tick file stays as it was
    count = len(columns["lines"])
    quantities = rng.integers(1, 1000, count).tolist()
    prices = columns["prices"].tolist()
    local = (columns["millis"] + int(MSK.total_seconds() * 1e3)).astype("datetime64[ms]")
    stamps = np.datetime_as_string(local, unit="ms").tolist()
    names = columns["names"][columns["lines"]].tolist()
    sides = np.array(["B", "S"])[rng.integers(0, 2, count)].tolist()
    partial = trades.with_suffix(".part")
    with partial.open("w", encoding="utf-8") as handle:
        handle.write("TRADENO,TRADEDATE,TRADETIME,BOARDID,SECID,PRICE,QUANTITY,VALUE,BUYSELL\n")
        handle.writelines(
            f"{n},{t[:10]},{t[11:]},TQBR,{s},{p!r},{q},{p * q:.2f},{b}\n"
            for n, (s, p, t, q, b) in enumerate(
                zip(names, prices, stamps, quantities, sides, strict=True), start=10**8
            )
        )
    partial.rename(trades)
    return trades


def read_rates(path: Path, known: frozenset[str], limit: int) -> dict[str, object]:
    """Seconds to read the whole file in bulk (None when the bulk reader steps aside) and to
    read its first `limit` rows with the row reader; the ticks read in bulk."""
    started = time.perf_counter()
    ticks = read_bulk(path, known, ReplayReport())
    bulk_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = 0
    for _ in read_ticks(path, known, ReplayReport()):
        rows += 1
        if rows >= limit:
            break
    return {
        "ticks": ticks,
        "bulk": bulk_seconds,
        "rows": rows,
        "row_seconds": time.perf_counter() - started,
    }


def reference_close(family: Family, columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Each index at the close, from the last price of each line (numpy, not the engine)."""
    names = columns["names"].tolist()
    values = {}
    for profile in ("main", "extended"):
        chosen = columns["main"] if profile == "main" else np.ones(len(columns["lines"]), bool)
        lines, prices = columns["lines"][chosen], columns["prices"][chosen]
        _, first_from_end = np.unique(lines[::-1], return_index=True)
        last_positions = len(lines) - 1 - first_from_end
        last = {names[lines[i]]: prices[i] for i in last_positions.tolist()}
        for definition in family.definitions:
            if definition.profile != profile:
                continue
            base = definition.base.constituents
            price = np.array([last.get(c.secid, c.reference_price) for c in base], dtype=float)
            shares = np.array([c.index_shares for c in base])
            capitalization = float(price @ shares)
            for spec in definition.indices:
                fx = (family.fx_rate or math.nan) if spec.currency == "USD" else 1.0
                values[spec.code] = capitalization / (fx * spec.divisor)
    return values


def new_engine(family: Family, clock: SteppedClock) -> Engine:
    return Engine(
        family,
        MemoryStore(),
        timetable=family.timetable(),
        clock=clock,
        grid=False,
        live_interval=None,
    )


async def replay_new(family: Family, path: Path) -> tuple[dict[str, float], dict[str, object]]:
    started = time.perf_counter()
    report = ReplayReport()
    ticks = read_columns(path, frozenset(family.universe().secids), report)
    read = time.perf_counter() - started
    clock = SteppedClock(float(ticks.epochs[0]))
    engine = new_engine(family, clock)
    result = await replay_on_grid(engine, ticks, clock)
    total = time.perf_counter() - started
    latest = await engine.store.latest()
    closes = {code: p.value for code, p in latest.items() if p.kind == "close"}
    return closes, {
        "seconds": total,
        "read": read,
        "ticks": result.ticks,
        "publications": result.publications,
        "grid": result.grid_instants,
        "held": engine.guard.counters.held,
        "refused": len(report.rejected),
        "precise": {code: p.value for code, p in latest.items()},
    }


def replay_per_tick(family: Family, path: Path, limit: int) -> tuple[int, float]:
    """The former path: the row reader and the engine tick by tick, no publications."""
    started = time.perf_counter()
    report = ReplayReport()
    clock = SteppedClock(0.0)
    engine = new_engine(family, clock)
    batch = []
    count = 0
    for tick in read_ticks(path, frozenset(family.universe().secids), report):
        batch.append(tick)
        if len(batch) == 1000:
            clock.set(tick.time.timestamp())
            count += engine.submit_each(batch).applied
            batch = []
        if count + len(batch) >= limit:
            break
    count += engine.submit_each(batch).applied
    return count, time.perf_counter() - started


def naive(family: Family, columns: dict[str, np.ndarray], limit: int) -> tuple[int, float]:
    """Set the price, then re-sum every capitalization from scratch after every tick."""
    clock = SteppedClock(0.0)
    calc = new_engine(family, clock).calculator
    position = [calc.position[s] for s in columns["names"].tolist()]
    lines = [position[i] for i in columns["lines"][:limit].tolist()]
    started = time.perf_counter()
    for line, price in zip(lines, columns["prices"][:limit].tolist(), strict=True):
        calc.prices[:, line] = price
        calc.resum()
    return len(lines), time.perf_counter() - started


def tables(quick: bool = False, trades: int | None = None) -> list[Table]:
    family = load_family()
    count = trades or (QUICK_TRADES if quick else TRADES)
    sample = min(count, 30_000 if quick else 300_000)
    directory = Path(tempfile.gettempdir()) / "index-ticker-bench"
    directory.mkdir(exist_ok=True)
    path, about, columns = make_day(family, count, directory)
    imoex = Family.of(load_definition())
    closes, new = asyncio.run(replay_new(family, path))
    imoex_closes, imoex_run = asyncio.run(replay_new(imoex, path))
    per_tick, per_tick_seconds = replay_per_tick(family, path, sample)
    known = frozenset(family.universe().secids)
    reading = {
        "the project's CSV (secid,price,time)": read_rates(path, known, sample),
        "MOEX trades CSV (9 columns, Moscow TRADETIME)": read_rates(
            make_trades(path, columns), known, sample
        ),
    }
    naive_count, naive_seconds = naive(family, columns, min(sample, 50_000))
    expected = reference_close(family, columns)
    table = Table(
        "Replay of the heaviest day",
        "python -m bench.replay_day" + (" --quick" if quick else ""),
        f"{count:,} trades ({about}) replayed from a CSV file through the engine as fast as "
        "possible, every grid publication of the day made on the replay clock (memory store, "
        "exchange timetable, shipped family of 8 indices); baselines: the row reader with the "
        "per-tick engine path and the naive full re-sum per tick, on the first trades of the file.",
        ["path", "ticks", "seconds", "ticks/s", "vs per-tick"],
    )
    base_rate = per_tick / per_tick_seconds
    naive_rate = naive_count / naive_seconds
    rate = float(new["ticks"]) / float(new["seconds"])  # type: ignore[arg-type]
    table.add("naive re-sum per tick, no file, no publication (baseline)", naive_count,
              naive_seconds, naive_rate, ratio(naive_rate, base_rate))  # fmt: skip
    table.add("row reader + per-tick path, no publication (baseline)", per_tick,
              per_tick_seconds, base_rate, "1.00x")  # fmt: skip
    imoex_rate = float(imoex_run["ticks"]) / float(imoex_run["seconds"])  # type: ignore[arg-type]
    table.add("bulk reader + batch path + every grid publication, IMOEX and RTSI",
              imoex_run["ticks"], imoex_run["seconds"], imoex_rate,
              ratio(imoex_rate, base_rate))  # fmt: skip
    table.add("bulk reader + batch path + every grid publication, the family of 8",
              new["ticks"], new["seconds"], rate, ratio(rate, base_rate))  # fmt: skip
    worst = max(abs(closes[code] - expected[code]) / expected[code] for code in expected)
    imoex_expected = reference_close(imoex, columns)
    worst = max(
        worst,
        *(abs(imoex_closes[c] - imoex_expected[c]) / imoex_expected[c] for c in imoex_expected),
    )
    table.notes += [
        f"end to end (target <= 10 s): IMOEX and RTSI {fmt(imoex_run['seconds'])} s, of which "
        f"reading the file {fmt(imoex_run['read'])} s, {imoex_run['publications']:,} "
        f"publications; the family {fmt(new['seconds'])} s, of which reading "
        f"{fmt(new['read'])} s; {new['grid']:,} grid instants stepped, {new['publications']:,} "
        f"publications, {new['held']} ticks held by the guard, {new['refused']} lines refused",
        "close vs numpy reference over the last prices: "
        + ", ".join(
            f"{code} {closes.get(code, math.nan):.4f} / {expected[code]:.4f}"
            for code in sorted(expected)
        )
        + f" (largest relative gap {worst:.1e})",
        machine(),
    ]
    return [table, reading_table(reading, count, quick)]


def reading_table(reading: dict[str, dict[str, object]], count: int, quick: bool) -> Table:
    """Bulk reader against row reader for each layout of the day's file."""
    table = Table(
        "Reading the day's trades file",
        "python -m bench.replay_day" + (" --quick" if quick else ""),
        f"The same {count:,} trades written in the project's tick layout and in the MOEX trades "
        "layout, read into columns: the bulk reader (numpy) over the whole file, the row reader "
        "(the validation of POST /v1/ticks, one row at a time) over its first rows.",
        ["layout", "reader", "rows", "seconds", "rows/s", "vs row reader"],
    )
    read: list[TickColumns] = []
    for layout, run in reading.items():
        ticks = run["ticks"]
        bulk_seconds, rows, row_seconds = run["bulk"], run["rows"], run["row_seconds"]
        assert isinstance(bulk_seconds, float) and isinstance(row_seconds, float)
        assert isinstance(rows, int)
        row_rate = rows / row_seconds
        if isinstance(ticks, TickColumns):
            rate = len(ticks) / bulk_seconds
            table.add(layout, "bulk", len(ticks), bulk_seconds, rate, ratio(rate, row_rate))
            read.append(ticks)
        else:
            table.add(layout, "bulk: stepped aside", 0, bulk_seconds, math.nan, "—")
        table.add(layout, "row by row (baseline)", rows, row_seconds, row_rate, "1.00x")
    if len(read) == 2:
        ours, moex = read
        agree = (
            np.array_equal(ours.prices, moex.prices)
            and np.array_equal(ours.epochs, moex.epochs)
            and np.array_equal(np.array(ours.names)[ours.codes], np.array(moex.names)[moex.codes])
        )
        table.notes.append(
            "both layouts read in bulk give the same secids, prices and UTC epochs: "
            + ("yes" if agree else "NO")
        )
    table.notes.append(machine())
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRADES:,} trades only")
    parser.add_argument("--trades", type=int, default=None, help="trades in the synthetic day")
    args = parser.parse_args()
    for table in tables(args.quick, args.trades):
        print(table.markdown())


if __name__ == "__main__":
    main()
