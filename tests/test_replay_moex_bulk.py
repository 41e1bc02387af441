"""MOEX trades CSV files are read in bulk with exactly the row reader's ticks, epochs, volumes
and refusals; any file the bulk reader does not vouch for goes to the row reader whole."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.sources.replay import MOSCOW, ReplayReport, read_bulk, read_columns, read_ticks
from streaming.ticks import TickColumns

DATA = Path(__file__).parent / "data" / "replay"
KNOWN = frozenset({"SBER", "GAZP", "LKOH", "T"})
UNKNOWN = ("GMKN", "XXXX")
OFFSETS = (MOSCOW, timedelta(0), timedelta(hours=-5), timedelta(hours=5, minutes=30))
DAY = date(2026, 11, 20)


def compare(
    path: Path, trade_date: date | None = None, utc_offset: timedelta = MOSCOW
) -> tuple[TickColumns, ReplayReport]:
    """read_columns against the row reader: same ticks, epochs, volumes and refusals."""
    report, row_report = ReplayReport(), ReplayReport()
    got = read_columns(path, KNOWN, report, trade_date=trade_date, utc_offset=utc_offset)
    want = TickColumns.of(
        list(read_ticks(path, KNOWN, row_report, trade_date=trade_date, utc_offset=utc_offset))
    )
    assert list(got) == list(want)
    assert got.epochs.tolist() == want.epochs.tolist()  # bit for bit, not approximately
    assert np.array_equal(got.volumes, want.volumes, equal_nan=True)
    assert report.rejected == row_report.rejected
    return got, report


def bulk(path: Path, trade_date: date | None = None, utc_offset: timedelta = MOSCOW) -> object:
    report = ReplayReport()
    read = read_bulk(path, KNOWN, report, trade_date=trade_date, utc_offset=utc_offset)
    if read is None:
        assert report.rejected == []  # nothing reported twice when the row reader takes over
    return read


def write(tmp_path: Path, text: str, name: str = "trades.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


# --- generated MOEX files ------------------------------------------------------------------

CLOCKS = st.builds(
    lambda h, m, s, fraction: f"{h:02d}:{m:02d}:{s:02d}{fraction}",
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.one_of(
        st.just(""),
        st.integers(0, 999).map(lambda n: f".{n:03d}"),
        st.integers(0, 999_999).map(lambda n: f".{n:06d}"),
    ),
)
DATES = st.dates(date(2000, 1, 1), date(2030, 12, 31)).map(date.isoformat)
PRICES = st.one_of(
    st.floats(0.0001, 1e6, allow_nan=False).map(repr),
    st.decimals("0.0001", "100000", places=6).map(str),
    st.sampled_from(["1", "0.5", "260", "1e3", "00012.50"]),
)
QUANTITIES = st.one_of(st.integers(0, 10**7).map(str), st.decimals("0", "1000", places=2).map(str))
# Columns the readers skip; they may be empty.
EXTRAS = {
    "tradeno": st.integers(1, 10**12).map(str),
    "boardid": st.sampled_from(["TQBR", "SMAL", ""]),
    "buysell": st.sampled_from(["B", "S", ""]),
    "value": st.decimals("0", "1000000", places=2).map(str),
}
# Values the bulk reader must either read exactly as the row reader or leave to it.
ODD = {
    "secid": [" SBER", "", "sber", "Ё", "S" * 40, '"SBER"'],
    "tradetime": [
        "10:00", "10:00:05.5", "10:00:05.1234", "24:00:00", "10:60:00", "10:00:60",
        "10:00:05+03:00", " 10:00:05", "100005", "", "10:00:05Z", "-1:00:00",
    ],
    "tradedate": [
        "20.11.2026", "2026-02-30", "2026-2-01", "20261120", "0000-01-01", " 2026-11-20",
        "", "2300-01-01", "+026-11-20",
    ],
    "price": ["-1", "0", "abc", "nan", "inf", "1e400", " 5", "", "1_0"],
    "quantity": ["-1", "x", "inf", "", " 7"],
    "boardid": ["TQ\rBR", '"TQBR"', "TQ,BR"],
}  # fmt: skip


@st.composite
def moex_files(draw: st.DrawFn, odd: bool = False) -> tuple[str, date | None, timedelta]:
    """(text, trade_date, utc_offset) of a MOEX trades CSV file."""
    with_date = draw(st.booleans())
    columns = ["secid", "tradetime", "price"]
    columns += ["tradedate"] * with_date + ["quantity"] * draw(st.booleans())
    columns += draw(st.lists(st.sampled_from(sorted(EXTRAS)), unique=True))
    columns = draw(st.permutations(columns))
    header = []
    for name in columns:
        upper = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        cased = "".join(c.upper() if up else c for c, up in zip(name, upper, strict=True))
        header.append(draw(st.sampled_from(["", " "])) + cased)
    values = {
        "secid": st.sampled_from(sorted(KNOWN) + list(UNKNOWN)),
        "tradetime": CLOCKS,
        "tradedate": DATES,
        "price": PRICES,
        "quantity": QUANTITIES,
        **EXTRAS,
    }
    rows = [[draw(values[name]) for name in columns] for _ in range(draw(st.integers(1, 25)))]
    if odd:
        spoilt = [name for name in columns if name in ODD]
        name = draw(st.sampled_from(spoilt))
        row = draw(st.integers(0, len(rows) - 1))
        rows[row][columns.index(name)] = draw(st.sampled_from(ODD[name]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    text = end.join([",".join(header), *(",".join(row) for row in rows)])
    text += draw(st.sampled_from(["", end]))
    trade_date = draw(st.none() if with_date else st.dates(date(2000, 1, 1), date(2030, 12, 31)))
    return text, trade_date, draw(st.sampled_from(OFFSETS))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moex_files())
def test_bulk_reads_moex_files_exactly_as_the_row_reader(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, date | None, timedelta]
) -> None:
    text, trade_date, utc_offset = case
    path = write(tmp_path_factory.mktemp("moex"), text)
    assert bulk(path, trade_date, utc_offset) is not None  # the bulk path did read it
    compare(path, trade_date, utc_offset)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moex_files(odd=True))
def test_odd_values_give_the_row_readers_result(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, date | None, timedelta]
) -> None:
    text, trade_date, utc_offset = case
    compare(write(tmp_path_factory.mktemp("moex"), text), trade_date, utc_offset)


# --- what the bulk path reads ----------------------------------------------------------------


def test_recorded_trades_are_read_in_bulk_with_refusals_by_line(tmp_path: Path) -> None:
    path = DATA / "trades.csv"
    assert bulk(path) is not None
    ticks, report = compare(path)
    assert len(ticks) == 10
    assert report.rejected == [
        (6, "secid: unknown secid 'GMKN': not a constituent"),
        (10, "secid: unknown secid 'GMKN': not a constituent"),
    ]
    first = ticks[0]
    assert (first.secid, first.price, first.volume) == ("SBER", 245.61, 10.0)
    assert first.time.isoformat() == "2026-11-20T07:00:05+00:00"  # 10:00:05 Moscow


def test_the_given_trading_date_and_offset_place_the_trades(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "price,Quantity,secid,TradeTime\n250.5,3,SBER,00:30:00.000250\n251,4,GAZP,23:59:59.500\n",
    )
    assert bulk(path, DAY, timedelta(hours=5)) is not None
    ticks, _ = compare(path, DAY, timedelta(hours=5))
    assert [t.time.isoformat() for t in ticks] == [
        "2026-11-19T19:30:00.000250+00:00",  # 00:30 at UTC+5 is the evening before in UTC
        "2026-11-20T18:59:59.500000+00:00",
    ]
    assert ticks.volumes.tolist() == [3.0, 4.0]


def test_empty_skipped_columns_do_not_stop_the_bulk_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "TRADENO,TRADEDATE,TRADETIME,BOARDID,SECID,PRICE,QUANTITY,BUYSELL\n"
        "1,2026-11-20,10:00:05,,SBER,245.61,10,\n2,2026-11-20,10:00:06,TQBR,GAZP,171.2,5,S\n",
    )
    assert bulk(path) is not None
    ticks, _ = compare(path)
    assert [t.secid for t in ticks] == ["SBER", "GAZP"]


def test_a_volume_column_wins_over_quantity(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "SECID,TRADEDATE,TRADETIME,PRICE,QUANTITY,VOLUME\nSBER,2026-11-20,10:00:05,1,7,9\n",
    )
    assert bulk(path) is not None
    ticks, _ = compare(path)
    assert ticks.volumes.tolist() == [9.0]


def test_no_quantity_means_no_volume(tmp_path: Path) -> None:
    path = write(tmp_path, "SECID,TRADEDATE,TRADETIME,PRICE\nSBER,2026-11-20,10:00:05,1\n")
    assert bulk(path) is not None
    ticks, _ = compare(path)
    assert ticks[0].volume is None


def test_a_day_of_trades_in_bulk_equals_the_row_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    names = np.array([*sorted(KNOWN), *UNKNOWN])[rng.integers(0, 6, n)]
    micros = np.sort(rng.integers(7 * 3600 * 10**6, 24 * 3600 * 10**6, n))
    lines = ["TRADENO,TRADEDATE,TRADETIME,BOARDID,SECID,PRICE,QUANTITY,VALUE,BUYSELL"]
    for i, (secid, us) in enumerate(zip(names.tolist(), micros.tolist(), strict=True)):
        clock = (datetime(2026, 11, 20) + timedelta(microseconds=us)).time().isoformat()
        price = round(100 + rng.random() * 10, 2)
        lines.append(f"{i},2026-11-20,{clock},TQBR,{secid},{price},{i % 97},{price * 3:.2f},B")
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert bulk(path) is not None
    ticks, report = compare(path)
    assert len(ticks) + len(report.rejected) == n
    assert {line for line, _ in report.rejected} == {
        i + 2 for i in np.flatnonzero(np.isin(names, UNKNOWN)).tolist()
    }


# --- what goes to the row reader -------------------------------------------------------------

HEAD = "SECID,TRADEDATE,TRADETIME,PRICE,QUANTITY\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (HEAD + 'SBER,2026-11-20,10:00:05,"245.61",10\n', "a quoted field"),
        (
            "TRADENO,SECID,TRADEDATE,TRADETIME,PRICE\n\"1\",SBER,2026-11-20,10:00:05,1\n",
            "a quoted field in a skipped column",
        ),
        (HEAD + "SBER,2026-11-20,10:00:05,,10\n", "an empty price"),
        (HEAD + "SBER,2026-11-20,,245.61,10\n", "an empty TRADETIME"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61,\n", "an empty QUANTITY"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61\n", "a missing field"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61,10,1\n", "an extra field"),
        (HEAD + "SBER,2026-11-20,10:00:05,-245.61,10\n", "a negative price"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61,-1\n", "a negative quantity"),
        (HEAD + "SBER,2026-11-20,10:00:05,1e400,1\n", "an infinite price"),
        (HEAD + " SBER,2026-11-20,10:00:05,245.61,1\n", "a secid with spaces"),
        (HEAD + "S" * 40 + ",2026-11-20,10:00:05,245.61,1\n", "a secid too long"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61,1\n\nGAZP,2026-11-20,10:00:06,1,1\n", "blank"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61,1\rGAZP,2026-11-20,10:00:06,1,1\n", "lone CR"),
        (HEAD, "no trades"),
        ("SECID,TRADEDATE,TRADETIME,TIME,PRICE\nSBER,2026-11-20,10:00:05,2026-11-20T08:00:00Z,1\n",
         "a time of its own"),
        ("SECID,TRADEDATE,TRADETIME,PHASE,PRICE\nSBER,2026-11-20,10:00:05,main,1\n", "a phase"),
        ("SECID,TRADEDATE,TRADETIME,secid,PRICE\nSBER,2026-11-20,10:00:05,GAZP,1\n", "twice"),
        ("TRADEDATE,TRADETIME,PRICE\n2026-11-20,10:00:05,1\n", "no SECID column"),
        ("SECID,TRADEDATE,TRADETIME\nSBER,2026-11-20,10:00:05\n", "no PRICE column"),
        ('"SECID",TRADEDATE,TRADETIME,PRICE\nSBER,2026-11-20,10:00:05,1\n', "a quoted header"),
        ("{SECID,TRADEDATE,TRADETIME,PRICE\nSBER,2026-11-20,10:00:05,1\n", "JSON lines to rows"),
        ("\ufeff" + HEAD + "SBER,2026-11-20,10:00:05,245.61,1\n", "a byte order mark"),
        (HEAD + "SBER,2026-11-20,10:00:05,245.61,1\x00\n", "a NUL byte"),
    ],
)  # fmt: skip
def test_files_the_bulk_reader_does_not_vouch_for(tmp_path: Path, text: str, why: str) -> None:
    path = write(tmp_path, text)
    assert bulk(path) is None, why
    compare(path)


@pytest.mark.parametrize(
    "clock",
    ["10:00", "10:00:05.5", "10:00:05.1234", "24:00:00", "10:60:00", "10:00:60", "100005",
     "10:00:05+03:00", " 10:00:05", "10:00:05 ", "10-00-05", "1O:00:05", "T10:00:05"],
)  # fmt: skip
def test_trade_times_in_other_layouts_go_to_the_row_reader(tmp_path: Path, clock: str) -> None:
    path = write(
        tmp_path, f"{HEAD}SBER,2026-11-20,10:00:01,245.61,1\nGAZP,2026-11-20,{clock},1,1\n"
    )
    assert bulk(path) is None
    compare(path)


@pytest.mark.parametrize(
    "day",
    ["20.11.2026", "2026-02-30", "2023-02-29", "2026-13-01", "2026-00-10", "2026-2-01",
     "20261120", "0000-01-01", "+026-11-20", "2026-11-20T00:00", "2300-01-01", "1600-01-01"],
)  # fmt: skip
def test_trade_dates_in_other_layouts_go_to_the_row_reader(tmp_path: Path, day: str) -> None:
    path = write(tmp_path, f"{HEAD}SBER,2026-11-20,10:00:01,245.61,1\nGAZP,{day},10:00:02,1,1\n")
    assert bulk(path) is None
    compare(path)


def test_a_rejected_row_is_named_as_the_row_reader_names_it(tmp_path: Path) -> None:
    path = DATA / "bad_trades.csv"
    assert bulk(path) is None
    _, report = compare(path)
    assert report.rejected[:2] == [
        (2, "tradetime: not a time HH:MM:SS: '25:00:00'"),
        (3, "tradedate: not a date YYYY-MM-DD: '20.11.2026'"),
    ]


def test_no_trading_date_anywhere_goes_to_the_row_reader(tmp_path: Path) -> None:
    path = DATA / "trades_nodate.csv"
    assert bulk(path) is None
    ticks, report = compare(path)
    assert len(ticks) == 0 and len(report.rejected) == 12
    assert all("give the trading date" in reason for _, reason in report.rejected)
    assert bulk(path, DAY) is not None


def test_a_time_column_wins_over_tradetime(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "SECID,TRADEDATE,TRADETIME,TIME,PRICE\nSBER,2026-11-20,10:00:05,2026-11-20T08:00:00Z,1\n",
    )
    ticks, _ = compare(path)
    assert ticks[0].time.isoformat() == "2026-11-20T08:00:00+00:00"


def test_a_file_that_is_not_utf8_is_left_to_the_row_reader(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_bytes(HEAD.encode() + b"SBER,2026-11-20,10:00:05,245.61,1\nGAZP\xff,x,y,1,1\n")
    assert bulk(path) is None
    report = ReplayReport()
    ticks = list(read_ticks(path, KNOWN, report))
    assert [t.secid for t in ticks] == ["SBER"]
    assert [line for line, _ in report.rejected] == [3]  # refused by name, not a stop


def test_an_offset_of_a_day_or_more_is_left_to_the_row_reader(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "SBER,2026-11-20,10:00:05,245.61,1\n")
    assert bulk(path, utc_offset=timedelta(hours=24)) is None
    assert bulk(path, utc_offset=timedelta(hours=-23, minutes=-59)) is not None
