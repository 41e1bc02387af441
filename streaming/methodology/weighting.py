"""How a definition turns its base file into index shares: as given (Q·FF·W from the file),
capped (W solved from issuer and top-n limits at the reference prices), or equal weights
(every line the same capitalization at the reference prices, MOEX10-style)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streaming.errors import ConfigError
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.capping import cap_weights

WEIGHTINGS = ("given", "capped", "equal")
EQUAL_LINE_CAPITALIZATION = 1.0  # roubles per line at rebalancing: only ratios matter


def select_lines(base: IndexBase, lines: Sequence[str], source: str) -> IndexBase:
    """The named lines of a base, in the order given; unknown names are an error."""
    by_secid = {c.secid: c for c in base.constituents}
    unknown = [s for s in lines if s not in by_secid]
    if unknown:
        raise ConfigError("lines", f"not in the base {base.source}: {', '.join(unknown)}", source)
    if len(set(lines)) != len(lines):
        raise ConfigError("lines", "a line is named twice", source)
    return IndexBase(tuple(by_secid[s] for s in lines), source=base.source)


def uncapped_shares(line: Constituent) -> float:
    """Q·FF of a line: from the file's Q and FF, else its Q·FF·W divided by W (W = 1 if none)."""
    if line.issue_size is not None and line.free_float is not None:
        return line.issue_size * line.free_float
    return line.index_shares / (line.weight_factor or 1.0)


def _price(line: Constituent, prices: Mapping[str, float]) -> float:
    price = prices.get(line.secid, line.reference_price)
    if price is None:
        raise ConfigError("waprice", f"{line.secid} needs a price to be weighted")
    return price


def weighted_base(
    base: IndexBase,
    weighting: str,
    capping: Mapping[str, float] | None = None,
    prices: Mapping[str, float] | None = None,
) -> IndexBase:
    """The base with index shares set by the weighting, at the given prices (roubles;
    default the reference prices). capping: issuer_cap, top_cap, top_n (fractions, a count)."""
    given = prices or {}
    if weighting == "given":
        return base
    if weighting == "equal":
        return IndexBase(
            tuple(
                Constituent(
                    c.secid,
                    c.issuer,
                    EQUAL_LINE_CAPITALIZATION / _price(c, given),
                    reference_price=c.reference_price,
                )
                for c in base.constituents
            ),
            source=base.source,
        )
    if weighting != "capped":
        raise ConfigError("weighting", f"must be one of {WEIGHTINGS}, got {weighting!r}")
    limits = dict(capping or {})
    top_n = limits.get("top_n")
    result = cap_weights(
        [_price(c, given) * uncapped_shares(c) for c in base.constituents],
        [c.issuer for c in base.constituents],
        issuer_cap=limits.get("issuer_cap", 0.15),
        top_cap=limits.get("top_cap"),
        top_n=None if top_n is None else int(top_n),
    )
    return IndexBase(
        tuple(
            Constituent(
                c.secid,
                c.issuer,
                uncapped_shares(c) * float(w),
                issue_size=c.issue_size,
                free_float=c.free_float,
                weight_factor=float(w),
                reference_price=c.reference_price,
            )
            for c, w in zip(base.constituents, result.w_factors.tolist(), strict=True)
        ),
        source=base.source,
    )
