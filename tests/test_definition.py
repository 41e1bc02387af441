"""The index definition file: the shipped one loads; every error names the file and the key."""

from __future__ import annotations

from datetime import date, time, timedelta
from pathlib import Path

import pytest

from streaming.errors import BaseLoadError, ConfigError
from streaming.methodology.calculator import Calculator
from streaming.methodology.definition import load_definition

BASE = "secids,issuer,issue_size_index,waprice\nA,A,500,10\nB,B,100,20\n"
GOOD = """
name = "TEST"
base = "base.csv"
effective_date = 2023-03-17
fx_rate = 90.0
cadence_seconds = 5
auction_policy = "indicative"
[guard]
threshold = 0.15
[session]
continuous_start = "10:00"
continuous_end = "18:55"
auction_start = "18:55"
auction_end = "19:00"
utc_offset_hours = 3
[[index]]
code = "IMOEX"
currency = "RUB"
divisor = 3.0
[[index]]
code = "RTSI"
currency = "USD"
divisor = 0.5
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.csv").write_text(BASE)
    path = tmp_path / "def.toml"
    path.write_text(text)
    return path


def test_shipped_definition_loads_and_is_consistent() -> None:
    definition = load_definition()
    assert definition.codes == ("IMOEX", "RTSI")
    assert len(definition.base) >= 30
    imoex, rtsi = definition.indices
    assert (imoex.currency, rtsi.currency) == ("RUB", "USD")
    # RTSI's divisor follows the published IMOEX/RTSI divisor ratio.
    assert imoex.divisor / rtsi.divisor == pytest.approx(31.50217672573, rel=1e-9)
    assert definition.cadence_seconds == 15
    assert definition.session.main_span.end == time(18, 50)  # the official close
    assert definition.session.continuous.start == time(10)
    assert definition.guard == {"threshold": 0.2, "confirmations": 1}
    calc = Calculator(definition.base)  # every line has a reference price
    value = imoex.value(calc.capitalization, None)
    assert 2000 < value < 4000  # IMOEX traded between 2000 and 3000 points in 2023


def test_definition_file(tmp_path: Path) -> None:
    d = load_definition(write(tmp_path, GOOD))
    assert d.name == "TEST" and d.codes == ("IMOEX", "RTSI")
    assert d.fx_rate == 90.0 and d.cadence_seconds == 5
    assert d.session.closing_auction.end == time(19) and d.session.utc_offset == timedelta(hours=3)
    assert d.auction_policy.value == "indicative" and d.guard == {"threshold": 0.15}
    assert d.calendar.is_trading_day(date(2026, 11, 20))  # the shipped calendar by default
    assert d.effective_date == date(2023, 3, 17)
    assert d.base.secids == ("A", "B")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('base = "base.csv"', "", "base"),
        ("fx_rate = 90.0", "fx_rate = -2", "fx_rate"),
        ("fx_rate = 90.0", "", "fx_rate"),  # a USD index needs it
        ("cadence_seconds = 5", "cadence_seconds = 7", "cadence_seconds"),
        ('auction_end = "19:00"', 'auction_end = "seven"', "session.auction_end"),
        ('continuous_start = "10:00"', 'continuous_start = "19:00"', "session.continuous_end"),
        ("threshold = 0.15", "threshold = 15", "guard.threshold"),
        ('auction_policy = "indicative"', 'auction_policy = "sometimes"', "auction_policy"),
        ('code = "RTSI"', 'code = "IMOEX"', "index.code"),
        ('currency = "USD"', 'currency = "EUR"', "index[1].currency"),
        ("divisor = 0.5", "divisor = 0", "index[1].divisor"),
        ("divisor = 0.5", 'divisor = "half"', "index[1].divisor"),
        ('name = "TEST"', 'nmae = "TEST"', "nmae"),
        ("utc_offset_hours = 3", "utc_offset_hours = 3\nzone = 1", "session.zone"),
        ("effective_date = 2023-03-17", 'effective_date = "soon"', "effective_date"),
        ("divisor = 3.0", "", "index[0].divisor"),
    ],
)
def test_errors_name_the_key_and_file(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_definition(path)
    assert caught.value.key == key
    assert str(path) in str(caught.value)


def test_bad_base_file_names_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    (tmp_path / "base.csv").write_text("secids,issue_size_index,waprice\nA,500,10\nB,lots,20\n")
    with pytest.raises(BaseLoadError) as caught:
        load_definition(path)
    assert (caught.value.row, caught.value.column) == (3, "issue_size_index")


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_definition(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_definition(write(tmp_path, "base = \n"))
