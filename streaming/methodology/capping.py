"""Weight-limiting coefficients W: each issuer at most ``issuer_cap`` of the index and the
``top_n`` largest issuers together at most ``top_cap`` (IMOEX/RTSI 15 % and 55 %, Blue Chip 20 %),
reached with the least change to the uncapped weights. See docs/capping.md."""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streaming.errors import IndexTickerError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IndexArray = npt.NDArray[np.intp]

ISSUER_CAP = 0.15  # IMOEX/RTSI and MOEXBMI: one issuer, all its lines summed
TOP_CAP = 0.55  # IMOEX/RTSI: the five largest issuers together
TOP_N = 5
BLUE_CHIP_ISSUER_CAP = 0.20  # MOEXBC, no group limit
W_SIGNIFICANT_DIGITS = 7  # MOEX publishes W to 7 significant digits
# Real baskets span 3–4 orders of magnitude; past 15 the smallest issuers vanish in float64
# sums next to the largest, and W of a giant could underflow.
MAX_SPAN = 1e15
# Bisection on the penalty stops at this relative width: the top group then sits within a
# few 1e-15 (relative) under its cap, as close as float64 sums resolve it.
_BISECTION_WIDTH = 1e-15
_MAX_STEPS = 400  # doublings plus bisections; a guard, never reached by a feasible basket


class CappingError(IndexTickerError):
    """Capping input is unusable: names the parameter, its value and why."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        self.reason = reason
        super().__init__(f"{parameter}={value!r}: {reason}")


class InfeasibleLimits(CappingError):
    """No weights can meet the limits for this many issuers."""


class Limit(enum.Enum):
    """What holds an issuer's weight down after capping."""

    NONE = "none"  # W = 1
    ISSUER = "issuer"  # exactly at issuer_cap
    TOP = "top"  # among the top_n issuers whose weights sum to exactly top_cap


@dataclass(frozen=True, eq=False)
class CappingResult:
    """W and weights per line (file order) and per issuer; weights are fractions of 1, not %."""

    issuers: tuple[str, ...]  # distinct issuers in order of first appearance
    line_issuer: IndexArray  # per line: position of its issuer in `issuers`
    w_factors: FloatArray  # per line: W to 7 significant digits, as published
    weights: FloatArray  # per line: weight with `w_factors`
    exact_w_factors: FloatArray  # per line: W unrounded
    exact_weights: FloatArray  # per line: weight with `exact_w_factors`
    uncapped_weights: FloatArray  # per line: weight with W = 1
    issuer_limits: tuple[Limit, ...]  # per issuer
    issuer_cap: float
    top_cap: float | None  # None: no group limit
    top_n: int | None
    iterations: int  # evaluations of the capped profile (1 when the group limit is idle)

    def _per_issuer(self, values: FloatArray) -> FloatArray:
        summed: FloatArray = np.bincount(
            self.line_issuer, weights=values, minlength=len(self.issuers)
        ).astype(np.float64)
        return summed

    @property
    def issuer_weights(self) -> FloatArray:
        """Weight of each issuer (all its lines) with the published W; fractions of 1."""
        return self._per_issuer(self.weights)

    @property
    def issuer_exact_weights(self) -> FloatArray:
        """Weight of each issuer with the unrounded W; fractions of 1."""
        return self._per_issuer(self.exact_weights)

    @property
    def issuer_uncapped_weights(self) -> FloatArray:
        """Weight of each issuer before capping; fractions of 1."""
        return self._per_issuer(self.uncapped_weights)

    @property
    def issuer_w_factors(self) -> FloatArray:
        """The published W of each issuer (shared by all its lines)."""
        first_line = np.unique(self.line_issuer, return_index=True)[1]
        return self.w_factors[first_line]

    @property
    def issuer_cap_binds(self) -> bool:
        return Limit.ISSUER in self.issuer_limits

    @property
    def top_cap_binds(self) -> bool:
        return Limit.TOP in self.issuer_limits


def round_significant(value: float, digits: int = W_SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to nearest at ``digits`` significant decimal digits."""
    return float(f"{value:.{digits}g}")


def cap_weights(
    caps: Sequence[float] | FloatArray,
    issuers: Sequence[str],
    *,
    issuer_cap: float = ISSUER_CAP,
    top_cap: float | None = TOP_CAP,
    top_n: int | None = TOP_N,
) -> CappingResult:
    """W per line from uncapped capitalizations P·Q·FF (roubles) and each line's issuer.

    ``issuer_cap`` and ``top_cap`` are fractions of the index; ``top_cap`` or ``top_n`` None
    disables the group limit. Raises CappingError for unusable input and InfeasibleLimits when
    no weights can meet the limits.
    """
    values = _check_caps(caps, issuers)
    group = _check_limits(issuer_cap, top_cap, top_n)
    names, line_issuer = _issuer_index(issuers)
    issuer_caps = np.bincount(line_issuer, weights=values, minlength=len(names))
    largest, smallest = float(issuer_caps.max()), float(issuer_caps.min())
    if largest > MAX_SPAN * smallest:
        raise CappingError(
            "caps",
            f"{largest:g}/{smallest:g}",
            f"largest/smallest issuer capitalization exceeds {MAX_SPAN:g}",
        )
    _check_feasible(len(names), issuer_cap, group)

    total = float(issuer_caps.sum())
    shares = issuer_caps / total
    order = np.argsort(-shares, kind="stable")
    # A group limit that no weights under the issuer cap can break (top_cap ≥ 1, or
    # top_n · issuer_cap ≤ top_cap) is idle: solving it would only chase float noise.
    idle = group is None or group[0] >= 1 or group[1] * issuer_cap <= group[0]
    active = None if idle else group
    group_size = 0 if active is None else min(active[1], len(names))
    solution = _solve(np.log(shares[order]), issuer_cap, active, group_size)

    w_issuer = np.empty(len(names))
    w_issuer[order] = solution.w_factors
    weight_issuer = np.empty(len(names))
    weight_issuer[order] = solution.weights
    limits: list[Limit] = [Limit.NONE] * len(names)
    for position, issuer in enumerate(order):
        limits[issuer] = solution.limits[position]

    exact_w = w_issuer[line_issuer]
    exact_weights = weight_issuer[line_issuer] * values / issuer_caps[line_issuer]
    published = np.array([round_significant(w) for w in w_issuer])[line_issuer]
    capped_caps = values * published
    return CappingResult(
        issuers=names,
        line_issuer=line_issuer,
        w_factors=published,
        weights=capped_caps / capped_caps.sum(),
        exact_w_factors=exact_w,
        exact_weights=exact_weights,
        uncapped_weights=values / total,
        issuer_limits=tuple(limits),
        issuer_cap=float(issuer_cap),
        top_cap=None if group is None else group[0],
        top_n=None if group is None else group[1],
        iterations=solution.iterations,
    )


def _check_caps(caps: Sequence[float] | FloatArray, issuers: Sequence[str]) -> FloatArray:
    try:
        values = np.asarray(caps, dtype=np.float64)
    except (TypeError, ValueError):
        raise CappingError("caps", caps, "not a sequence of numbers") from None
    if values.ndim != 1 or len(values) == 0:
        raise CappingError("caps", caps, "must be a non-empty one-dimensional sequence")
    if len(values) != len(issuers):
        raise CappingError(
            "issuers", len(issuers), f"must name one issuer per line ({len(values)} lines)"
        )
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if len(bad):
        line = int(bad[0])
        raise CappingError(
            "caps", float(values[line]), f"line {line}: must be a positive finite number"
        )
    if not math.isfinite(float(values.sum())):
        raise CappingError("caps", float(values.max()), "the total overflows float64")
    return values


def _check_fraction(parameter: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CappingError(parameter, value, "must be a number")
    if not (math.isfinite(value) and 0 < value <= 1):
        raise CappingError(parameter, value, "must be a fraction in (0, 1], e.g. 0.15 for 15 %")


def _check_limits(
    issuer_cap: float, top_cap: float | None, top_n: int | None
) -> tuple[float, int] | None:
    _check_fraction("issuer_cap", issuer_cap)
    if top_cap is None or top_n is None:
        return None
    _check_fraction("top_cap", top_cap)
    if isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral) or top_n < 1:
        raise CappingError("top_n", top_n, "must be a whole number of issuers, at least 1")
    return float(top_cap), int(top_n)


def _issuer_index(issuers: Sequence[str]) -> tuple[tuple[str, ...], IndexArray]:
    positions: dict[str, int] = {}
    line_issuer = np.empty(len(issuers), dtype=np.intp)
    for line, issuer in enumerate(issuers):
        if not isinstance(issuer, str) or not issuer:
            raise CappingError("issuers", issuer, f"line {line}: must be a non-empty string")
        line_issuer[line] = positions.setdefault(issuer, len(positions))
    return tuple(positions), line_issuer


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.4g} %"


def _at_least(count: float, fraction: float) -> int:
    """The smallest whole k with k · fraction ≥ count."""
    k = max(1, math.ceil(count / fraction))
    while k > 1 and (k - 1) * fraction >= count:
        k -= 1
    while k * fraction < count:
        k += 1
    return k


def _check_feasible(issuers: int, issuer_cap: float, group: tuple[float, int] | None) -> None:
    # Equal weights meet every limit that any weights can meet: the largest weight is at
    # least the mean 1/m, and the n largest hold at least n/m. So the limits are feasible
    # exactly when equal weights meet them.
    if issuers * issuer_cap < 1:
        raise InfeasibleLimits(
            "issuer_cap",
            issuer_cap,
            f"{issuers} issuer(s) cannot each hold at most {_percent(issuer_cap)} of the index;"
            f" that takes at least {_at_least(1, issuer_cap)} issuers",
        )
    if group is None:
        return
    top_cap, top_n = group
    least = min(top_n, issuers)
    if least > top_cap * issuers:
        raise InfeasibleLimits(
            "top_cap",
            top_cap,
            f"the {top_n} largest of {issuers} issuer(s) hold at least"
            f" {_percent(least / issuers)} of any index, more than {_percent(top_cap)};"
            f" that takes at least {_at_least(top_n, top_cap)} issuers",
        )


@dataclass(frozen=True)
class _Profile:
    """Capped weights of issuers sorted by uncapped weight (largest first) at one penalty."""

    weights: FloatArray
    log_pre: FloatArray  # non-increasing log pre-weights (isotonic fit)
    pooled: BoolArray  # tied with a neighbour across the top_n boundary
    capped: int  # the first `capped` issuers sit at issuer_cap
    scale: float  # weights of the others = scale · exp(log_pre − log_pre[0])


@dataclass(frozen=True)
class _Solution:
    w_factors: FloatArray  # sorted order
    weights: FloatArray  # sorted order
    limits: tuple[Limit, ...]  # sorted order
    iterations: int


def _non_increasing(y: FloatArray) -> tuple[FloatArray, BoolArray]:
    """Least-squares non-increasing fit of y (pool adjacent violators) and the pooled mask."""
    sums: list[float] = []
    counts: list[int] = []
    for value in y.tolist():
        total, count = value, 1
        while sums and sums[-1] / counts[-1] < total / count:
            total += sums.pop()
            count += counts.pop()
        sums.append(total)
        counts.append(count)
    means = [total / count for total, count in zip(sums, counts, strict=True)]
    return np.repeat(means, counts), np.repeat([c > 1 for c in counts], counts)


def _profile(
    log_shares: FloatArray, issuer_cap: float, group_size: int, penalty: float
) -> _Profile:
    # Scaling the top group by exp(−penalty) may push it below the next issuers; the
    # isotonic fit then ties them at one level (in log space), which keeps the order.
    y = log_shares.copy()
    y[:group_size] -= penalty
    log_pre, pooled = _non_increasing(y)
    pre = np.exp(log_pre - log_pre[0])
    tail = np.cumsum(pre[::-1])[::-1]
    capped_counts = np.arange(len(pre))
    scales = (1.0 - capped_counts * issuer_cap) / tail
    fits = np.flatnonzero(scales * pre <= issuer_cap)
    if len(fits) == 0:
        # m · issuer_cap = 1 exactly, lost to float rounding: every issuer at the cap.
        count = len(pre)
        weights = np.full(len(pre), issuer_cap)
        return _Profile(weights, log_pre, pooled, count, math.nan)
    count = int(fits[0])
    weights = scales[count] * pre
    weights[:count] = issuer_cap
    return _Profile(weights, log_pre, pooled, count, float(scales[count]))


def _solve(
    log_shares: FloatArray,
    issuer_cap: float,
    group: tuple[float, int] | None,
    group_size: int,
) -> _Solution:
    profile = _profile(log_shares, issuer_cap, group_size, 0.0)
    steps = 1
    penalty = 0.0
    if group is not None and profile.weights[:group_size].sum() > group[0]:
        top_cap = group[0]

        def over(p: _Profile) -> bool:
            return float(p.weights[:group_size].sum()) > top_cap

        low, high = 0.0, 1.0
        best = _profile(log_shares, issuer_cap, group_size, high)
        steps += 1
        # Once every issuer is tied the top share is n/m, which the feasibility check put
        # at or under top_cap; a larger penalty changes nothing.
        while over(best) and not best.pooled.all():
            low, high = high, 2 * high
            best = _profile(log_shares, issuer_cap, group_size, high)
            steps += 1
            if steps > _MAX_STEPS:
                raise InfeasibleLimits("top_cap", top_cap, "no penalty brings the top group down")
        while high - low > _BISECTION_WIDTH * high and steps < _MAX_STEPS:
            middle = 0.5 * (low + high)
            if not low < middle < high:
                break
            candidate = _profile(log_shares, issuer_cap, group_size, middle)
            steps += 1
            if over(candidate):
                low = middle
            else:
                high, best = middle, candidate
        profile, penalty = best, high
    return _Solution(
        w_factors=_w_factors(profile, log_shares, issuer_cap, group_size, penalty),
        weights=profile.weights,
        limits=_limits(profile, group_size, penalty),
        iterations=steps,
    )


def _w_factors(
    profile: _Profile,
    log_shares: FloatArray,
    issuer_cap: float,
    group_size: int,
    penalty: float,
) -> FloatArray:
    # log(weight/share) − log(scale) per issuer: 0 for a free issuer, −penalty for the top
    # group, in between for issuers tied across the boundary; an issuer at the cap lies
    # lower still. Set exactly where the value is known so that equal W stay bit-equal.
    top = np.arange(len(log_shares)) < group_size
    relative = np.where(
        profile.pooled,
        np.minimum(profile.log_pre - log_shares, 0.0),
        np.where(top, -penalty, 0.0),
    )
    if profile.capped:
        capped = slice(0, profile.capped)
        if math.isnan(profile.scale):
            # Every issuer at the cap: no free issuer to measure against.
            relative[capped] = math.log(issuer_cap) - log_shares[capped]
        else:
            at_cap = (
                math.log(issuer_cap)
                - math.log(profile.scale)
                + profile.log_pre[0]
                - log_shares[capped]
            )
            relative[capped] = np.minimum(at_cap, relative[capped])
    w_factors: FloatArray = np.exp(relative - relative.max())
    return w_factors


def _limits(profile: _Profile, group_size: int, penalty: float) -> tuple[Limit, ...]:
    limits: list[Limit] = []
    for position in range(len(profile.weights)):
        if position < profile.capped:
            limits.append(Limit.ISSUER)
        elif penalty > 0 and (position < group_size or profile.pooled[position]):
            limits.append(Limit.TOP)
        else:
            limits.append(Limit.NONE)
    return tuple(limits)
