"""Fitting an index base from end-of-day data: the index shares Q·FF·W of every line over a
period of constant divisor, by non-negative least squares on the official closes.

Inputs are the MOEX ISS history layouts: shares of the TQBR board (TRADEDATE, SECID,
LEGALCLOSEPRICE, …) and the index itself (TRADEDATE, CLOSE, DIVISOR, …). Inside one divisor
period the official close satisfies ``CLOSE·DIVISOR = Σ LEGALCLOSEPRICE_i · k_i`` with
``k_i = Q_i·FF_i·W_i`` constant, so the k of the period solve a least-squares problem with one
equation per trading day.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streaming.errors import BaseLoadError
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.review import (
    PPM,
    BaseChange,
    DivisorDecision,
    DivisorPolicy,
    apply_base_change,
    effective_moment,
)
from streaming.publication import PUBLISHED_DECIMALS

FloatArray = npt.NDArray[np.float64]

SHARE_REQUIRED = ("TRADEDATE", "SECID", "LEGALCLOSEPRICE")
INDEX_REQUIRED = ("TRADEDATE", "CLOSE", "DIVISOR")
# A fitted line whose capitalization is below this fraction of the index capitalization (0.01 %)
# is noise, not a constituent: MOEX drops lines well above it (weight < 0.2 % at a review).
MIN_WEIGHT = 1e-4
# Preferred share lines: the ticker of the ordinary line plus "P", and a short name that says so.
PREFERRED_SUFFIXES = ("ап", "-п")


@dataclass(frozen=True, slots=True)
class ShareDay:
    """One share line on one trading day (TQBR board history)."""

    trade_date: date
    secid: str
    shortname: str
    official_close: float | None  # roubles, LEGALCLOSEPRICE; None when the cell is empty
    waprice: float | None = None  # roubles, volume-weighted average price of the day
    num_trades: int | None = None


@dataclass(frozen=True, slots=True)
class IndexDay:
    """The official close of the index on one trading day and the divisor in force."""

    trade_date: date
    close: float  # index points
    divisor: float


@dataclass(frozen=True, slots=True)
class DivisorPeriod:
    """Consecutive trading days sharing one divisor: one base, one set of k."""

    divisor: float
    days: tuple[IndexDay, ...]

    @property
    def start(self) -> date:
        return self.days[0].trade_date

    @property
    def end(self) -> date:
        return self.days[-1].trade_date

    @property
    def closes(self) -> FloatArray:
        """Official closes, index points, one per day."""
        return np.array([d.close for d in self.days], np.float64)


@dataclass(frozen=True, slots=True)
class PeriodFit:
    """The fitted base of one divisor period and how well it reproduces the official closes."""

    period: DivisorPeriod
    secids: tuple[str, ...]  # every line priced on all days of the period, sorted
    index_shares: FloatArray  # fitted k = Q·FF·W per secid; 0 = not a constituent
    prices: FloatArray  # roubles, [day, secid]: official closes used (gaps carried forward)
    fitted: FloatArray  # index points per day, unrounded
    carried: tuple[tuple[date, str], ...] = ()  # (day, secid) whose price was carried forward
    unpriced: tuple[str, ...] = ()  # lines first priced inside the period: left out (k = 0)

    @property
    def residuals(self) -> FloatArray:
        """Fitted minus official close, index points, per day."""
        return self.fitted - self.period.closes

    @property
    def rms(self) -> float:
        """Root mean square of the residuals, index points."""
        return float(np.sqrt(np.mean(self.residuals**2)))

    @property
    def max_abs(self) -> float:
        """Largest absolute residual, index points."""
        return float(np.max(np.abs(self.residuals)))

    @property
    def reproduced(self) -> int:
        """Days whose official close equals the fitted value rounded to 2 decimals."""
        rounded = np.round(self.fitted, PUBLISHED_DECIMALS)
        return int(np.count_nonzero(np.abs(rounded - self.period.closes) < 5e-7))

    @property
    def constituents(self) -> tuple[str, ...]:
        """Lines with a positive fitted k."""
        return tuple(s for s, k in zip(self.secids, self.index_shares, strict=True) if k > 0)

    @property
    def last_prices(self) -> FloatArray:
        """Each line's last official close of the period, roubles: the reference price."""
        return np.array(self.prices[-1], np.float64)

    def k(self, secid: str) -> float:
        """Fitted Q·FF·W of one line (0 when it is not a constituent)."""
        return float(self.index_shares[self.secids.index(secid)])

    @property
    def sigma(self) -> float:
        """Residual standard deviation, index points, over days − constituents degrees of
        freedom (inf when there are no more days than constituents)."""
        freedom = len(self.period.days) - len(self.constituents)
        if freedom <= 0:
            return math.inf
        return float(np.sqrt(np.sum(self.residuals**2) / freedom))

    def _constituent_prices(self, prices: Mapping[str, float]) -> FloatArray:
        missing = [s for s in self.constituents if s not in prices]
        if missing:
            raise ValueError(f"no price for {', '.join(missing)}")
        return np.array([prices[s] for s in self.constituents], np.float64)

    def value_at(self, prices: Mapping[str, float]) -> float:
        """The fitted base at these prices (roubles per secid) over the period's divisor, points."""
        row = self._constituent_prices(prices)
        shares = np.array([self.k(s) for s in self.constituents], np.float64)
        return float(row @ shares) / self.period.divisor

    def leverage(self, prices: Mapping[str, float]) -> float:
        """x'(XᵀX)⁻¹x of a row of prices (roubles) against the period's price table, over the
        constituents: how much the uncertainty of the fitted k shows in the value at x."""
        active = self.index_shares > 0
        scale = self.prices[:, active].mean(axis=0)
        _, triangle = np.linalg.qr(self.prices[:, active] / scale)
        z = np.linalg.solve(triangle.T, self._constituent_prices(prices) / scale)
        return float(z @ z)

    def value_sd(self, day: date, prices: Mapping[str, float]) -> float:
        """Standard deviation of (fitted value − official close) at these prices, points:
        σ·√(1 − h) for a day of the period (a residual), σ·√(1 + h) for a day outside it (a
        prediction), with h the leverage of the prices."""
        h = self.leverage(prices)
        inside = any(d.trade_date == day for d in self.period.days)
        return self.sigma * math.sqrt(max(0.0, 1.0 - h) if inside else 1.0 + h)


def _rows(
    text: str, path: str, required: Sequence[str]
) -> tuple[dict[str, str], list[tuple[int, dict[str, str]]]]:
    """Header name -> actual column, and (file line, row) pairs; header names are case-blind."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = list(reader.fieldnames or [])
    if not header:
        raise BaseLoadError(path, None, None, "no header line")
    columns = {name.strip().upper(): name for name in header}
    for name in required:
        if name not in columns:
            raise BaseLoadError(path, 1, name, "missing column")
    rows: list[tuple[int, dict[str, str]]] = []
    for offset, row in enumerate(reader):
        line = offset + 2  # 1-based file line; the header is line 1
        if None in row:
            raise BaseLoadError(path, line, None, "more cells than header columns")
        cells = {name: (row.get(actual) or "").strip() for name, actual in columns.items()}
        if any(cells.values()):
            rows.append((line, cells))
    if not rows:
        raise BaseLoadError(path, None, None, "no data rows")
    return columns, rows


def _date(cells: Mapping[str, str], column: str, path: str, line: int) -> date:
    text = cells[column]
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BaseLoadError(path, line, column, f"not a YYYY-MM-DD date: {text!r}") from None


def _number(
    cells: Mapping[str, str], column: str, path: str, line: int, *, required: bool
) -> float | None:
    text = cells.get(column, "")
    if not text:
        if required:
            raise BaseLoadError(path, line, column, "empty")
        return None
    try:
        number = float(text)
    except ValueError:
        raise BaseLoadError(path, line, column, f"not a number: {text!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise BaseLoadError(path, line, column, f"must be a positive number, got {text!r}")
    return number


def parse_share_history(text: str, path: str = "<memory>") -> tuple[ShareDay, ...]:
    """Parse TQBR daily history (CSV, columns by header name); errors name file/row/column."""
    columns, rows = _rows(text, path, SHARE_REQUIRED)
    days: list[ShareDay] = []
    seen: dict[tuple[date, str], int] = {}
    for line, cells in rows:
        trade_date = _date(cells, "TRADEDATE", path, line)
        secid = cells["SECID"]
        if not secid:
            raise BaseLoadError(path, line, "SECID", "empty")
        key = (trade_date, secid)
        if key in seen:
            raise BaseLoadError(
                path, line, "SECID", f"{secid} on {trade_date} repeats row {seen[key]}"
            )
        seen[key] = line
        trades = None
        if cells.get("NUMTRADES"):
            try:
                trades = int(cells["NUMTRADES"])
            except ValueError:
                raise BaseLoadError(
                    path, line, "NUMTRADES", f"not a whole number: {cells['NUMTRADES']!r}"
                ) from None
        days.append(
            ShareDay(
                trade_date=trade_date,
                secid=secid,
                shortname=cells.get("SHORTNAME", ""),
                official_close=_number(cells, "LEGALCLOSEPRICE", path, line, required=False),
                waprice=(
                    _number(cells, "WAPRICE", path, line, required=False)
                    if "WAPRICE" in columns
                    else None
                ),
                num_trades=trades,
            )
        )
    return tuple(days)


def parse_index_history(text: str, path: str = "<memory>") -> tuple[IndexDay, ...]:
    """Parse index daily history (CLOSE, DIVISOR per day), sorted by date; errors name the cell."""
    columns, rows = _rows(text, path, INDEX_REQUIRED)
    days: dict[date, IndexDay] = {}
    first: dict[date, int] = {}
    code: tuple[str, int] | None = None
    for line, cells in rows:
        if "SECID" in columns:
            # One file, one index: a second code would mix two divisors into one period.
            if code is None:
                code = (cells["SECID"], line)
            elif cells["SECID"] != code[0]:
                raise BaseLoadError(
                    path,
                    line,
                    "SECID",
                    f"{cells['SECID']!r} differs from {code[0]!r} (row {code[1]})",
                )
        trade_date = _date(cells, "TRADEDATE", path, line)
        if trade_date in days:
            raise BaseLoadError(
                path, line, "TRADEDATE", f"{trade_date} repeats row {first[trade_date]}"
            )
        first[trade_date] = line
        close = _number(cells, "CLOSE", path, line, required=True)
        divisor = _number(cells, "DIVISOR", path, line, required=True)
        assert close is not None and divisor is not None
        days[trade_date] = IndexDay(trade_date, close, divisor)
    return tuple(days[d] for d in sorted(days))


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise BaseLoadError(str(path), None, None, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise BaseLoadError(str(path), None, None, "not UTF-8 text") from None


def load_share_history(path: str | Path) -> tuple[ShareDay, ...]:
    """Load a TQBR daily history CSV file."""
    return parse_share_history(_read(path), str(path))


def load_index_history(path: str | Path) -> tuple[IndexDay, ...]:
    """Load an index daily history CSV file."""
    return parse_index_history(_read(path), str(path))


def split_periods(days: Iterable[IndexDay]) -> tuple[DivisorPeriod, ...]:
    """Group days (in date order) into runs of one divisor; a change starts a new period."""
    periods: list[DivisorPeriod] = []
    run: list[IndexDay] = []
    for day in sorted(days, key=lambda d: d.trade_date):
        if run and day.divisor != run[-1].divisor:
            periods.append(DivisorPeriod(run[0].divisor, tuple(run)))
            run = []
        run.append(day)
    if run:
        periods.append(DivisorPeriod(run[0].divisor, tuple(run)))
    return tuple(periods)


def _price_table(
    period: DivisorPeriod, shares: Iterable[ShareDay]
) -> tuple[tuple[str, ...], FloatArray, tuple[tuple[date, str], ...], tuple[str, ...]]:
    """Official closes [day, line] over the period, gaps carried forward from earlier days."""
    by_line: dict[str, dict[date, float]] = {}
    for row in shares:
        if row.official_close is not None and row.trade_date <= period.end:
            by_line.setdefault(row.secid, {})[row.trade_date] = row.official_close
    in_period = {d.trade_date for d in period.days}
    secids: list[str] = []
    columns: list[list[float]] = []
    carried: list[tuple[date, str]] = []
    unpriced: list[str] = []
    for secid in sorted(by_line):
        history = by_line[secid]
        # A line with no price of its own in the period is not traded there: carrying its old
        # price through would hand the fit a constant column, i.e. a free intercept.
        if in_period.isdisjoint(history):
            continue
        earlier = [d for d in history if d < period.start]
        last = history[max(earlier)] if earlier else None
        column: list[float] = []
        for day in period.days:
            price = history.get(day.trade_date)
            if price is None:
                if last is None:
                    break
                price = last
                carried.append((day.trade_date, secid))
            column.append(price)
            last = price
        if len(column) < len(period.days):
            unpriced.append(secid)
            continue
        secids.append(secid)
        columns.append(column)
    carried = [c for c in carried if c[1] in secids]
    table = np.array(columns, np.float64).T.reshape(len(period.days), len(secids))
    return tuple(secids), table, tuple(sorted(carried)), tuple(unpriced)


def _nnls(matrix: FloatArray, target: FloatArray) -> FloatArray:
    from scipy.optimize import nnls  # dev dependency: fitting is an offline tool

    solution, _ = nnls(matrix, target, maxiter=100 * max(1, matrix.shape[1]))
    return np.asarray(solution, np.float64)


def fit_period(
    period: DivisorPeriod, shares: Iterable[ShareDay], *, min_weight: float = MIN_WEIGHT
) -> PeriodFit:
    """Fit k = Q·FF·W ≥ 0 of every line so that Σ price·k / divisor matches each official close.

    Prices are the official closes (LEGALCLOSEPRICE, roubles). A line without a price on a day
    (an empty cell, or no row: a suspended line) keeps its last earlier official close, as the
    index itself keeps the last price of a suspended line; those cells are listed in
    ``carried``. A line with no price at all before some day of the period was not listed when
    the period's base was set, so it is left out (k = 0) and listed in ``unpriced``.
    Columns are scaled by each line's mean price and the target by the mean capitalization,
    so the unknowns are close to weight fractions and the problem is well scaled. Lines whose
    weight comes out below ``min_weight`` are dropped and the rest refitted, until none is.
    """
    secids, prices, carried, unpriced = _price_table(period, shares)
    if not secids:
        raise ValueError(f"no line is priced on every day from {period.start} to {period.end}")
    target = period.closes * period.divisor  # roubles: capitalization of each day
    column_scale = prices.mean(axis=0)
    target_scale = float(target.mean())
    scaled = prices / column_scale
    active = np.ones(len(secids), dtype=bool)
    weights = np.zeros(len(secids), np.float64)
    while True:
        weights[:] = 0.0
        weights[active] = _nnls(scaled[:, active], target / target_scale)
        negligible = active & (weights < min_weight)
        if not negligible.any():
            break
        active &= ~negligible
        if not active.any():
            raise ValueError(f"no line of {period.start}…{period.end} weighs {min_weight} or more")
    index_shares = weights * target_scale / column_scale
    fitted = prices @ index_shares / period.divisor
    return PeriodFit(
        period=period,
        secids=secids,
        index_shares=index_shares,
        prices=prices,
        fitted=fitted,
        carried=carried,
        unpriced=unpriced,
    )


def issuers(shortnames: Mapping[str, str]) -> dict[str, str]:
    """Issuer code per secid: a preferred line (ticker+"P", short name "…ап"/"…-п") maps to the
    ordinary ticker, so SBER and SBERP share issuer SBER and TRNFP alone is TRNF; others: secid."""
    result: dict[str, str] = {}
    for secid, name in shortnames.items():
        preferred = (
            len(secid) == 5
            and secid.endswith("P")
            and name.strip().lower().endswith(PREFERRED_SUFFIXES)
        )
        result[secid] = secid[:-1] if preferred else secid
    return result


def fitted_base(fit: PeriodFit, shortnames: Mapping[str, str], source: str = "<fit>") -> IndexBase:
    """The constituents (k > 0) of a fit as a base: issue_size_index = k, reference = last close."""
    issuer = issuers({s: shortnames.get(s, "") for s in fit.secids})
    last = fit.last_prices
    constituents = tuple(
        Constituent(
            secid=secid,
            issuer=issuer[secid],
            index_shares=float(k),
            reference_price=float(last[i]),
        )
        for i, (secid, k) in enumerate(zip(fit.secids, fit.index_shares, strict=True))
        if k > 0
    )
    return IndexBase(constituents, source=source)


def shortnames_of(shares: Iterable[ShareDay]) -> dict[str, str]:
    """The latest short name of each line."""
    latest: dict[str, tuple[date, str]] = {}
    for row in shares:
        if row.shortname and (row.secid not in latest or row.trade_date >= latest[row.secid][0]):
            latest[row.secid] = (row.trade_date, row.shortname)
    return {secid: name for secid, (_, name) in latest.items()}


def official_closes_on(shares: Iterable[ShareDay], day: date) -> dict[str, float]:
    """Each line's official close (roubles) on ``day``, or its last earlier one if it had none."""
    latest: dict[str, tuple[date, float]] = {}
    for row in shares:
        if row.official_close is None or row.trade_date > day:
            continue
        if row.secid not in latest or row.trade_date > latest[row.secid][0]:
            latest[row.secid] = (row.trade_date, row.official_close)
    return {secid: price for secid, (_, price) in latest.items()}


@dataclass(frozen=True, slots=True)
class ReviewCheck:
    """Divisor continuity at one review, reproduced with the fitted bases of the two periods:
    the computed new divisor against the official one, and the error the fits alone explain."""

    old: PeriodFit
    new: PeriodFit
    pricing_day: date  # whose official closes price both bases (MOEX: the last day before)
    close: float  # official index close of the pricing day, points
    decision: DivisorDecision  # continuity with the official divisor of the new period
    old_error: float  # points: old fitted base at the pricing day − official close
    new_error: float  # points: new fitted base over the official new divisor − official close
    sd_ppm: float  # one standard deviation of difference_ppm from the fit errors alone

    @property
    def effective(self) -> date:
        """First trading day of the new base."""
        return self.new.period.start

    @property
    def ratio(self) -> float:
        """MC_new / MC_old at the pricing day's official closes."""
        return self.decision.computed / self.decision.old_divisor

    @property
    def difference_ppm(self) -> float:
        """(official / computed − 1) · 10⁶ for the new divisor."""
        difference = self.decision.difference_ppm
        assert difference is not None
        return difference

    @property
    def backward(self) -> float:
        """The old divisor recomputed from the official new one: D_new · MC_old / MC_new."""
        return self.new.period.divisor / self.ratio

    @property
    def backward_ppm(self) -> float:
        """(official old / recomputed old − 1) · 10⁶: the mirror of difference_ppm."""
        return (self.old.period.divisor / self.backward - 1.0) * PPM


def review_check(
    old: PeriodFit, new: PeriodFit, shares: Iterable[ShareDay], pricing_day: date | None = None
) -> ReviewCheck:
    """Recompute the new divisor by continuity at ``pricing_day``'s official closes (default the
    last day of the old period, as MOEX does) with the fitted bases, against the official one.

    The difference in ppm is, to first order, (new_error − old_error) / close: the new base is
    evaluated one day outside its period (a prediction, sd σ_new·√(1 + h_new)) and the old one on
    a day of its own (a residual, sd σ_old·√(1 − h_old)); the two fits share no day, so the
    standard deviations add in quadrature into ``sd_ppm``.
    """
    day = old.period.end if pricing_day is None else pricing_day
    index_days = {d.trade_date: d for d in (*old.period.days, *new.period.days)}
    if day not in index_days:
        raise ValueError(f"{day} is not a trading day of {old.period.start} … {new.period.end}")
    close = index_days[day].close
    prices = official_closes_on(shares, day)
    old_base = fitted_base(old, {}, source=f"fit {old.period.start}")
    new_base = fitted_base(new, {}, source=f"fit {new.period.start}")
    missing = [s for s in old_base.secids if s not in prices]
    if missing:
        raise ValueError(f"no official close on or before {day} for {', '.join(missing)}")
    old_capitalization = math.fsum(prices[c.secid] * c.index_shares for c in old_base.constituents)
    change = BaseChange(
        definition="IMOEX",
        base=new_base,
        effective=effective_moment(new.period.start),
        reason="quarterly review",
        official_divisors={"IMOEX": new.period.divisor},
    )
    outcome = apply_base_change(
        change,
        prices,
        old_capitalization,
        [IndexSpec("IMOEX", "RUB", old.period.divisor)],
        policy=DivisorPolicy.CONTINUITY,
    )
    old_sd = old.value_sd(day, prices)
    new_sd = new.value_sd(day, prices)
    return ReviewCheck(
        old=old,
        new=new,
        pricing_day=day,
        close=close,
        decision=outcome.decisions["IMOEX"],
        old_error=old.value_at(prices) - close,
        new_error=new.value_at(prices) - close,
        sd_ppm=math.hypot(old_sd, new_sd) / close * PPM,
    )


def review_checks(fits: Sequence[PeriodFit], shares: Iterable[ShareDay]) -> list[ReviewCheck]:
    """One continuity check per change of divisor between consecutive fitted periods."""
    rows = tuple(shares)
    return [review_check(old, new, rows) for old, new in pairwise(fits)]
