"""The bulk CSV reader of replays gives exactly the row reader's ticks, or steps aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.sources import csvcolumns
from streaming.sources.replay import ReplayReport, read_columns, read_ticks

KNOWN = frozenset({"SBER", "GAZP", "LKOH", "T"})


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
