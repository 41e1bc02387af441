"""The exchange calendar: which local (Moscow) dates are trading days.

Weekdays trade and weekends do not, unless a file of exceptions says otherwise: a `holiday`
closes a weekday, a `workday` opens a Saturday or Sunday (Russia moves public holidays by decree
and sometimes makes a Saturday a working day)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path

from streaming.errors import FileFormatError

DEFAULT_CALENDAR = Path(__file__).resolve().parent.parent / "data" / "calendar_moex.csv"
COLUMNS = ("date", "kind", "comment")
SATURDAY = 5
# No real calendar closes for more than a few weeks; a longer search means a broken file.
MAX_SEARCH_DAYS = 366


class CalendarLoadError(FileFormatError):
    """A calendar file is wrong: names the file, the line, the column and the reason."""

    row_word = "line"


class DayKind(StrEnum):
    """An exception to the weekday rule."""

    HOLIDAY = "holiday"  # a weekday without trading
    WORKDAY = "workday"  # a Saturday or Sunday with trading


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """One line of a calendar file."""

    day: date
    kind: DayKind
    comment: str = ""


@dataclass(frozen=True, slots=True)
class ExchangeCalendar:
    """Trading days in exchange local time; the empty calendar trades every weekday."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    source: str = "<weekdays>"

    def __post_init__(self) -> None:
        both = self.holidays & self.workdays
        if both:
            raise CalendarLoadError(
                self.source, None, "date", f"{min(both)} is both a holiday and a workday"
            )

    @classmethod
    def from_entries(cls, entries: Iterable[CalendarEntry], source: str) -> ExchangeCalendar:
        """Build a calendar from entries (duplicates must already be rejected)."""
        holidays = frozenset(e.day for e in entries if e.kind is DayKind.HOLIDAY)
        workdays = frozenset(e.day for e in entries if e.kind is DayKind.WORKDAY)
        return cls(holidays, workdays, source)

    def is_trading_day(self, day: date) -> bool:
        """Whether the exchange trades on this local (Moscow) date."""
        if day.weekday() >= SATURDAY:
            return day in self.workdays
        return day not in self.holidays

    def previous_trading_day(self, day: date) -> date:
        """The last trading day strictly before this local date."""
        return self._search(day, -1)

    def next_trading_day(self, day: date) -> date:
        """The first trading day strictly after this local date."""
        return self._search(day, 1)

    def trading_days(self, first: date, last: date) -> Iterator[date]:
        """The trading days from first to last, both included, in order."""
        day = first
        while day <= last:
            if self.is_trading_day(day):
                yield day
            day += timedelta(days=1)

    def _search(self, day: date, step: int) -> date:
        candidate = day
        for _ in range(MAX_SEARCH_DAYS):
            candidate += timedelta(days=step)
            if self.is_trading_day(candidate):
                return candidate
        raise CalendarLoadError(
            self.source, None, None, f"no trading day within {MAX_SEARCH_DAYS} days of {day}"
        )


WEEKDAYS = ExchangeCalendar()


def parse_calendar(text: str, source: str) -> ExchangeCalendar:
    """Parse a `date,kind,comment` file; `#` lines and blank lines are ignored."""
    return ExchangeCalendar.from_entries(parse_entries(text, source), source)


def parse_entries(text: str, source: str) -> list[CalendarEntry]:
    """The entries of a calendar file in file order, validated."""
    entries: list[CalendarEntry] = []
    seen: dict[date, int] = {}
    header: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        # One record per physical line, so line numbers in errors are the ones an editor shows.
        cells = next(csv.reader([stripped]))
        if header is None:
            header = [cell.strip().lower() for cell in cells]
            _check_header(header, source, number)
            continue
        entry = _parse_row(header, cells, source, number)
        if entry.day in seen:
            raise CalendarLoadError(
                source, number, "date", f"{entry.day} already listed on line {seen[entry.day]}"
            )
        seen[entry.day] = number
        entries.append(entry)
    if header is None:
        raise CalendarLoadError(source, None, None, f"no header line ({','.join(COLUMNS)})")
    return entries


def load_calendar(path: Path | str = DEFAULT_CALENDAR) -> ExchangeCalendar:
    """Read a calendar file (UTF-8); errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CalendarLoadError(str(path), None, None, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CalendarLoadError(str(path), None, None, "not UTF-8 text") from None
    except ValueError as error:  # a path no file can have (an embedded NUL)
        raise CalendarLoadError(str(path), None, None, f"cannot read: {error}") from None
    return parse_calendar(text, str(path))


def _check_header(header: list[str], source: str, number: int) -> None:
    for column in COLUMNS[:2]:
        if column not in header:
            raise CalendarLoadError(source, number, column, "missing from the header")
    for column in header:
        if column not in COLUMNS:
            raise CalendarLoadError(source, number, column, "unknown column")
    if len(set(header)) != len(header):
        raise CalendarLoadError(source, number, None, "a column is named twice")


def _parse_row(header: list[str], cells: list[str], source: str, number: int) -> CalendarEntry:
    if len(cells) > len(header):
        raise CalendarLoadError(
            source, number, None, f"{len(cells)} cells but the header has {len(header)} columns"
        )
    row = dict(zip(header, (cell.strip() for cell in cells), strict=False))
    text = row.get("date", "")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise CalendarLoadError(
            source, number, "date", f"must be YYYY-MM-DD, got {text!r}"
        ) from None
    kind_text = row.get("kind", "").lower()
    try:
        kind = DayKind(kind_text)
    except ValueError:
        raise CalendarLoadError(
            source, number, "kind", f"must be holiday or workday, got {kind_text!r}"
        ) from None
    if kind is DayKind.WORKDAY and day.weekday() < SATURDAY:
        # A workday on a weekday changes nothing, so it is almost surely a mistyped date.
        raise CalendarLoadError(
            source, number, "date", f"{day} is a {day:%A}: only a weekend day can be a workday"
        )
    return CalendarEntry(day, kind, row.get("comment", ""))
