"""`index-ticker replay FILE`: replay a recorded trade file through the engine, as fast as
possible on the grid of recorded time or at N× real time, with a progress bar on stderr and a
summary (ticks, rejects, guard, publications, seconds, the value of every index at the end) on
stdout, as text or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from streaming.arguments import iso_date, positive_number
from streaming.clock import ReplayClock, SteppedClock
from streaming.engine import Engine
from streaming.errors import IndexTickerError
from streaming.methodology.definition import DEFAULT_FAMILY, load_family
from streaming.methodology.schedule import iso_utc, next_grid_instant
from streaming.publication import PUBLISHED_DECIMALS
from streaming.sources.replay import ReplaySource, end_of_day, replay_on_grid
from streaming.store.memory import MemoryStore
from streaming.ticks import Tick, TickColumns

TTY_REFRESH_SECONDS = 0.2  # a terminal's progress line is rewritten at most this often
LOG_REFRESH_SECONDS = 5.0  # elsewhere (a log file, CI) one progress line this often


class Progress:
    """Ticks done out of a total on a text stream: one line rewritten in place (\\r) on a
    terminal, a new line every `every` seconds otherwise; always a last line at the end."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every if every is not None else (
            TTY_REFRESH_SECONDS if self.tty else LOG_REFRESH_SECONDS
        )  # fmt: skip
        self.clock = clock
        self.started = clock()
        self.shown = self.started
        self.done = 0

    def line(self, done: int, elapsed: float) -> str:
        """The progress text: ticks done / total, percent, rate (ticks/s) and time left."""
        share = done / self.total if self.total else 1.0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total - done) / rate:.0f} s" if rate > 0 else "?"
        return (
            f"replay: {done:,}/{self.total:,} ticks ({share:.0%}), {rate:,.0f} ticks/s, ETA {eta}"
        )

    def update(self, done: int) -> None:
        """Record ticks done; show them when the last showing is old enough."""
        self.done = done
        now = self.clock()
        if now - self.shown >= self.every:
            self.shown = now
            self._show(now)

    def finish(self) -> None:
        """Show the last state and end the line."""
        self._show(self.clock())
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _show(self, now: float) -> None:
        text = self.line(self.done, now - self.started)
        self.stream.write(f"\r{text}\x1b[K" if self.tty else f"{text}\n")
        self.stream.flush()


@dataclass(frozen=True, slots=True)
class Rejects:
    """Refused lines grouped by the field at fault: count, first line number, first reason."""

    by_field: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, rejected: Sequence[tuple[int, str]]) -> Rejects:
        grouped: dict[str, tuple[int, int, str]] = {}
        for line, message in rejected:
            name = message.split(":", 1)[0]
            count, first, reason = grouped.get(name, (0, line, message))
            grouped[name] = (count + 1, first, reason)
        return cls(grouped)

    @property
    def total(self) -> int:
        return sum(count for count, _, _ in self.by_field.values())


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did and the value of every index at its end."""

    file: str
    mode: str  # "grid" (as fast as possible) or "paced"
    speed: float | None
    session: str
    cadence: int
    ticks: int  # valid ticks read
    applied: int
    rejects: Rejects
    held: int
    discarded: int
    publications: int  # grid instants published
    seconds: float  # wall time of the whole replay, reading included
    closes: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of the summary."""
        return {
            "file": self.file,
            "mode": self.mode,
            "speed": self.speed,
            "session": self.session,
            "cadence": self.cadence,
            "ticks_read": self.ticks + self.rejects.total,
            "ticks": self.ticks,
            "applied": self.applied,
            "rejected": self.rejects.total,
            "rejected_by_field": {
                name: {"count": count, "first_line": line, "first_reason": reason}
                for name, (count, line, reason) in sorted(self.rejects.by_field.items())
            },
            "held": self.held,
            "discarded": self.discarded,
            "publications": self.publications,
            "seconds": round(self.seconds, 3),
            "indices": self.closes,
        }

    def text(self) -> str:
        """The summary for people, one fact a line."""
        pace = "as fast as possible" if self.speed is None else f"at {self.speed:g}x"
        lines = [
            f"replay of {self.file} {pace}, session {self.session}, every {self.cadence} s",
            f"ticks read     {self.ticks + self.rejects.total:>10,}",
            f"valid          {self.ticks:>10,}",
            f"applied        {self.applied:>10,}",
            f"rejected       {self.rejects.total:>10,}",
        ]
        for name, (count, line, reason) in sorted(self.rejects.by_field.items()):
            lines.append(f"  {name:<12} {count:>10,}  first at line {line}: {reason}")
        lines += [
            f"held by guard  {self.held:>10,}  ({self.discarded:,} discarded)",
            f"publications   {self.publications:>10,}",
            f"seconds        {self.seconds:>10.3f}",
        ]
        for code, close in self.closes.items():
            lines.append(
                f"{code:<14} {close['value']:>14,.2f} {close['currency']}  "
                f"({close['kind']} at {close['time']}, seq {close['seq']})"
            )
        if not self.closes:
            lines.append("no index value was published")
        return "\n".join(lines)


async def _closes(engine: Engine) -> dict[str, dict[str, Any]]:
    latest = await engine.store.latest()
    return {
        code: {
            "value": round(p.value, PUBLISHED_DECIMALS),
            "precise_value": p.value,
            "currency": p.currency,
            "kind": p.kind,
            "time": iso_utc(p.time),
            "seq": p.seq,
        }
        for code in engine.codes
        if (p := latest.get(code)) is not None
    }


async def _on_grid(engine: Engine, ticks: TickColumns, progress: Progress) -> None:
    """As fast as possible: recorded time stepped grid instant by grid instant."""
    assert isinstance(engine.clock, SteppedClock)
    await replay_on_grid(engine, ticks, engine.clock, progress=progress.update)


async def _paced(
    engine: Engine,
    source: ReplaySource,
    ticks: TickColumns,
    clock: ReplayClock,
    progress: Progress,
) -> None:
    """At N×: the engine runs its grid on the replay clock while the source waits for it.
    Once the grid instant after the last trade has passed, the rest of that local day (no
    trades left, only publications up to the close) is stepped through at once."""

    def submit(batch: Sequence[Tick]) -> int:
        applied = engine.submit(batch)
        progress.update(progress.done + len(batch))
        return applied

    source.clock = clock
    await engine.start()
    try:
        await source.play(ticks, submit)
        settled = next_grid_instant(float(np.max(ticks.epochs)), engine.cadence)
        while (left := settled - clock()) > 0:
            await asyncio.sleep(min(left / clock.speed, 0.05))
    finally:
        await engine.stop()
    stepped = SteppedClock(clock())
    engine.clock = stepped
    grid = settled if engine.last_grid is None else max(settled, engine.last_grid + engine.cadence)
    await replay_on_grid(engine, ticks[:0], stepped, until=end_of_day(engine, settled), start=grid)


async def replay(args: argparse.Namespace, stream: TextIO) -> ReplaySummary:
    """Read the file, replay it through a fresh in-memory engine, summarise."""
    started = time.perf_counter()
    family = load_family(args.definition or DEFAULT_FAMILY)
    path = Path(args.file)
    source = ReplaySource(
        path,
        frozenset(family.universe().secids),
        args.speed or 0.0,
        trade_date=args.date,
        utc_offset=family.session.utc_offset,
    )
    ticks = source.read()
    progress = Progress(len(ticks), stream)
    first = float(ticks.epochs[0]) if len(ticks) else time.time()
    paced = args.speed is not None
    clock: ReplayClock | SteppedClock = (
        ReplayClock(first, args.speed) if paced else SteppedClock(first)
    )
    engine = Engine(
        family,
        MemoryStore(),
        cadence=args.cadence,
        timetable=family.timetable_for(args.session),
        clock=clock,
        clock_rate=args.speed or 1.0,
        grid=paced,
        live_interval=None,
    )
    if len(ticks) and isinstance(clock, ReplayClock):
        await _paced(engine, source, ticks, clock, progress)
    elif len(ticks):
        await _on_grid(engine, ticks, progress)
    progress.finish()
    counters = engine.guard.counters
    return ReplaySummary(
        file=str(path),
        mode="paced" if paced else "grid",
        speed=args.speed,
        session=args.session,
        cadence=engine.cadence,
        ticks=len(ticks),
        applied=engine.stats.ticks_applied,
        rejects=Rejects.of(source.report.rejected),
        held=counters.held,
        discarded=counters.discarded,
        publications=engine.stats.publications,
        seconds=time.perf_counter() - started,
        closes=await _closes(engine),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="index-ticker replay",
        description=(
            "Replay a recorded trade file through the engine and summarise it: CSV or JSON "
            "lines of secid,price,time[,volume] ticks, or MOEX trades (SECID, TRADETIME, PRICE, "
            "QUANTITY, with TRADEDATE or --date). As fast as possible by default, every grid "
            "instant of the recorded day published; --speed N runs recorded time at N×."
        ),
    )
    parser.add_argument("file", help="tick or trade file (CSV with a header, or JSON lines)")
    parser.add_argument(
        "--speed",
        type=positive_number,
        help="recorded time at N× real time (default: as fast as possible)",
    )
    parser.add_argument(
        "--definition",
        help="index definition or family TOML (default: the shipped family)",
    )
    parser.add_argument(
        "--session",
        choices=["always", "moex"],
        default="always",
        help="always: publish around the clock (default); moex: the exchange's sessions, "
        "auctions and official close",
    )
    parser.add_argument(
        "--cadence",
        type=int,
        help="seconds between publications, 1..3600 dividing an hour (default: the definition's)",
    )
    parser.add_argument(
        "--date",
        type=iso_date,
        help="trading date YYYY-MM-DD of a MOEX trades file with no TRADEDATE column",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """Run the command; 0 on success, 2 with a message on stderr for a bad file or setting."""
    args = build_parser().parse_args(argv)
    errors = stderr or sys.stderr
    if not Path(args.file).is_file():
        print(f"index-ticker replay: error: file: not found: {args.file}", file=errors)
        return 2
    # Refused lines are counted in the summary, not logged one by one over the progress line.
    logging.getLogger("streaming.sources.replay").setLevel(logging.ERROR)
    try:
        summary = asyncio.run(replay(args, errors))
    except IndexTickerError as error:
        print(f"index-ticker replay: error: {error}", file=errors)
        return 2
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
