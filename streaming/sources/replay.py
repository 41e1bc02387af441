"""Replay a recorded tick file (CSV with secid,price[,time][,volume] or JSON lines) into the
engine, at its recorded pace times a speed factor, or as fast as possible.

The MOEX trades layout (SECID, TRADETIME, PRICE, QUANTITY, optionally TRADEDATE and any other
columns, in CSV or JSON lines) is read too: TRADETIME is exchange local time (HH:MM:SS[.ffffff])
on the TRADEDATE of the row, or on a trading date given by the caller; QUANTITY is the volume.

A plain (unquoted) CSV of secid,price,time[,volume] with ISO 8601 UTC times, or of MOEX trades
with TRADETIME HH:MM:SS[.fff|.ffffff] and TRADEDATE YYYY-MM-DD (or a trading date given), is read
in bulk into columns (numpy); any other layout, and any file with a row the bulk reader does not
vouch for, is read row by row with the same validation as POST /v1/ticks, so both readers give
the same ticks."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streaming.errors import ConfigError, TickRejected
from streaming.methodology.schedule import next_grid_instant
from streaming.sources import Submit, csvcolumns
from streaming.ticks import MAX_SECID_LENGTH, Tick, TickColumns, parse_tick, parse_time

if TYPE_CHECKING:
    from streaming.clock import SteppedClock
    from streaming.engine import Engine

log = logging.getLogger(__name__)

BATCH = 10_000  # ticks handed to the engine at once
BULK_LAYOUTS = {("secid", "price", "time"), ("secid", "price", "time", "volume")}
MOSCOW = timedelta(hours=3)  # the exchange's offset from UTC: TRADETIME is read in it
# MOEX trades columns read in bulk; with one of TRADE_ROW_ONLY the file goes row by row.
TRADE_COLUMNS = ("secid", "price", "tradetime", "tradedate", "quantity", "volume")
TRADE_ROW_ONLY = frozenset({"time", "phase"})
EPOCH_DAY = date(1970, 1, 1)


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: ticks submitted and lines refused (line number and reason)."""

    submitted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, raw mapping) for each record; JSON lines or CSV with a header."""
    # Bytes that are not UTF-8 become U+FFFD: the row holding them is refused by name (no secid
    # or number contains one) and the rows around it still count.
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
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


def _is_trade_row(raw: object) -> bool:
    """Whether a record is in the MOEX trades layout (it has a TRADETIME, in any case)."""
    return isinstance(raw, Mapping) and any(str(key).lower() == "tradetime" for key in raw)


def from_trade_row(
    raw: Mapping[str, object], trade_date: date | None = None, utc_offset: timedelta = MOSCOW
) -> dict[str, object]:
    """A MOEX trades record as a tick mapping: TRADETIME (exchange local time, `utc_offset`
    east of UTC) on its TRADEDATE, else on `trade_date`, becomes a UTC `time`; QUANTITY becomes
    the `volume`. Raises TickRejected naming TRADETIME or TRADEDATE when they are unusable."""
    row = {str(key).strip().lower(): value for key, value in raw.items()}
    if row.get("time") not in (None, ""):
        return row  # a time of its own wins
    clock = row.get("tradetime")
    if not isinstance(clock, str) or not clock.strip():
        raise TickRejected("tradetime", f"must be a time HH:MM:SS, got {clock!r}")
    try:
        moment = time.fromisoformat(clock.strip())
    except ValueError:
        raise TickRejected("tradetime", f"not a time HH:MM:SS: {clock!r}") from None
    if moment.tzinfo is not None:
        raise TickRejected("tradetime", f"must be exchange local time with no offset: {clock!r}")
    day_text = row.get("tradedate")
    if day_text in (None, ""):
        if trade_date is None:
            raise TickRejected(
                "tradedate", "missing: the file has no TRADEDATE; give the trading date"
            )
        day = trade_date
    elif not isinstance(day_text, str):
        raise TickRejected("tradedate", f"must be a date YYYY-MM-DD, got {day_text!r}")
    else:
        try:
            day = date.fromisoformat(day_text.strip())
        except ValueError:
            raise TickRejected("tradedate", f"not a date YYYY-MM-DD: {day_text!r}") from None
    local = datetime.combine(day, moment, tzinfo=timezone(utc_offset))
    row["time"] = local.astimezone(UTC).isoformat()
    if row.get("volume") in (None, "") and row.get("quantity") not in (None, ""):
        row["volume"] = row["quantity"]
    return row


def read_ticks(
    path: Path,
    known: Container[str],
    report: ReplayReport,
    *,
    trade_date: date | None = None,
    utc_offset: timedelta = MOSCOW,
) -> Iterator[Tick]:
    """Validated ticks of a file; bad lines are recorded in the report and skipped.
    `trade_date` and `utc_offset` read MOEX trades rows (see from_trade_row)."""
    fallback = datetime.now(UTC)
    for number, raw in _rows(path):
        try:
            if isinstance(raw, str):
                raise TickRejected("line", raw)
            if _is_trade_row(raw):
                assert isinstance(raw, Mapping)
                raw = from_trade_row(raw, trade_date, utc_offset)
            yield parse_tick(raw, known, fallback)
        except TickRejected as error:
            report.rejected.append((number, str(error)))
            log.warning("%s line %d refused: %s", path, number, error)


def read_columns(
    path: Path,
    known: Container[str],
    report: ReplayReport,
    *,
    trade_date: date | None = None,
    utc_offset: timedelta = MOSCOW,
) -> TickColumns:
    """Every valid tick of a file as columns, in file order; refused lines go in the report.
    `trade_date` and `utc_offset` read MOEX trades rows (see from_trade_row)."""
    bulk = read_bulk(path, known, report, trade_date=trade_date, utc_offset=utc_offset)
    if bulk is not None:
        return bulk
    ticks = read_ticks(path, known, report, trade_date=trade_date, utc_offset=utc_offset)
    return TickColumns.of(list(ticks))


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A plain CSV file parsed in bulk, secids still to check: the field holding the secid,
    prices in roubles, UTC epoch seconds and volumes (None: the file has none)."""

    fields: csvcolumns.Fields
    secid: int
    prices: npt.NDArray[np.float64]
    epochs: npt.NDArray[np.float64]
    volumes: npt.NDArray[np.float64] | None


def read_bulk(
    path: Path,
    known: Container[str],
    report: ReplayReport,
    *,
    trade_date: date | None = None,
    utc_offset: timedelta = MOSCOW,
) -> TickColumns | None:
    """The ticks of a plain CSV file in the project's layout or the MOEX trades layout read in
    bulk, as read_ticks would give them; None (the report untouched) when the file needs the
    row reader."""
    data = path.read_bytes()
    if b"\0" in data:
        return None  # fixed-width numpy bytes drop trailing NULs; the row reader keeps them
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None  # the row reader's to report
    newline = data.find(b"\n")
    head, body = (data, b"") if newline < 0 else (data[:newline], data[newline + 1 :])
    header = _header(head)
    if header is None:
        return None
    if header in BULK_LAYOUTS:
        parsed = _tick_layout(header, body)
    elif "tradetime" in header:
        parsed = _trade_layout(header, body, trade_date, utc_offset)
    else:
        return None
    return None if parsed is None else _known_only(path, parsed, known, report)


def _header(line: bytes) -> tuple[str, ...] | None:
    """The column names of a header line as the row reader keys them (stripped, lower case),
    or None when the csv module would read it otherwise (quotes, a lone carriage return) or
    the row reader takes the file for JSON lines."""
    line = line.removesuffix(b"\r")
    if b'"' in line or b"\r" in line:
        return None
    text = line.decode("utf-8")
    if text.lstrip().startswith("{"):
        return None
    return tuple(name.strip().lower() for name in text.split(","))


def _tick_layout(header: tuple[str, ...], body: bytes) -> _Parsed | None:
    """secid,price,time[,volume] with ISO 8601 UTC times."""
    fields = csvcolumns.split(body, len(header))
    if fields is None:
        return None  # a quoted, empty or missing field: the row reader says which
    prices = csvcolumns.decimals(fields, 1)
    epochs = csvcolumns.iso_epochs(fields, 2)
    volumes = csvcolumns.decimals(fields, 3) if "volume" in header else None
    if prices is None or epochs is None or ("volume" in header and volumes is None):
        return None  # not a plain decimal or a time in a layout read here: the row reader
    return _Parsed(fields, 0, prices, epochs, volumes)


def _trade_layout(
    header: tuple[str, ...], body: bytes, trade_date: date | None, utc_offset: timedelta
) -> _Parsed | None:
    """MOEX trades: the columns from_trade_row and parse_tick read, found by name; every other
    column is skipped unread (it may even be empty)."""
    names = set(header)
    if names & TRADE_ROW_ONLY or not {"secid", "price"} <= names:
        return None  # a time of the row's own wins over TRADETIME; a missing column is named
    at = {name: header.index(name) for name in TRADE_COLUMNS if name in names}
    if any(header.count(name) > 1 for name in at):
        return None
    if "tradedate" not in at and trade_date is None:
        return None  # the row reader says the trading date is missing
    if not -timedelta(days=1) < utc_offset < timedelta(days=1):
        return None
    fields = csvcolumns.split(body, len(header), required=at.values())
    if fields is None:
        return None
    clock = csvcolumns.clock_micros(fields, at["tradetime"])
    if "tradedate" in at:
        days = csvcolumns.iso_days(fields, at["tradedate"])
    else:
        assert trade_date is not None
        days = np.full(fields.rows, (trade_date - EPOCH_DAY).days, dtype=np.int64)
    if clock is None or days is None:
        return None
    offset = utc_offset // timedelta(microseconds=1)
    epochs = csvcolumns.epoch_seconds(days * csvcolumns.MICROS_PER_DAY + clock - offset)
    prices = csvcolumns.decimals(fields, at["price"])
    # A volume of the row's own wins over QUANTITY, as in from_trade_row.
    volume_at = at.get("volume", at.get("quantity"))
    volumes = None if volume_at is None else csvcolumns.decimals(fields, volume_at)
    if epochs is None or prices is None or (volume_at is not None and volumes is None):
        return None
    return _Parsed(fields, at["secid"], prices, epochs, volumes)


def _known_only(
    path: Path, parsed: _Parsed, known: Container[str], report: ReplayReport
) -> TickColumns | None:
    """The parsed ticks of known secids; the others refused in the report as the row reader
    refuses them. None when a price, volume or secid needs the row reader's validation."""
    prices, volumes = parsed.prices, parsed.volumes
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        return None
    if volumes is not None and not (np.isfinite(volumes).all() and (volumes >= 0).all()):
        return None
    names, codes = csvcolumns.codes(parsed.fields.text(parsed.secid))
    secids = [name.decode("utf-8") for name in names.tolist()]
    if any(s != s.strip() or not s or len(s) > MAX_SECID_LENGTH for s in secids):
        return None
    unknown = [n for n, secid in enumerate(secids) if secid not in known]
    keep: npt.NDArray[np.bool_] | None = None
    if unknown:
        refused = np.isin(codes, unknown)
        for row in np.flatnonzero(refused).tolist():
            secid = secids[int(codes[row])]
            error = TickRejected("secid", f"unknown secid {secid!r}: not a constituent")
            report.rejected.append((row + 2, str(error)))
        log.warning(
            "%s: %d lines refused (unknown secids %s)",
            path,
            int(refused.sum()),
            ", ".join(sorted(secids[n] for n in unknown)),
        )
        keep = ~refused
    batch = TickColumns(secids, codes.reshape(-1), prices, parsed.epochs, volumes)
    return batch if keep is None else batch.take(np.flatnonzero(keep))


def first_tick_epoch(
    path: str | Path, *, trade_date: date | None = None, utc_offset: timedelta = MOSCOW
) -> float | None:
    """Epoch seconds of the first valid, timed tick in a file (None when there is none, or no
    such file: ReplaySource names that)."""
    if not Path(path).is_file():
        return None
    for _, raw in _rows(Path(path)):
        try:
            if isinstance(raw, dict) and _is_trade_row(raw):
                raw = from_trade_row(raw, trade_date, utc_offset)
            if isinstance(raw, dict) and raw.get("time") is not None:
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
        *,
        trade_date: date | None = None,
        utc_offset: timedelta = MOSCOW,
    ) -> None:
        """With a clock (epoch seconds; the engine's replay clock), each tick waits until the
        clock reaches its recorded time; without one, until its offset from the first tick.
        `trade_date` and `utc_offset` read MOEX trades rows (see from_trade_row)."""
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
        self.trade_date = trade_date
        self.utc_offset = utc_offset

    def read(self) -> TickColumns:
        """The file's valid ticks; refused lines go in the report."""
        return read_columns(
            self.path,
            self.known,
            self.report,
            trade_date=self.trade_date,
            utc_offset=self.utc_offset,
        )

    async def run(self, submit: Submit) -> None:
        await self.play(self.read(), submit)

    async def play(self, ticks: TickColumns, submit: Submit) -> None:
        """Hand ticks already read to submit, each once its recorded time has come."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Ticks go in file order, each once the clock has reached its recorded time.
        due = np.maximum.accumulate(ticks.epochs) if len(ticks) else ticks.epochs
        first = float(ticks.epochs[0]) if len(ticks) else 0.0
        done = 0
        while done < len(ticks):
            end = min(done + BATCH, len(ticks))
            if self.speed > 0:
                now = (
                    self.clock()
                    if self.clock is not None
                    else first + (loop.time() - started) * self.speed
                )
                end = min(end, int(np.searchsorted(due, now, side="right")))
                if end <= done:
                    await asyncio.sleep((float(ticks.epochs[done]) - now) / self.speed)
                    continue
            self.report.submitted += submit(ticks[done:end])
            done = end
            await asyncio.sleep(0)
        log.info(
            "replay of %s done: %d ticks, %d refused",
            self.path,
            self.report.submitted,
            len(self.report.rejected),
        )


@dataclass(frozen=True, slots=True)
class GridReplay:
    """What replay_on_grid did: ticks applied, publications made and grid instants stepped."""

    ticks: int
    publications: int
    grid_instants: int


def end_of_day(engine: Engine, epoch: float) -> float:
    """Epoch seconds of the end of the exchange local day holding `epoch`."""
    offset = engine.family.session.utc_offset.total_seconds()
    return float((np.floor((epoch + offset) / 86_400) + 1) * 86_400 - offset)


async def replay_on_grid(
    engine: Engine,
    ticks: TickColumns,
    clock: SteppedClock,
    until: float | None = None,
    progress: Callable[[int], None] | None = None,
    start: float | None = None,
) -> GridReplay:
    """Replay ticks as fast as possible on recorded time: the engine's clock (`clock`) steps
    from grid instant to grid instant; before each one the ticks recorded up to it are applied,
    then the engine publishes it. Starts at grid instant `start` (default: the one after the
    first tick; with no ticks, `start` is needed) and runs to `until` (epoch seconds; default:
    the end of the exchange local day of the last tick) so the day's close is published too.
    `progress` is told how many ticks have been handed to the engine after each batch."""
    if not len(ticks) and start is None:
        return GridReplay(0, 0, 0)
    cadence = engine.cadence
    due = np.maximum.accumulate(ticks.epochs)
    first = float(ticks.epochs[0]) if len(ticks) else float(start or 0)
    last = float(due[-1]) if len(ticks) else first
    if until is None:
        until = end_of_day(engine, last)
    clock.set(first)
    grid = next_grid_instant(first, cadence) if start is None else start
    applied = publications = steps = done = 0
    while grid <= until:
        end = int(np.searchsorted(due, grid, side="right"))
        if end > done:
            clock.set(float(due[end - 1]))
            for start in range(done, end, BATCH):
                stop = min(start + BATCH, end)
                applied += engine.submit(ticks[start:stop])
                if progress is not None:
                    progress(stop)
            done = end
        clock.set(grid)
        publications += len(await engine.publish(grid))
        steps += 1
        grid += cadence
    return GridReplay(applied, publications, steps)
