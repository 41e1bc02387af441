"""Base loading in the MOEX ISS analytics layout: what loads, and errors naming file/row/column."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.errors import BaseLoadError
from streaming.methodology.base import format_base_csv, load_base_csv, parse_base_csv

ISS_EXPORT = """indexid,tradedate,ticker,shortnames,secids,issue_size_total,ff_factor,w_factor,waprice,cap_index,weight
IMOEX,2023-06-15,SBER,Сбербанк,SBER,21586948000,0.52,0.8436987,240.1,,14.9
IMOEX,2023-06-15,SBERP,Сбербанк-п,SBERP,1000000000,1,0.8436987,239.5,,1.1
IMOEX,2023-06-15,AFKS,Система ао,AFKS,9650000000,0.36,1,16.811,,0.5
"""


def test_iss_export_loads_with_extra_columns_ignored() -> None:
    base = parse_base_csv(ISS_EXPORT, "iss.csv")
    assert base.secids == ("SBER", "SBERP", "AFKS")
    sber = base.constituents[0]
    assert sber.index_shares == pytest.approx(21586948000 * 0.52 * 0.8436987, rel=1e-15)
    assert sber.reference_price == 240.1
    assert sber.issuer == "SBER"  # no issuer column: each line is its own issuer


def test_ticker_header_issuer_and_issue_size_index_only() -> None:
    text = "ticker;issuer;issue_size_index;waprice\nGAZP;Gazprom;1000;150\nLKOH;Lukoil;20;6000\n"
    base = parse_base_csv(text)
    assert base.secids == ("GAZP", "LKOH")
    assert [c.issuer for c in base.constituents] == ["Gazprom", "Lukoil"]
    assert base.constituents[1].index_shares == 20


def test_free_float_in_whole_percent_is_read_as_fraction() -> None:
    text = "secids,issue_size_total,ff_factor,w_factor\nX,1000,33,1\n"
    assert parse_base_csv(text).constituents[0].index_shares == pytest.approx(330)


def test_empty_optional_cells_and_comment_lines() -> None:
    text = "# provenance line\n# another\nsecids,issue_size_total,ff_factor,w_factor,waprice,issuer\nX,10,0.5,1,,\n"
    c = parse_base_csv(text).constituents[0]
    assert c.reference_price is None and c.issuer == "X" and c.index_shares == 5


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        (
            "secids,issue_size_total,ff_factor,w_factor\nX,abc,0.5,1\n",
            2,
            "issue_size_total",
            "not a number",
        ),
        (
            "secids,issue_size_total,ff_factor,w_factor\nX,10,0.5,1\nY,-1,0.5,1\n",
            3,
            "issue_size_total",
            "positive",
        ),
        ("secids,issue_size_total,ff_factor,w_factor\nX,10,0.5,1.5\n", 2, "w_factor", "at most 1"),
        (
            "secids,issue_size_total,ff_factor,w_factor\nX,10,0.5,1\nX,10,0.5,1\n",
            3,
            "secids",
            "duplicate",
        ),
        ("secids,issue_size_total,ff_factor,w_factor\n,10,0.5,1\n", 2, "secids", "empty"),
        ("secids,issue_size_total,ff_factor,w_factor\nX,10,,1\n", 2, "ff_factor", "empty"),
        ("secids,issue_size_total,ff_factor\nX,10,1\n", 1, "w_factor", "missing column"),
        ("name,issue_size_index\nX,10\n", 1, "secids", "missing column"),
        (
            "secids,issue_size_total,ff_factor,w_factor,waprice\nX,10,0.5,1,nan\n",
            2,
            "waprice",
            "finite",
        ),
        (
            "secids,issue_size_total,ff_factor,w_factor,issue_size_index\nX,10,0.5,1,7\n",
            2,
            "issue_size_index",
            "disagrees",
        ),
        (
            "# only\n# comments\nsecids,issue_size_total,ff_factor,w_factor\nX,1,1,1,9\n",
            4,
            None,
            "more cells",
        ),
    ],
)
def test_errors_name_file_row_column_reason(
    text: str, row: int, column: str | None, words: str
) -> None:
    with pytest.raises(BaseLoadError) as caught:
        parse_base_csv(text, "bad.csv")
    error = caught.value
    assert (error.path, error.row, error.column) == ("bad.csv", row, column)
    assert words in error.reason
    assert "bad.csv" in str(error)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(BaseLoadError, match="cannot read"):
        load_base_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(BaseLoadError, match="no header"):
        load_base_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("secids,issue_size_index\n")
    with pytest.raises(BaseLoadError, match="no constituents"):
        load_base_csv(header_only)


def test_format_round_trips(tmp_path: Path) -> None:
    base = parse_base_csv(ISS_EXPORT, "iss.csv")
    path = tmp_path / "out.csv"
    path.write_text(format_base_csv(base, ["made from a test"]))
    again = load_base_csv(path)
    assert again.secids == base.secids
    for a, b in zip(again.constituents, base.constituents, strict=True):
        assert a.index_shares == b.index_shares and a.reference_price == b.reference_price
