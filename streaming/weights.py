"""The `index-ticker weights` command: weight-limiting coefficients W of a base at its own prices,
printed as CSV."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from typing import TextIO

from streaming.errors import BaseLoadError, IndexTickerError
from streaming.methodology.base import Constituent, IndexBase, load_base_csv
from streaming.methodology.capping import (
    ISSUER_CAP,
    TOP_CAP,
    TOP_N,
    CappingError,
    CappingResult,
    Limit,
    cap_weights,
)

PROG = "index-ticker weights"
COLUMNS = (
    "secid",
    "issuer",
    "uncapped_weight",
    "w_factor",
    "weight",
    "issuer_weight",
    "limit",
)
_OPTIONS = {"issuer_cap": "--issuer-cap", "top_cap": "--top-cap", "top_n": "--top-n"}
_LIMIT_TEXT = {Limit.NONE: "", Limit.ISSUER: "issuer", Limit.TOP: "top"}


def _fraction(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    low_ok = value >= 0 if zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        interval = "[0, 1]" if zero else "(0, 1]"
        raise argparse.ArgumentTypeError(
            f"must be a fraction in {interval} (0.15 for 15 %), got {text!r}"
        )
    return value


def _issuer_cap(text: str) -> float:
    return _fraction(text, zero=False)


def _top_cap(text: str) -> float:
    return _fraction(text, zero=True)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The weights argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Compute the weight-limiting coefficients W of every line of a base at the base's"
            " own prices (waprice): each issuer (all its lines summed) at most --issuer-cap of"
            " the index, the --top-n largest issuers together at most --top-cap. Prints CSV:"
            " weights in percent, unrounded; W to 7 significant digits; limit = issuer, top or"
            " empty for an issuer left at W = 1."
        ),
        epilog=(
            "Uncapped capitalization of a line, roubles: waprice·issue_size_total·ff_factor"
            " when the base gives both, otherwise waprice·issue_size_index/w_factor (w_factor"
            " taken as 1 when absent). The issuer column groups lines; without it every line is"
            " its own issuer."
        ),
    )
    parser.add_argument(
        "--base",
        metavar="FILE",
        required=True,
        help="index base CSV in the MOEX ISS analytics layout, with waprice (roubles)",
    )
    parser.add_argument(
        "--issuer-cap",
        metavar="FRACTION",
        type=_issuer_cap,
        default=ISSUER_CAP,
        help="largest weight of one issuer, a fraction (default %(default)s; Blue Chip: 0.2)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--top-cap",
        metavar="FRACTION",
        type=_top_cap,
        default=TOP_CAP,
        help="largest total weight of the --top-n largest issuers, a fraction"
        " (default %(default)s; 0 disables the group limit)",
    )
    group.add_argument(
        "--no-top-cap",
        action="store_true",
        help="no group limit, only --issuer-cap (e.g. Blue Chip)",
    )
    parser.add_argument(
        "--top-n",
        metavar="N",
        type=_count,
        default=TOP_N,
        help="how many largest issuers --top-cap covers (default %(default)s; 0 disables the"
        " group limit)",
    )
    return parser


def uncapped_capitalization(line: Constituent, path: str) -> float:
    """P·Q·FF of one line, roubles (see the --help epilog for the fallback)."""
    price = line.reference_price
    if price is None:
        raise BaseLoadError(path, None, "waprice", f"line {line.secid}: empty; W needs a price")
    if line.issue_size is not None and line.free_float is not None:
        return price * line.issue_size * line.free_float
    return price * line.index_shares / (line.weight_factor or 1.0)


def weights_of(base: IndexBase, args: argparse.Namespace) -> CappingResult:
    """Cap the base's lines as the parsed options say."""
    caps = [uncapped_capitalization(line, base.source) for line in base.constituents]
    disabled = args.no_top_cap or args.top_cap == 0 or args.top_n == 0
    return cap_weights(
        caps,
        [line.issuer for line in base.constituents],
        issuer_cap=args.issuer_cap,
        top_cap=None if disabled else args.top_cap,
        top_n=None if disabled else args.top_n,
    )


def write_csv(base: IndexBase, result: CappingResult, out: TextIO) -> None:
    """One CSV row per line, in base order; weights in percent."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    issuer_weights = result.issuer_weights
    for line, constituent in enumerate(base.constituents):
        issuer = int(result.line_issuer[line])
        writer.writerow(
            [
                constituent.secid,
                constituent.issuer,
                repr(100 * float(result.uncapped_weights[line])),
                f"{float(result.w_factors[line]):.7g}",
                repr(100 * float(result.weights[line])),
                repr(100 * float(issuer_weights[issuer])),
                _LIMIT_TEXT[result.issuer_limits[issuer]],
            ]
        )


def _message(error: IndexTickerError) -> str:
    if isinstance(error, CappingError) and error.parameter in _OPTIONS:
        return f"{_OPTIONS[error.parameter]} {error.value}: {error.reason}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `index-ticker weights`; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        base = load_base_csv(args.base)
        result = weights_of(base, args)
    except IndexTickerError as error:
        print(f"{PROG}: error: {_message(error)}", file=sys.stderr)
        return 2
    write_csv(base, result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
