"""The price-deviation guard: a trade too far from a line's last accepted price waits for
confirmation before it may move the index.

Rules, per share line, with X = `threshold` and Y = `confirm_tolerance` (fractions):
- no tick held: a price within X of the reference (the line's last accepted price, supplied
  by the caller) is ACCEPTed; one further away is HELD;
- a tick held (the "candidate"): the next price within Y of the candidate counts as one
  confirmation and is held too; after `confirmations` of them everything held is RELEASEd, in
  arrival order, so the line ends on the latest price and every held trade is applied;
  a price that does not confirm but lies within X of the reference DISCARDs everything held
  and is itself accepted; a price that does neither replaces the candidate: the old held ticks
  are discarded and the new price is HELD as a fresh candidate.
A confirmation is tested before a return to the reference. Y must stay below X / (1 + X) so a
return to exactly the reference price can never confirm a candidate. Every tick shows up in
exactly one decision's `applied`, in `held` or in `discarded`; none is lost silently. Work per
tick is O(1) (at most `confirmations` + 1 ticks are ever held per line).

`steady` judges a whole batch at once for the common case: on a line where nothing is held and
every trade lies within X of the one before it, each trade would be ACCEPTed by `check` in turn,
so all of them are; the caller sends the other lines' trades through `check`, in order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from streaming.errors import ConfigError

T = TypeVar("T")

DEFAULT_THRESHOLD = 0.10
DEFAULT_CONFIRMATIONS = 1
GUARD_KEYS = frozenset({"threshold", "confirmations", "confirm_tolerance"})
# Prices are decimal roubles in binary floats: 110 / 100 - 1 is 0.10000000000000009, and a move
# of exactly the threshold must still count as within it.
SLACK = 1e-12


class Verdict(StrEnum):
    """What happened to the tick just checked (and to anything held before it)."""

    ACCEPT = "accept"  # apply it now; nothing was held
    HOLD = "hold"  # kept back, waiting for confirmation
    RELEASE = "release"  # confirmed: apply every held tick and this one, in order
    DISCARD = "discard"  # back near the reference: held ticks dropped, this one applied


@dataclass(frozen=True, slots=True)
class Guarded(Generic[T]):
    """One tick seen by the guard: the price (roubles) and whatever the caller attached."""

    secid: str
    price: float
    item: T | None = None
    deviation: float | None = None  # signed fraction from the reference when checked


@dataclass(frozen=True, slots=True)
class GuardDecision(Generic[T]):
    """The verdict on one tick: what to apply now, what was dropped now, and why."""

    verdict: Verdict
    applied: tuple[Guarded[T], ...] = ()
    discarded: tuple[Guarded[T], ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GuardCounters:
    """Ticks by outcome since the guard was built.

    Every tick checked is either accepted straight away or held; every held tick is later
    released, discarded or still held: checked = accepted + held,
    held = released + discarded(of held ticks) + currently held."""

    accepted: int = 0
    held: int = 0
    released: int = 0
    discarded: int = 0


@dataclass(slots=True)
class _Pending(Generic[T]):
    candidate: float
    ticks: list[Guarded[T]]
    confirmations: int = 0


def _fraction(value: object, key: str, source: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}", source)
    return float(value)


class PriceGuard(Generic[T]):
    """Holds back isolated price jumps per share line until later trades confirm them."""

    def __init__(
        self,
        threshold: float | None = DEFAULT_THRESHOLD,
        confirmations: int = DEFAULT_CONFIRMATIONS,
        confirm_tolerance: float | None = None,
        source: str | None = None,
    ) -> None:
        """threshold X and confirm_tolerance Y are fractions (0.10 = 10 %); Y defaults to X/2.

        A threshold of 0 or None turns the guard off: every tick is accepted."""
        if threshold is not None:
            threshold = _fraction(threshold, "guard.threshold", source)
            # A fraction of 1 or more can never hold a fall, so it is surely a percentage.
            if not 0 <= threshold < 1:
                raise ConfigError(
                    "guard.threshold",
                    f"must be a fraction from 0 to below 1 (0.10 = 10 %), got {threshold}",
                    source,
                )
        self.enabled = bool(threshold)
        self.threshold = threshold or 0.0
        if isinstance(confirmations, bool) or not isinstance(confirmations, int):
            raise ConfigError(
                "guard.confirmations", f"must be a whole number, got {confirmations!r}", source
            )
        if confirmations < 1:
            raise ConfigError(
                "guard.confirmations", f"must be at least 1, got {confirmations}", source
            )
        self.confirmations = confirmations
        if confirm_tolerance is None:
            confirm_tolerance = self.threshold / 2
        else:
            confirm_tolerance = _fraction(confirm_tolerance, "guard.confirm_tolerance", source)
        ceiling = self.threshold / (1 + self.threshold)
        if self.enabled and not 0 < confirm_tolerance < ceiling:
            raise ConfigError(
                "guard.confirm_tolerance",
                f"must be above 0 and below threshold/(1+threshold) = {ceiling:.6g} so that a"
                f" return to the reference price cannot confirm a jump, got {confirm_tolerance}",
                source,
            )
        self.confirm_tolerance = confirm_tolerance
        self._pending: dict[str, _Pending[T]] = {}
        self._accepted = 0
        self._held = 0
        self._released = 0
        self._discarded = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | None = None) -> PriceGuard[T]:
        """Build from a TOML-like [guard] table: threshold, confirmations, confirm_tolerance."""
        if not isinstance(data, Mapping):
            raise ConfigError("guard", f"must be a table, got {type(data).__name__}", source)
        unknown = sorted(set(data) - GUARD_KEYS)
        if unknown:
            raise ConfigError(f"guard.{unknown[0]}", "unknown key", source)
        threshold = data.get("threshold", DEFAULT_THRESHOLD)
        if threshold is not False:
            threshold = _fraction(threshold, "guard.threshold", source)
        return cls(
            threshold=threshold or None,
            confirmations=data.get("confirmations", DEFAULT_CONFIRMATIONS),
            confirm_tolerance=data.get("confirm_tolerance"),
            source=source,
        )

    def check(
        self, secid: str, price: float, reference_price: float | None, item: T | None = None
    ) -> GuardDecision[T]:
        """Judge one trade of a line against its last accepted price (both in roubles)."""
        if not self.enabled or reference_price is None or reference_price <= 0:
            tick: Guarded[T] = Guarded(secid, price, item)
            dropped = self._drop(secid)
            self._accepted += 1
            if dropped:
                return GuardDecision(
                    Verdict.DISCARD, (tick,), dropped, "no reference price to hold against"
                )
            return GuardDecision(Verdict.ACCEPT, (tick,))
        deviation = price / reference_price - 1
        tick = Guarded(secid, price, item, deviation)
        pending = self._pending.get(secid)
        if pending is not None:
            return self._against_candidate(pending, tick, deviation, reference_price)
        if abs(deviation) <= self.threshold + SLACK:
            self._accepted += 1
            return GuardDecision(Verdict.ACCEPT, (tick,))
        return self._hold_new(tick, reference_price, ())

    def _against_candidate(
        self, pending: _Pending[T], tick: Guarded[T], deviation: float, reference_price: float
    ) -> GuardDecision[T]:
        secid = tick.secid
        if abs(tick.price / pending.candidate - 1) <= self.confirm_tolerance + SLACK:
            pending.ticks.append(tick)
            pending.confirmations += 1
            self._held += 1
            if pending.confirmations < self.confirmations:
                return GuardDecision(
                    Verdict.HOLD,
                    reason=f"confirmation {pending.confirmations} of {self.confirmations}"
                    f" for {pending.candidate:g}",
                )
            del self._pending[secid]
            released = tuple(pending.ticks)
            self._released += len(released)
            return GuardDecision(
                Verdict.RELEASE,
                released,
                reason=f"{pending.candidate:g} confirmed by {self.confirmations} trade(s)"
                f" within {self.confirm_tolerance:.2%}",
            )
        dropped = self._drop(secid)
        if abs(deviation) <= self.threshold + SLACK:
            self._accepted += 1
            return GuardDecision(
                Verdict.DISCARD,
                (tick,),
                dropped,
                f"{pending.candidate:g} not confirmed: the next trade {tick.price:g} is within"
                f" {self.threshold:.2%} of the accepted {reference_price:g}",
            )
        return self._hold_new(tick, reference_price, dropped)

    def _hold_new(
        self, tick: Guarded[T], reference_price: float, dropped: tuple[Guarded[T], ...]
    ) -> GuardDecision[T]:
        self._pending[tick.secid] = _Pending(tick.price, [tick])
        self._held += 1
        move = tick.price / reference_price - 1
        reason = (
            f"{tick.price:g} is {move:+.2%} from the accepted {reference_price:g},"
            f" beyond {self.threshold:.2%}: held for {self.confirmations} confirmation(s)"
        )
        if dropped:
            reason += f"; superseding the unconfirmed {dropped[0].price:g}"
        return GuardDecision(Verdict.HOLD, (), dropped, reason)

    def _drop(self, secid: str) -> tuple[Guarded[T], ...]:
        pending = self._pending.pop(secid, None)
        if pending is None:
            return ()
        self._discarded += len(pending.ticks)
        return tuple(pending.ticks)

    def discard_held(self, secid: str | None = None) -> tuple[Guarded[T], ...]:
        """Drop what is held (for one line, or all) and return it, e.g. at the end of a day."""
        if secid is not None:
            return self._drop(secid)
        dropped: list[Guarded[T]] = []
        for line in list(self._pending):
            dropped.extend(self._drop(line))
        return tuple(dropped)

    def steady(
        self,
        lines: npt.NDArray[np.intp],
        prices: npt.NDArray[np.float64],
        last_prices: npt.NDArray[np.float64],
        blocked: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.bool_]:
        """Per trade of a batch (line positions, prices in roubles): True where `check` would
        accept it and every earlier trade of its line in the batch. A line qualifies when it is
        not `blocked` (the caller marks lines with ticks held and lines whose trades do not all
        move the reference), its last accepted price (`last_prices`, per line) is positive and
        each trade is within the threshold of its predecessor. Steady trades count as accepted."""
        if len(lines) == 0:
            return np.zeros(0, dtype=np.bool_)
        bad_line = blocked | ~(last_prices > 0)
        if self.enabled:
            order = np.argsort(lines, kind="stable")
            ordered_lines = lines[order]
            ordered = prices[order]
            before = np.empty_like(ordered)
            before[1:] = ordered[:-1]
            first = np.ones(len(order), dtype=np.bool_)
            first[1:] = ordered_lines[1:] != ordered_lines[:-1]
            before[first] = last_prices[ordered_lines[first]]
            with np.errstate(divide="ignore", invalid="ignore"):
                jump = ~(np.abs(ordered / before - 1) <= self.threshold + SLACK)
            bad_line = bad_line.copy()
            bad_line[ordered_lines[jump]] = True
        mask: npt.NDArray[np.bool_] = ~bad_line[lines]
        self._accepted += int(mask.sum())
        return mask

    def held(self) -> Mapping[str, tuple[Guarded[T], ...]]:
        """The ticks held right now per line, in arrival order (a read-only snapshot)."""
        return MappingProxyType({s: tuple(p.ticks) for s, p in self._pending.items()})

    @property
    def counters(self) -> GuardCounters:
        """Ticks accepted straight away, ever held, released and discarded, since start."""
        return GuardCounters(self._accepted, self._held, self._released, self._discarded)
