"""Fitting a base from daily history: synthetic data with known k is recovered, absent lines get
k = 0, gaps are carried forward, malformed files name row and column; the fit-base command."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from streaming.errors import BaseLoadError
from streaming.fitbase import RTSI_DIVISOR_RATIO, check_table, main, review_table
from streaming.methodology.definition import load_definition
from streaming.methodology.fit import (
    DivisorPeriod,
    IndexDay,
    ShareDay,
    fit_period,
    fitted_base,
    issuers,
    official_closes_on,
    parse_index_history,
    parse_share_history,
    review_check,
    review_checks,
    split_periods,
)

SHARE_HEADER = "TRADEDATE,SECID,SHORTNAME,NUMTRADES,WAPRICE,LEGALCLOSEPRICE"
INDEX_HEADER = "TRADEDATE,SECID,CLOSE,DIVISOR"
NAMES = {"AAAA": "Альфа ао", "AAAAP": "Альфа ап", "BBBB": "Бета", "CCCC": "Гамма", "DDDD": "Дельта"}
START_PRICES = {"AAAA": 250.0, "AAAAP": 240.0, "BBBB": 1500.0, "CCCC": 0.85, "DDDD": 42.0}
# Two divisor periods: a review between them changes k and drops DDDD; CCCC is never in.
K_FIRST = {"AAAA": 1.1e9, "AAAAP": 9.0e8, "BBBB": 2.0e8, "CCCC": 0.0, "DDDD": 3.0e9}
K_SECOND = {"AAAA": 1.0e9, "AAAAP": 8.0e8, "BBBB": 2.5e8, "CCCC": 0.0, "DDDD": 0.0}
DIVISORS = (2.5e8, 2.6e8)
DAYS_PER_PERIOD = 15


def _trading_days(count: int) -> list[date]:
    days: list[date] = []
    day = date(2023, 3, 1)
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _prices(days: list[date]) -> dict[date, dict[str, float]]:
    """Random-walk official closes, rounded to the cent as an exchange would print them."""
    rng = np.random.default_rng(20230317)
    prices: dict[date, dict[str, float]] = {}
    level = dict(START_PRICES)
    for day in days:
        for secid in level:
            step = float(np.exp(rng.normal(0.0, 0.02)))
            level[secid] = round(level[secid] * step, 4 if level[secid] < 10 else 2)
        prices[day] = dict(level)
    return prices


def _capitalization(prices: dict[str, float], ks: dict[str, float]) -> float:
    return sum(prices[s] * ks[s] for s in ks)


def _synthetic(
    *, rounded: bool = True, continuous: bool = False
) -> tuple[str, str, list[date], dict[date, dict[str, float]]]:
    """TQBR and index CSV texts for two periods built from known k, divisors and prices; with
    ``continuous`` the second divisor follows from the first by continuity at the last closes."""
    days = _trading_days(2 * DAYS_PER_PERIOD)
    prices = _prices(days)
    divisors = DIVISORS
    if continuous:
        last = prices[days[DAYS_PER_PERIOD - 1]]
        ratio = _capitalization(last, K_SECOND) / _capitalization(last, K_FIRST)
        divisors = (DIVISORS[0], DIVISORS[0] * ratio)
    shares = [SHARE_HEADER]
    index = [INDEX_HEADER]
    for n, day in enumerate(days):
        period = n // DAYS_PER_PERIOD
        ks = (K_FIRST, K_SECOND)[period]
        capitalization = _capitalization(prices[day], ks)
        close = capitalization / divisors[period]
        close_text = f"{close:.2f}" if rounded else repr(close)
        divisor_text = f"{divisors[period]:.4f}" if rounded else repr(divisors[period])
        index.append(f"{day},IMOEX,{close_text},{divisor_text}")
        for secid, price in prices[day].items():
            shares.append(f"{day},{secid},{NAMES[secid]},1000,{price},{price}")
    return "\n".join(shares) + "\n", "\n".join(index) + "\n", days, prices


def test_unrounded_synthetic_closes_recover_k_exactly() -> None:
    share_text, index_text, _, _ = _synthetic(rounded=False)
    shares = parse_share_history(share_text, "tqbr.csv")
    periods = split_periods(parse_index_history(index_text, "imoex.csv"))
    assert [p.divisor for p in periods] == list(DIVISORS)
    assert [len(p.days) for p in periods] == [DAYS_PER_PERIOD, DAYS_PER_PERIOD]
    for period, truth in zip(periods, (K_FIRST, K_SECOND), strict=True):
        fit = fit_period(period, shares)
        assert fit.secids == tuple(sorted(truth))
        for secid, k in truth.items():
            assert fit.k(secid) == pytest.approx(k, rel=1e-7, abs=0.0)
        assert fit.max_abs < 1e-6


def test_rounded_closes_are_reproduced_to_the_cent_and_absent_lines_get_zero() -> None:
    share_text, index_text, days, prices = _synthetic()
    shares = parse_share_history(share_text, "tqbr.csv")
    periods = split_periods(parse_index_history(index_text, "imoex.csv"))
    first, second = (fit_period(p, shares) for p in periods)
    assert first.constituents == ("AAAA", "AAAAP", "BBBB", "DDDD")
    assert second.constituents == ("AAAA", "AAAAP", "BBBB")
    assert first.k("CCCC") == 0.0 and second.k("CCCC") == 0.0 and second.k("DDDD") == 0.0
    for fit in (first, second):
        assert fit.reproduced == DAYS_PER_PERIOD
        assert fit.max_abs <= 0.005 + 1e-9  # rounding of the published close, nothing more
        assert fit.rms == pytest.approx(float(np.sqrt(np.mean(fit.residuals**2))))
    # Rounding to the cent is ~1e-6 of the close; 15 days of correlated prices amplify it.
    for secid in ("AAAA", "AAAAP", "BBBB"):
        assert second.k(secid) == pytest.approx(K_SECOND[secid], rel=2e-4)
    base = fitted_base(second, NAMES)
    assert base.secids == ("AAAA", "AAAAP", "BBBB")
    assert [c.issuer for c in base.constituents] == ["AAAA", "AAAA", "BBBB"]
    last_day = days[-1]
    assert [c.reference_price for c in base.constituents] == [
        prices[last_day][s] for s in base.secids
    ]


def test_missing_price_is_carried_forward_and_a_late_line_is_left_out() -> None:
    days = _trading_days(6)
    k = {"AAAA": 2.0e9, "BBBB": 1.0e8}
    prices: dict[str, list[float | None]] = {
        "AAAA": [100.0, 101.0, 103.0, 99.0, 98.5, 100.5],
        "BBBB": [2000.0, 2010.0, None, None, 1990.0, 2030.0],  # suspended two days
    }
    divisor = 1.0e9
    shares: list[ShareDay] = []
    index: list[IndexDay] = []
    last_b = 0.0
    for n, day in enumerate(days):
        b = prices["BBBB"][n]
        last_b = b if b is not None else last_b
        a = prices["AAAA"][n]
        assert a is not None
        index.append(IndexDay(day, (a * k["AAAA"] + last_b * k["BBBB"]) / divisor, divisor))
        shares.append(ShareDay(day, "AAAA", "A", a))
        shares.append(ShareDay(day, "BBBB", "B", b))
        if n >= 3:  # listed in the middle of the period: not in this period's base
            shares.append(ShareDay(day, "NEWW", "N", 50.0 + n))
    (period,) = split_periods(index)
    fit = fit_period(period, shares)
    assert fit.secids == ("AAAA", "BBBB")
    assert fit.unpriced == ("NEWW",)
    assert fit.carried == ((days[2], "BBBB"), (days[3], "BBBB"))
    assert fit.k("AAAA") == pytest.approx(k["AAAA"], rel=1e-9)
    assert fit.k("BBBB") == pytest.approx(k["BBBB"], rel=1e-9)
    assert fit.prices[3, 1] == 2010.0


def test_a_line_with_no_price_in_the_period_is_not_fitted() -> None:
    days = _trading_days(8)
    shares = [ShareDay(d, "AAAA", "A", 100.0 + n) for n, d in enumerate(days)]
    shares += [ShareDay(d, "BBBB", "B", 10.0 + n) for n, d in enumerate(days[:4])]
    shares += [ShareDay(d, "BBBB", "B", None) for d in days[4:]]
    index = [IndexDay(d, (100.0 + n) * 5.0, 1.0) for n, d in enumerate(days)]
    # Second period: BBBB has rows but no price: a constant carried price would act as an
    # intercept, so it must not enter the fit at all.
    second = split_periods(index[:4] + [IndexDay(d.trade_date, d.close, 2.0) for d in index[4:]])
    fit = fit_period(second[1], shares)
    assert fit.secids == ("AAAA",)
    assert fit.k("AAAA") == pytest.approx(10.0)


def test_issuers_pair_preferred_lines_by_ticker_and_short_name() -> None:
    names = {
        "SBER": "Сбербанк",
        "SBERP": "Сбербанк-п",
        "TATNP": "Татнфт 3ап",
        "TRNFP": "Транснф ап",
        "RTKM": "Ростел -ао",
        "MTLRP": "Мечел ап",
        "GEMCP": "Gem Capital",  # ends in P but its short name does not say preferred
    }
    assert issuers(names) == {
        "SBER": "SBER",
        "SBERP": "SBER",
        "TATNP": "TATN",
        "TRNFP": "TRNF",
        "RTKM": "RTKM",
        "MTLRP": "MTLR",
        "GEMCP": "GEMCP",
    }


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        (
            f"{SHARE_HEADER}\n2023-03-01,AAAA,A,10,1.0,1.0\n2023-03-02,AAAA,A,10,1.0,abc\n",
            3,
            "LEGALCLOSEPRICE",
            "not a number",
        ),
        (f"{SHARE_HEADER}\n2023-03-01,AAAA,A,10,1.0,-2\n", 2, "LEGALCLOSEPRICE", "positive"),
        (f"{SHARE_HEADER}\n01.03.2023,AAAA,A,10,1.0,1.0\n", 2, "TRADEDATE", "YYYY-MM-DD"),
        (f"{SHARE_HEADER}\n2023-03-01,,A,10,1.0,1.0\n", 2, "SECID", "empty"),
        (f"{SHARE_HEADER}\n2023-03-01,AAAA,A,ten,1.0,1.0\n", 2, "NUMTRADES", "whole number"),
        (
            f"{SHARE_HEADER}\n2023-03-01,AAAA,A,1,1,1\n2023-03-01,AAAA,A,1,1,1\n",
            3,
            "SECID",
            "repeats row 2",
        ),
        ("TRADEDATE,SECID,CLOSE\n2023-03-01,AAAA,1.0\n", 1, "LEGALCLOSEPRICE", "missing column"),
        (f"{SHARE_HEADER}\n2023-03-01,AAAA,A,10,1.0,1.0,extra\n", 2, None, "more cells"),
    ],
)
def test_malformed_share_history_names_row_and_column(
    text: str, row: int, column: str | None, words: str
) -> None:
    with pytest.raises(BaseLoadError) as caught:
        parse_share_history(text, "tqbr.csv")
    error = caught.value
    assert (error.path, error.row, error.column) == ("tqbr.csv", row, column)
    assert words in error.reason
    assert "tqbr.csv" in str(error) and f"row {row}" in str(error)


@pytest.mark.parametrize(
    ("text", "row", "column", "words"),
    [
        (f"{INDEX_HEADER}\n2023-03-01,IMOEX,2500.1,\n", 2, "DIVISOR", "empty"),
        (
            f"{INDEX_HEADER}\n2023-03-01,IMOEX,2500.1,1e9\n2023-03-01,IMOEX,2500,1e9\n",
            3,
            "TRADEDATE",
            "repeats row 2",
        ),
        (
            f"{INDEX_HEADER}\n2023-03-01,IMOEX,2500.1,1e9\n2023-03-02,RTSI,1000,1e9\n",
            3,
            "SECID",
            "differs",
        ),
        ("TRADEDATE,SECID,CLOSE\n2023-03-01,IMOEX,2500.1\n", 1, "DIVISOR", "missing column"),
        (f"{INDEX_HEADER}\n2023-03-01,IMOEX,inf,1e9\n", 2, "CLOSE", "positive"),
    ],
)
def test_malformed_index_history_names_row_and_column(
    text: str, row: int, column: str, words: str
) -> None:
    with pytest.raises(BaseLoadError) as caught:
        parse_index_history(text, "imoex.csv")
    assert (caught.value.row, caught.value.column) == (row, column)
    assert words in caught.value.reason


def test_empty_files_are_load_errors() -> None:
    with pytest.raises(BaseLoadError, match="no header"):
        parse_share_history("", "tqbr.csv")
    with pytest.raises(BaseLoadError, match="no data rows"):
        parse_index_history(INDEX_HEADER + "\n", "imoex.csv")


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    share_text, index_text, _, _ = _synthetic()
    tqbr = tmp_path / "tqbr.csv"
    imoex = tmp_path / "imoex.csv"
    tqbr.write_text(share_text, encoding="utf-8")
    imoex.write_text(index_text, encoding="utf-8")
    return tqbr, imoex


def test_fit_base_writes_a_loadable_base_and_definition(tmp_path: Path) -> None:
    tqbr, imoex = _write_inputs(tmp_path)
    base_path = tmp_path / "data" / "base.csv"
    definition_path = tmp_path / "conf" / "index.toml"
    argv = ["--tqbr", str(tqbr), "--imoex", str(imoex), "--out-base", str(base_path)]
    assert main([*argv, "--out-definition", str(definition_path), "--fx", "92.5"]) == 0
    text = base_path.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert "RMS" in text and "divisor 260000000.0000" in text and "imoex.csv" in text
    definition = load_definition(definition_path)
    assert definition.base.secids == ("AAAA", "AAAAP", "BBBB")  # the last period by default
    assert definition.effective_date == _trading_days(2 * DAYS_PER_PERIOD)[DAYS_PER_PERIOD]
    assert definition.fx_rate == 92.5
    assert definition.cadence_seconds == 15
    assert definition.spec("IMOEX").divisor == DIVISORS[1]
    rtsi = definition.spec("RTSI")
    assert rtsi.currency == "USD"
    assert rtsi.divisor == pytest.approx(DIVISORS[1] / RTSI_DIVISOR_RATIO, abs=1e-4)
    for constituent in definition.base.constituents:
        assert constituent.index_shares == pytest.approx(K_SECOND[constituent.secid], rel=2e-4)


def test_fit_base_period_start_and_default_fx(tmp_path: Path) -> None:
    tqbr, imoex = _write_inputs(tmp_path)
    base_path, definition_path = tmp_path / "b.csv", tmp_path / "d.toml"
    first_day = _trading_days(1)[0]
    argv = ["--tqbr", str(tqbr), "--imoex", str(imoex), "--out-base", str(base_path)]
    argv += ["--out-definition", str(definition_path), "--period-start", str(first_day)]
    assert main(argv) == 0
    definition = load_definition(definition_path)
    assert definition.base.secids == ("AAAA", "AAAAP", "BBBB", "DDDD")
    assert definition.fx_rate == 80.0
    assert "Illustrative USD/RUB" in definition_path.read_text(encoding="utf-8")


def test_fit_base_check_prints_every_period_and_errors_return_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tqbr, imoex = _write_inputs(tmp_path)
    assert main(["--tqbr", str(tqbr), "--imoex", str(imoex), "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["period", "days", "lines"]
    assert out[1].split()[3:5] == ["15", "4"] and out[2].split()[3:5] == ["15", "3"]
    assert out[1].endswith("15 of 15") and out[2].endswith("15 of 15")
    # Then the divisor continuity at the one review between the two periods.
    assert out[3] == "" and out[4].split()[:3] == ["review", "priced", "on"]
    days = _trading_days(2 * DAYS_PER_PERIOD)
    row = out[5].split()
    assert row[:2] == [str(days[DAYS_PER_PERIOD]), str(days[DAYS_PER_PERIOD - 1])]
    assert row[4] == f"{DIVISORS[1]:.4f}"
    assert len(out) == 8 and out[6].startswith("ppm = ")
    assert not (tmp_path / "imoex_base.csv").exists()

    bad = ["--tqbr", str(tqbr), "--imoex", str(imoex), "--period-start", "2023-03-02"]
    assert main(bad) == 1
    assert "not the start of a period" in capsys.readouterr().err
    assert main(["--tqbr", str(tmp_path / "absent.csv"), "--imoex", str(imoex), "--check"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_check_table_lists_statistics() -> None:
    share_text, index_text, _, _ = _synthetic()
    shares = parse_share_history(share_text)
    fits = [fit_period(p, shares) for p in split_periods(parse_index_history(index_text))]
    table = check_table(fits)
    assert f"{fits[0].rms:.4f}" in table and f"{fits[1].max_abs:.4f}" in table


def test_review_check_recovers_a_continuous_divisor() -> None:
    share_text, index_text, days, prices = _synthetic(rounded=False, continuous=True)
    shares = parse_share_history(share_text)
    fits = [fit_period(p, shares) for p in split_periods(parse_index_history(index_text))]
    (check,) = review_checks(fits, shares)
    last = days[DAYS_PER_PERIOD - 1]
    assert check.pricing_day == last and check.effective == days[DAYS_PER_PERIOD]
    assert check.close == fits[0].period.days[-1].close
    truth = _capitalization(prices[last], K_SECOND) / _capitalization(prices[last], K_FIRST)
    assert check.ratio == pytest.approx(truth, rel=1e-7)
    assert check.decision.official == fits[1].period.divisor
    assert abs(check.difference_ppm) < 0.1  # k are recovered to ~1e-7 (see above)
    assert check.backward_ppm == pytest.approx(-check.difference_ppm, abs=1e-6)
    assert abs(check.old_error) < 1e-6 and abs(check.new_error) < 1e-6
    # DDDD leaves the base and the others' k change: another day's closes give another ratio.
    moved = review_check(fits[0], fits[1], shares, days[DAYS_PER_PERIOD])
    assert abs(moved.difference_ppm) > 100.0
    table = review_table([check], shares)
    assert f"{check.decision.computed:.4f}" in table and str(last) in table
    with pytest.raises(ValueError, match="not a trading day"):
        review_check(fits[0], fits[1], shares, date(2020, 1, 1))


def test_fit_uncertainty_helpers() -> None:
    share_text, index_text, _, _ = _synthetic()
    shares = parse_share_history(share_text)
    fit = fit_period(split_periods(parse_index_history(index_text))[1], shares)
    # The leverages of the period's own days are the diagonal of the hat matrix: they sum to
    # the number of fitted lines.
    own = [official_closes_on(shares, d.trade_date) for d in fit.period.days]
    assert sum(fit.leverage(p) for p in own) == pytest.approx(len(fit.constituents), rel=1e-9)
    assert fit.sigma == pytest.approx(
        float(np.sqrt(np.sum(fit.residuals**2) / (DAYS_PER_PERIOD - 3))), rel=1e-12
    )
    day = fit.period.days[4]
    inside = fit.value_sd(day.trade_date, own[4])
    outside = fit.value_sd(date(2000, 1, 3), own[4])  # the same prices on a day outside
    h = fit.leverage(own[4])
    assert inside == pytest.approx(fit.sigma * np.sqrt(1 - h))
    assert outside == pytest.approx(fit.sigma * np.sqrt(1 + h))
    assert fit.value_at(own[4]) == pytest.approx(fit.fitted[4], rel=1e-12)
    with pytest.raises(ValueError, match="no price for BBBB"):
        fit.value_at({"AAAA": 1.0, "AAAAP": 1.0})
    first = fit_period(split_periods(parse_index_history(index_text))[0], shares)
    assert first.sigma > 0
    # Three days fitted exactly by three lines: no degrees of freedom are left for σ.
    tiny = fit_period(DivisorPeriod(fit.period.divisor, fit.period.days[:3]), shares)
    assert len(tiny.constituents) == 3
    assert tiny.sigma == float("inf")


def test_official_closes_on_carries_the_last_close_forward() -> None:
    days = _trading_days(3)
    shares = [
        ShareDay(days[0], "AAAA", "A", 10.0),
        ShareDay(days[1], "AAAA", "A", None),
        ShareDay(days[0], "BBBB", "B", 5.0),
        ShareDay(days[1], "BBBB", "B", 6.0),
        ShareDay(days[2], "BBBB", "B", 7.0),
    ]
    assert official_closes_on(shares, days[1]) == {"AAAA": 10.0, "BBBB": 6.0}
    assert official_closes_on(shares, days[0] - timedelta(days=1)) == {}
