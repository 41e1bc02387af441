"""The bulk CSV reader of replays gives exactly the row reader's ticks, or steps aside; its
clock times, dates and epochs match datetime's."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.sources import csvcolumns
from streaming.sources.replay import ReplayReport, read_columns, read_ticks

KNOWN = frozenset({"SBER", "GAZP", "LKOH", "T"})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def both(path: Path) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    bulk = read_columns(path, KNOWN, ReplayReport())
    rows = list(read_ticks(path, KNOWN, ReplayReport()))
    return (
        [(t.secid, t.price, t.time.timestamp()) for t in bulk],
        [(t.secid, t.price, t.time.timestamp()) for t in rows],
    )


TIMES = st.builds(
    lambda y, mo, d, h, mi, s, frac, sep, z: (
        f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{z}"
    ),
    st.integers(2000, 2030),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".123", ".000001", ".999999"]),
    st.sampled_from(["T", " "]),
    st.sampled_from(["", "Z"]),
)
PRICES = st.one_of(
    st.floats(0.0001, 1e6, allow_nan=False).map(repr),
    st.decimals("0.0001", "100000", places=6).map(str),
    st.sampled_from(["1", "0.5", "260", "1e3", "00012.50"]),
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(sorted(KNOWN)), PRICES, TIMES), min_size=1, max_size=30
    ),
    crlf=st.booleans(),
    trailing_newline=st.booleans(),
)
def test_bulk_reader_equals_row_reader(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str, str]],
    crlf: bool,
    trailing_newline: bool,
) -> None:
    end = "\r\n" if crlf else "\n"
    text = end.join(["secid,price,time", *(",".join(row) for row in rows)])
    path = tmp_path_factory.mktemp("csv") / "ticks.csv"
    path.write_bytes((text + (end if trailing_newline else "")).encode())
    body = path.read_bytes().split(b"\n", 1)[1].decode()
    assert csv_columns_of(body) is not None  # the bulk path did read it
    bulk, by_row = both(path)
    assert bulk == by_row


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('SBER,"260.5",2024-03-01T07:00:00Z\n', "quoted field"),
        ("SBER,,2024-03-01T07:00:00Z\n", "empty field"),
        ("SBER,260.5\n", "missing field"),
        ("SBER,260.5,2024-03-01T07:00:00Z,1\n", "extra field"),
        ("SBER,260.5,2024-02-30T07:00:00Z\n", "no such day"),
        ("SBER,260.5,2024-03-01T24:00:00Z\n", "hour 24"),
        ("SBER,260.5,2024-03-01T07:00Z\n", "no seconds"),
        ("SBER,260.5,2024-03-01T07:00:00.5Z\n", "one fractional digit"),
        ("SBER,260.5,2024-03-01T07:00:00+03:00\n", "offset"),
        ("SBER,abc,2024-03-01T07:00:00Z\n", "not a number"),
        ("SBER,260.5,2024-03-01T07:00:00Z\n\nGAZP,1,2024-03-01T07:00:00Z\n", "blank line"),
    ],
)
def test_anything_unusual_goes_to_the_row_reader(body: str, why: str) -> None:
    assert csv_columns_of(body) is None, why


def csv_columns_of(body: str) -> object:
    fields = csvcolumns.split(body.encode(), 3)
    if fields is None:
        return None
    prices = csvcolumns.decimals(fields, 1)
    epochs = csvcolumns.iso_epochs(fields, 2)
    return None if prices is None or epochs is None else (prices, epochs)


def test_bad_rows_are_still_named_when_the_file_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text(
        "secid,price,time\nSBER,260.5,2024-03-01T07:00:00Z\nGAZP,-1,2024-03-01T07:00:01Z\n"
        "NOPE,1,2024-03-01T07:00:02Z\n"
    )
    report = ReplayReport()
    ticks = read_columns(path, KNOWN, report)
    assert [t.secid for t in ticks] == ["SBER"]
    assert [line for line, _ in report.rejected] == [3, 4]
    assert "price" in report.rejected[0][1] and "NOPE" in report.rejected[1][1]


def test_codes_match_numpy_unique() -> None:
    names = np.array([b"SBER", b"GAZP", b"SBER", b"T", b"GAZP", b"LKOH"], dtype="S5")
    got_names, got_codes = csvcolumns.codes(names)
    want_names, want_codes = np.unique(names, return_inverse=True)
    assert got_names.tolist() == want_names.tolist()
    assert got_codes.tolist() == want_codes.reshape(-1).tolist()


def test_a_file_with_a_header_only_gives_no_ticks(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("secid,price,time\n")
    assert len(read_columns(path, KNOWN, ReplayReport())) == 0
    assert csvcolumns.split(b"", 3) is None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("SBER,260.5,-024-03-01T07:00:00Z\n", "a negative year"),
        ("SBER,260.5,+024-03-01T07:00:00Z\n", "a signed year"),
        ("SBER,260.5,0000-03-01T07:00:00Z\n", "year 0"),
        ("SBER,260.5,2300-03-01T07:00:00Z\n", "beyond exact float seconds"),
        ("SBER,260.5,2024-03-01T07:00:00Z\rGAZP,1,2024-03-01T07:00:00Z\n", "a lone CR"),
    ],
)
def test_times_datetime_would_not_read_alike_go_to_the_row_reader(body: str, why: str) -> None:
    assert csv_columns_of(body) is None, why


def test_split_lets_optional_fields_be_empty() -> None:
    body = b",SBER,1\r\nx,GAZP,\n"
    assert csvcolumns.split(body, 3) is None
    assert csvcolumns.split(body, 3, required=[0, 1]) is None
    fields = csvcolumns.split(body, 3, required=[1])
    assert fields is not None
    assert fields.text(1).tolist() == [b"SBER", b"GAZP"]
    assert fields.text(2).tolist() == [b"1", b""]


def column(values: list[str]) -> csvcolumns.Fields:
    fields = csvcolumns.split("".join(f"{v}\n" for v in values).encode(), 1)
    assert fields is not None
    return fields


def test_clock_times_as_microseconds_since_midnight() -> None:
    fields = column(["10:00:05", "10:00:05.123", "23:59:59.999999", "00:00:00.000001"])
    micros = csvcolumns.clock_micros(fields, 0)
    assert micros is not None
    assert micros.tolist() == [36_005_000_000, 36_005_123_000, 86_399_999_999, 1]


@pytest.mark.parametrize(
    "clock",
    ["10:00", "10:00:05.5", "10:00:05.12", "10:00:05.1234", "10:00:05.1234567", "24:00:00",
     "10:60:00", "10:00:60", "100005", "10:00:05Z", " 10:00:05", "10-00-05", "1O:00:05",
     "-1:00:00"],
)  # fmt: skip
def test_clock_times_in_other_layouts_are_not_read(clock: str) -> None:
    assert csvcolumns.clock_micros(column(["10:00:00", clock]), 0) is None


@settings(max_examples=200, deadline=None)
@given(st.times(), st.sampled_from([0, 3, 6]))
def test_clock_times_match_datetime(moment: time, digits: int) -> None:
    text = moment.isoformat(timespec={0: "seconds", 3: "milliseconds", 6: "microseconds"}[digits])
    micros = csvcolumns.clock_micros(column([text]), 0)
    parsed = time.fromisoformat(text)
    assert micros is not None
    assert micros.tolist() == [
        ((parsed.hour * 60 + parsed.minute) * 60 + parsed.second) * 10**6 + parsed.microsecond
    ]


def test_dates_as_days_since_1970() -> None:
    days = csvcolumns.iso_days(column(["1970-01-01", "2024-02-29", "1969-12-31", "0001-01-01"]), 0)
    assert days is not None
    assert days.tolist() == [0, 19_782, -1, (date(1, 1, 1) - date(1970, 1, 1)).days]


@pytest.mark.parametrize(
    "day",
    ["2023-02-29", "2024-02-30", "2024-04-31", "2024-13-01", "2024-00-10", "2024-01-00",
     "0000-01-01", "+024-01-01", "-024-01-01", "2024/01/01", "20240101", "2024-1-01", "2024-01-1 "],
)  # fmt: skip
def test_dates_in_other_layouts_are_not_read(day: str) -> None:
    assert csvcolumns.iso_days(column(["2024-01-01", day]), 0) is None


@settings(max_examples=200, deadline=None)
@given(st.dates())
def test_dates_match_datetime(day: date) -> None:
    days = csvcolumns.iso_days(column([day.isoformat()]), 0)
    assert days is not None
    assert days.tolist() == [(day - date(1970, 1, 1)).days]


def test_epoch_seconds_only_where_they_are_exact() -> None:
    micros = np.array([0, 1, -1, 2**53 - 1], dtype=np.int64)
    seconds = csvcolumns.epoch_seconds(micros)
    assert seconds is not None
    assert seconds.tolist() == [
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(m)) - EPOCH).total_seconds()
        for m in micros.tolist()
    ]
    assert csvcolumns.epoch_seconds(np.array([2**53], dtype=np.int64)) is None
    assert csvcolumns.epoch_seconds(np.array([-(2**53)], dtype=np.int64)) is None
