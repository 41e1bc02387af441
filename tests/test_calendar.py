"""The exchange calendar: weekdays trade, the file lists the exceptions, errors say where."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from streaming.methodology.calendar import (
    DEFAULT_CALENDAR,
    WEEKDAYS,
    CalendarLoadError,
    DayKind,
    ExchangeCalendar,
    load_calendar,
    parse_calendar,
    parse_entries,
)

WORKING_SATURDAY = """\
# a year with a working Saturday
date,kind,comment
2027-11-06,workday,Saturday worked for Monday 2027-11-08
2027-11-08,holiday,transferred from Saturday 2027-11-06
2027-11-07,holiday,a Sunday listed as a holiday changes nothing
"""


def test_shipped_calendar_closes_the_2026_public_holidays() -> None:
    calendar = load_calendar()
    for day in ("2026-01-01", "2026-01-09", "2026-02-23", "2026-03-09", "2026-05-11"):
        assert not calendar.is_trading_day(date.fromisoformat(day)), day
    for day in ("2026-06-12", "2026-11-04", "2026-12-31", "2027-01-08", "2027-06-14"):
        assert not calendar.is_trading_day(date.fromisoformat(day)), day
    assert calendar.is_trading_day(date(2026, 1, 12))  # Monday after the New Year break
    assert calendar.is_trading_day(date(2026, 11, 20))
    assert not calendar.is_trading_day(date(2026, 11, 21))  # Saturday
    assert calendar.source == str(DEFAULT_CALENDAR)


def test_shipped_calendar_has_the_2026_working_day_count() -> None:
    # 261 weekdays in 2026 less 14 weekday holidays: 247, the production calendar's figure.
    days = list(load_calendar().trading_days(date(2026, 1, 1), date(2026, 12, 31)))
    assert len(days) == 247
    assert days[0] == date(2026, 1, 12)
    assert days[-1] == date(2026, 12, 30)


def test_shipped_calendar_lists_only_weekday_holidays() -> None:
    entries = parse_entries(DEFAULT_CALENDAR.read_text(encoding="utf-8"), "shipped")
    assert {e.kind for e in entries} == {DayKind.HOLIDAY}
    assert all(e.day.weekday() < 5 and e.comment for e in entries)
    assert [e.day for e in entries] == sorted(e.day for e in entries)


def test_previous_and_next_trading_day_skip_weekends_and_holidays() -> None:
    calendar = load_calendar()
    assert calendar.next_trading_day(date(2025, 12, 31)) == date(2026, 1, 12)
    assert calendar.previous_trading_day(date(2026, 1, 12)) == date(2025, 12, 31)
    assert calendar.previous_trading_day(date(2026, 5, 12)) == date(2026, 5, 8)
    assert calendar.next_trading_day(date(2026, 11, 20)) == date(2026, 11, 23)
    assert calendar.previous_trading_day(date(2026, 11, 23)) == date(2026, 11, 20)
    # Strictly before / after, even from a trading day.
    assert calendar.next_trading_day(date(2026, 11, 18)) == date(2026, 11, 19)


def test_a_working_saturday_trades_and_its_transferred_monday_does_not() -> None:
    calendar = parse_calendar(WORKING_SATURDAY, "moved.csv")
    assert calendar.is_trading_day(date(2027, 11, 6))
    assert not calendar.is_trading_day(date(2027, 11, 7))
    assert not calendar.is_trading_day(date(2027, 11, 8))
    assert calendar.next_trading_day(date(2027, 11, 5)) == date(2027, 11, 6)
    assert calendar.next_trading_day(date(2027, 11, 6)) == date(2027, 11, 9)
    assert calendar.previous_trading_day(date(2027, 11, 9)) == date(2027, 11, 6)


def test_the_empty_calendar_trades_every_weekday() -> None:
    assert WEEKDAYS.is_trading_day(date(2026, 1, 1))
    assert not WEEKDAYS.is_trading_day(date(2026, 1, 3))
    assert len(list(WEEKDAYS.trading_days(date(2026, 11, 16), date(2026, 11, 22)))) == 5


def test_comment_column_is_optional_and_columns_may_be_reordered() -> None:
    calendar = parse_calendar("kind,date\nholiday,2026-11-18\n", "short.csv")
    assert not calendar.is_trading_day(date(2026, 11, 18))


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("date,comment\n2026-01-01,x\n", 1, "kind", "missing from the header"),
        ("date,kind,note\n", 1, "note", "unknown column"),
        ("# header next\ndate,kind\n\n2026-13-01,holiday\n", 4, "date", "YYYY-MM-DD"),
        ("date,kind\n2026-01-01,closed\n", 2, "kind", "holiday or workday"),
        (
            "date,kind\n2026-01-01,holiday\n2026-01-01,holiday\n",
            3,
            "date",
            "already listed on line 2",
        ),
        ("date,kind\n2026-11-18,workday\n", 2, "date", "only a weekend day"),
        ("date,kind\n2026-11-18,holiday,extra\n", 2, None, "3 cells"),
        ("date,kind\n,holiday\n", 2, "date", "YYYY-MM-DD"),
    ],
)
def test_file_errors_name_the_line_and_column(
    text: str, line: int, column: str | None, reason: str
) -> None:
    with pytest.raises(CalendarLoadError, match=reason) as caught:
        parse_calendar(text, "bad.csv")
    assert (caught.value.path, caught.value.row, caught.value.column) == ("bad.csv", line, column)
    assert str(caught.value).startswith(f"bad.csv, line {line}")


def test_a_file_without_a_header_is_an_error() -> None:
    with pytest.raises(CalendarLoadError, match="no header"):
        parse_calendar("# only comments\n\n", "empty.csv")


def test_missing_and_binary_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(CalendarLoadError, match="cannot read") as caught:
        load_calendar(tmp_path / "absent.csv")
    assert caught.value.path == str(tmp_path / "absent.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"date,kind\n\xff\xfe\n")
    with pytest.raises(CalendarLoadError, match="UTF-8"):
        load_calendar(binary)


def test_a_day_cannot_be_both_holiday_and_workday() -> None:
    with pytest.raises(CalendarLoadError, match="both"):
        ExchangeCalendar(frozenset({date(2026, 11, 21)}), frozenset({date(2026, 11, 21)}))


def test_a_calendar_closed_for_a_year_stops_searching() -> None:
    every_weekday = frozenset(WEEKDAYS.trading_days(date(2026, 11, 21), date(2028, 1, 1)))
    closed = ExchangeCalendar(holidays=every_weekday, source="closed.csv")
    with pytest.raises(CalendarLoadError, match="no trading day within 366 days"):
        closed.next_trading_day(date(2026, 11, 20))
