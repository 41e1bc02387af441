"""Replay a recorded tick file (CSV with secid,price[,time][,volume] or JSON lines) into the
engine, at its recorded pace times a speed factor, or as fast as possible."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from streaming.errors import ConfigError, TickRejected
from streaming.sources import Submit
from streaming.ticks import Tick, parse_tick, parse_time

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: ticks submitted and lines refused (line number and reason)."""

    submitted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, raw mapping) for each record; JSON lines or CSV with a header."""
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        if first.lstrip().startswith("{"):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    yield number, f"invalid JSON: {error.msg}"
            return
        reader = csv.DictReader(handle)
        for number, row in enumerate(reader, start=2):
            yield number, {key.strip().lower(): value for key, value in row.items() if key}


def read_ticks(path: Path, known: Container[str], report: ReplayReport) -> Iterator[Tick]:
    """Validated ticks of a file; bad lines are recorded in the report and skipped."""
    fallback = datetime.now(UTC)
    for number, raw in _rows(path):
        try:
            if isinstance(raw, str):
                raise TickRejected("line", raw)
            yield parse_tick(raw, known, fallback)
        except TickRejected as error:
            report.rejected.append((number, str(error)))
            log.warning("%s line %d refused: %s", path, number, error)


def first_tick_epoch(path: str | Path) -> float | None:
    """Epoch seconds of the first valid, timed tick in a file (None when there is none, or no
    such file: ReplaySource names that)."""
    if not Path(path).is_file():
        return None
    for _, raw in _rows(Path(path)):
        if isinstance(raw, dict) and raw.get("time") is not None:
            try:
                return parse_time(raw["time"]).timestamp()
            except TickRejected:
                continue
    return None


class ReplaySource:
    """A tick file as a feed. speed=1 keeps the recorded pace, 0 replays as fast as possible."""

    def __init__(
        self,
        path: str | Path,
        known: Container[str],
        speed: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """With a clock (epoch seconds; the engine's replay clock), each tick waits until the
        clock reaches its recorded time; without one, until its offset from the first tick."""
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError("feed", f"replay file not found: {self.path}")
        if speed < 0:
            raise ConfigError(
                "replay_speed", f"must be 0 (as fast as possible) or more, got {speed}"
            )
        self.known = known
        self.speed = speed
        self.clock = clock
        self.name = f"replay:{self.path}"
        self.report = ReplayReport()

    async def run(self, submit: Submit) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first: float | None = None
        batch: list[Tick] = []
        for tick in read_ticks(self.path, self.known, self.report):
            if self.speed > 0:
                stamp = tick.time.timestamp()
                first = stamp if first is None else first
                if self.clock is not None:
                    wait = (stamp - self.clock()) / self.speed
                else:
                    wait = started + (stamp - first) / self.speed - loop.time()
                if wait > 0:
                    if batch:
                        self.report.submitted += submit(batch)
                        batch = []
                    await asyncio.sleep(wait)
            batch.append(tick)
            if len(batch) >= BATCH:
                self.report.submitted += submit(batch)
                batch = []
                await asyncio.sleep(0)
        if batch:
            self.report.submitted += submit(batch)
        log.info(
            "replay of %s done: %d ticks, %d refused",
            self.path,
            self.report.submitted,
            len(self.report.rejected),
        )
