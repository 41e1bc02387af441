"""Command line: fit the index base of a divisor period from MOEX end-of-day history and write
the base CSV and the index definition TOML (or, with --check, report the fit of every period)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TextIO

from streaming.arguments import iso_date, positive_number
from streaming.errors import IndexTickerError
from streaming.methodology.base import format_base_csv
from streaming.methodology.fit import (
    DivisorPeriod,
    IndexDay,
    PeriodFit,
    ReviewCheck,
    ShareDay,
    fit_period,
    fitted_base,
    load_index_history,
    load_share_history,
    review_check,
    review_checks,
    shortnames_of,
    split_periods,
)

DATA_DIR = Path("..") / "shared" / "data" / "moex"
DEFAULT_TQBR = DATA_DIR / "tqbr_daily_2022-10_2023-06.csv"
DEFAULT_IMOEX = DATA_DIR / "imoex_daily_2022-10_2023-06.csv"
TQBR_ENDPOINT = "/iss/history/engines/stock/markets/shares/boards/TQBR/securities"
IMOEX_ENDPOINT = "/iss/history/engines/stock/markets/index/boards/SNDX/securities/IMOEX"
# D_IMOEX / D_RTSI of every published pair of divisors since 2016 (methodology §1).
RTSI_DIVISOR_RATIO = 31.50217672573
DEFAULT_FX_RATE = 80.0  # roubles per dollar: illustrative only, see the TOML comment
CADENCE_SECONDS = 15
DIVISOR_DECIMALS = 4  # MOEX publishes divisors to 4 decimals


def build_parser() -> argparse.ArgumentParser:
    """The fit-base argument parser."""
    parser = argparse.ArgumentParser(
        prog="index-ticker fit-base",
        description=(
            "Fit Q·FF·W of every share line for one period of constant IMOEX divisor from MOEX"
            " end-of-day history (official closes of the shares and of the index), then write"
            " the base CSV and the index definition TOML."
        ),
    )
    parser.add_argument(
        "--tqbr",
        metavar="FILE",
        type=Path,
        default=DEFAULT_TQBR,
        help=f"TQBR daily share history CSV (ISS {TQBR_ENDPOINT}); default: %(default)s",
    )
    parser.add_argument(
        "--imoex",
        metavar="FILE",
        type=Path,
        default=DEFAULT_IMOEX,
        help=f"IMOEX daily history CSV with CLOSE and DIVISOR (ISS {IMOEX_ENDPOINT});"
        " default: %(default)s",
    )
    parser.add_argument(
        "--period-start",
        metavar="DATE",
        type=iso_date,
        help="first trading day (YYYY-MM-DD) of the divisor period to fit; default: the last"
        " period in the data",
    )
    parser.add_argument(
        "--out-base",
        metavar="PATH",
        type=Path,
        default=Path("imoex_base.csv"),
        help="where to write the fitted base CSV; default: %(default)s",
    )
    parser.add_argument(
        "--out-definition",
        metavar="PATH",
        type=Path,
        default=Path("imoex.toml"),
        help="where to write the index definition TOML; default: %(default)s",
    )
    parser.add_argument(
        "--fx",
        metavar="RATE",
        type=positive_number,
        default=DEFAULT_FX_RATE,
        help="USD/RUB rate (roubles per dollar) written as fx_rate for RTSI; the data has no FX"
        " series, so the default %(default)s is illustrative",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only print the fit statistics of every period (no files written)",
    )
    return parser


def check_table(fits: Sequence[PeriodFit]) -> str:
    """A text table of per-period fit statistics (index points)."""
    lines = [
        f"{'period':<23}  {'days':>4}  {'lines':>5}  {'RMS pts':>7}  {'max pts':>7}  to the cent"
    ]
    for fit in fits:
        days = len(fit.period.days)
        span = f"{fit.period.start} … {fit.period.end}"
        lines.append(
            f"{span:<23}  {days:>4}  {len(fit.constituents):>5}  {fit.rms:>7.4f}"
            f"  {fit.max_abs:>7.4f}  {fit.reproduced:>4} of {days}"
        )
    return "\n".join(lines) + "\n"


def review_table(checks: Sequence[ReviewCheck], shares: Sequence[ShareDay] = ()) -> str:
    """A text table of the divisor continuity at each review (divisors; differences in ppm).

    With ``shares`` it adds the difference the same computation gives at the closes of the
    effective day itself, which shows which day's closes the official divisor was set at.
    """
    header = (
        f"{'review':<10}  {'priced on':<10}  {'MC new/old':>10}  {'computed D_new':>17}"
        f"  {'official D_new':>17}  {'ppm':>7}  {'back ppm':>8}  {'1σ ppm':>6}"
    )
    if shares:
        header += f"  {'ppm if priced on review day':>27}"
    lines = [header]
    for check in checks:
        decision = check.decision
        official = check.new.period.divisor
        line = (
            f"{check.effective!s:<10}  {check.pricing_day!s:<10}  {check.ratio:>10.7f}"
            f"  {decision.computed:>17.4f}  {official:>17.4f}  {check.difference_ppm:>+7.1f}"
            f"  {check.backward_ppm:>+8.1f}  {check.sd_ppm:>6.0f}"
        )
        if shares:
            moved = review_check(check.old, check.new, shares, check.effective)
            text = f"{moved.difference_ppm:+.1f} (1σ {moved.sd_ppm:.0f})"
            line += f"  {text:>27}"
        lines.append(line)
    lines += [
        "ppm = (official / computed − 1)·10⁶ of the new divisor; back ppm: the same for the",
        "old divisor recomputed from the official new one; 1σ: what the fit errors explain.",
    ]
    return "\n".join(lines) + "\n"


def _choose(periods: Sequence[DivisorPeriod], start: date | None) -> DivisorPeriod:
    if start is None:
        return periods[-1]
    for period in periods:
        if period.start == start:
            return period
    starts = ", ".join(str(p.start) for p in periods)
    raise IndexTickerError(f"--period-start {start} is not the start of a period (one of {starts})")


def _fit_summary(fit: PeriodFit) -> str:
    days = len(fit.period.days)
    return (
        f"RMS {fit.rms:.4f}, max {fit.max_abs:.4f} index points;"
        f" {fit.reproduced} of {days} closes reproduced to the cent"
    )


def base_comments(fit: PeriodFit, tqbr: Path, imoex: Path) -> list[str]:
    """Provenance lines for the base CSV header."""
    period = fit.period
    return [
        "IMOEX/RTSI base fitted from public MOEX end-of-day data (ISS history):",
        f"  shares {tqbr.name} ({TQBR_ENDPOINT}),",
        f"  index  {imoex.name} ({IMOEX_ENDPOINT}).",
        f"Period {period.start} … {period.end} ({len(period.days)} trading days),"
        f" IMOEX divisor {period.divisor:.4f}.",
        "Method: non-negative least squares of CLOSE·DIVISOR = Σ LEGALCLOSEPRICE·k, one equation",
        "  per day; lines under 0.01% weight dropped and the rest refitted.",
        "issue_size_index = fitted k = Q·FF·W (shares); waprice = the line's last official close",
        f"  (LEGALCLOSEPRICE) of the period, {period.end}, roubles: the reference price.",
        "issuer = secid, except that a preferred line (ticker+P, short name '…ап'/'…-п')",
        "  takes the ordinary ticker.",
        f"Fit: {_fit_summary(fit)}.",
    ]


def format_definition(
    fit: PeriodFit, base_path: str, fx_rate: float, tqbr: Path, imoex: Path
) -> str:
    """The index definition TOML for a fitted period: IMOEX (RUB) and RTSI (USD) on one base."""
    period = fit.period
    imoex_divisor = round(period.divisor, DIVISOR_DECIMALS)
    rtsi_divisor = round(period.divisor / RTSI_DIVISOR_RATIO, DIVISOR_DECIMALS)
    return f"""\
# IMOEX and RTSI over the base fitted from public MOEX end-of-day data (ISS history:
# {tqbr.name}, {imoex.name}), period {period.start} … {period.end}.
# Fit: {_fit_summary(fit)}.
name = "IMOEX"
base = "{base_path}"
effective_date = {period.start.isoformat()}
# Illustrative USD/RUB rate (roubles per dollar) for the demo: the data has no FX series.
# Replace it with the reference rate in force (Bank of Russia official rate since 2024-06-13).
fx_rate = {fx_rate!r}
cadence_seconds = {CADENCE_SECONDS}

# Closing auction: publications pause during it; the official close is published at its end.
auction_policy = "pause"

# A trade more than 20 % from a line's last accepted price (the exchange's own single-stock
# circuit breaker) waits for one confirming trade before it may move the index.
[guard]
threshold = 0.2
confirmations = 1

# Main session, Moscow time (UTC+3, no daylight saving): opening auction 09:50-10:00, continuous
# trading 10:00-18:40, closing auction 18:40-18:50 (its end is the official close); morning and
# evening sessions move only extended-profile indices. Trading days: the shipped calendar.
[session]
utc_offset_hours = 3
opening_auction = ["09:50", "10:00"]
continuous_start = "10:00"
continuous_end = "18:40"
auction_start = "18:40"
auction_end = "18:50"
extended = [["07:00", "09:50"], ["19:05", "23:50"]]

# The official divisor in force from {period.start} (DIVISOR of the index history).
[[index]]
code = "IMOEX"
currency = "RUB"
divisor = {imoex_divisor!r}

# RTSI = MC / (fx_rate · D_RTSI); D_RTSI = D_IMOEX / {RTSI_DIVISOR_RATIO}, the ratio of every
# published pair of IMOEX/RTSI divisors since 2016.
[[index]]
code = "RTSI"
currency = "USD"
divisor = {rtsi_divisor!r}
"""


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def _load(
    args: argparse.Namespace,
) -> tuple[tuple[ShareDay, ...], tuple[IndexDay, ...]]:
    return load_share_history(args.tqbr), load_index_history(args.imoex)


def run(args: argparse.Namespace, out: TextIO) -> None:
    """Fit and write files (or print the check table) as the parsed arguments say."""
    shares, index_days = _load(args)
    periods = split_periods(index_days)
    if args.check:
        fits = [fit_period(p, shares) for p in periods]
        out.write(check_table(fits))
        if len(fits) > 1:
            out.write("\n")
            out.write(review_table(review_checks(fits, shares), shares))
        return
    fit = fit_period(_choose(periods, args.period_start), shares)
    base = fitted_base(fit, shortnames_of(shares), source=str(args.out_base))
    args.out_base.parent.mkdir(parents=True, exist_ok=True)
    args.out_base.write_text(
        format_base_csv(base, base_comments(fit, args.tqbr, args.imoex)), encoding="utf-8"
    )
    definition = args.out_definition
    definition.parent.mkdir(parents=True, exist_ok=True)
    definition.write_text(
        format_definition(
            fit, _relative(args.out_base, definition.parent), args.fx, args.tqbr, args.imoex
        ),
        encoding="utf-8",
    )
    out.write(check_table([fit]))
    out.write(f"wrote {args.out_base} ({len(base)} lines) and {definition}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `index-ticker fit-base`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        run(args, sys.stdout)
    except (IndexTickerError, ValueError, OSError) as error:
        print(f"fit-base: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
