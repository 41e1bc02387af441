"""Base changes (reviews, shares issued, free float, lines added or removed) and divisor
continuity: ``D_new = D_old · MC_new / MC_old`` with both capitalizations at the same prices, so
the index does not jump; an official divisor published by the exchange may be adopted instead.

Pure: no clock, no I/O. The caller supplies "now", the current prices and capitalization.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from streaming.errors import ConfigError, IndexTickerError
from streaming.methodology.base import IndexBase
from streaming.methodology.schedule import iso_utc

EXCHANGE_UTC_OFFSET = timedelta(hours=3)  # Moscow, no daylight saving
PPM = 1e6


class DivisorPolicy(StrEnum):
    """Which divisor a base change adopts when the exchange published one."""

    OFFICIAL = "official"  # the published divisor; the index may step by the difference
    CONTINUITY = "continuity"  # always the computed one; the index never steps


class BaseChangeError(IndexTickerError):
    """A base change cannot be applied: names the field, the offending value and the reason."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field} {value!r}: {reason}")


class IndexLike(Protocol):
    """What a base change needs of an index: its code, currency ("RUB"/"USD") and divisor."""

    @property
    def code(self) -> str: ...

    @property
    def currency(self) -> str: ...

    @property
    def divisor(self) -> float: ...


def _positive(value: float, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, f"must be a positive finite number, got {value!r}")
    return float(value)


def continuity_divisor(
    old_divisor: float, old_capitalization: float, new_capitalization: float
) -> float:
    """D_new = D_old · MC_new / MC_old; both capitalizations in roubles at the same prices."""
    old = _positive(old_divisor, "old_divisor")
    before = _positive(old_capitalization, "old_capitalization")
    after = _positive(new_capitalization, "new_capitalization")
    return old * after / before


def effective_moment(
    day: date, utc_offset: timedelta = EXCHANGE_UTC_OFFSET, local_time: time = time(0)
) -> datetime:
    """Aware UTC datetime of ``local_time`` (default 00:00) of ``day`` in exchange local time."""
    local = datetime.combine(day, local_time.replace(tzinfo=None), tzinfo=timezone(utc_offset))
    return local.astimezone(UTC)


def parse_policy(value: str | DivisorPolicy, key: str = "divisor_policy") -> DivisorPolicy:
    """The policy named in configuration; ConfigError naming the key otherwise."""
    try:
        return DivisorPolicy(value)
    except ValueError:
        choices = ", ".join(p.value for p in DivisorPolicy)
        raise ConfigError(key, f"must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class BaseChange:
    """A new base for one index definition, in force from ``effective`` (aware, stored in UTC)."""

    definition: str  # the name of the index definition (family) whose base changes, e.g. IMOEX
    base: IndexBase
    effective: datetime
    reason: str = "quarterly review"
    # Index code -> divisor published by the exchange for the new base (usually the evening before).
    official_divisors: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source = self.base.source
        if not self.definition.strip():
            raise ConfigError("definition", "must name an index definition", source)
        if not self.reason.strip():
            raise ConfigError("reason", "must say why the base changes", source)
        if len(self.base) == 0:
            raise ConfigError("base", "the new base has no constituents", source)
        moment = self.effective
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise ConfigError("effective", f"must be an aware datetime, got {moment!r}", source)
        object.__setattr__(self, "effective", moment.astimezone(UTC))
        divisors: dict[str, float] = {}
        for code, divisor in self.official_divisors.items():
            if not isinstance(code, str) or not code.strip():
                raise ConfigError("official_divisors", f"bad index code {code!r}", source)
            divisors[code] = _positive(divisor, f"official_divisors.{code}")
        object.__setattr__(self, "official_divisors", MappingProxyType(divisors))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description: moment in UTC and exchange local time, reason, base, divisors."""
        return {
            "definition": self.definition,
            "effective": iso_utc(self.effective),
            "effective_local": self.effective.astimezone(timezone(EXCHANGE_UTC_OFFSET)).isoformat(),
            "reason": self.reason,
            "base": {
                "source": self.base.source,
                "lines": len(self.base),
                "secids": list(self.base.secids),
            },
            "official_divisors": dict(self.official_divisors),
        }


@dataclass(frozen=True, slots=True)
class DivisorDecision:
    """The divisor one index takes at a base change, and the values around the switch."""

    code: str
    currency: str
    policy: DivisorPolicy
    old_divisor: float
    computed: float  # by continuity, full precision
    official: float | None  # published by the exchange, None when not given
    adopted: float  # official under the "official" policy when given, else computed
    value_before: float  # index points: old base and old divisor at the switch prices
    value_after: float  # index points: new base and adopted divisor at the same prices

    @property
    def difference_ppm(self) -> float | None:
        """(official / computed − 1) · 10⁶, None without an official divisor."""
        if self.official is None:
            return None
        return (self.official / self.computed - 1.0) * PPM

    @property
    def jump(self) -> float:
        """value_after − value_before, index points (zero to rounding under continuity)."""
        return self.value_after - self.value_before

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for logs and the API."""
        return {
            "code": self.code,
            "currency": self.currency,
            "policy": self.policy.value,
            "old_divisor": self.old_divisor,
            "computed_divisor": self.computed,
            "official_divisor": self.official,
            "adopted_divisor": self.adopted,
            "difference_ppm": self.difference_ppm,
            "value_before": self.value_before,
            "value_after": self.value_after,
            "jump": self.jump,
        }


@dataclass(frozen=True, slots=True)
class BaseChangeOutcome:
    """What applying a base change decided: capitalizations, the prices used, one decision per
    index code."""

    change: BaseChange
    old_capitalization: float  # roubles, old base at the switch prices
    new_capitalization: float  # roubles, new base at the same prices
    prices: Mapping[str, float]  # roubles per secid of the new base, as used
    from_reference: tuple[str, ...]  # lines of the new base priced at their reference price
    decisions: Mapping[str, DivisorDecision]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for logs and the API."""
        return {
            "change": self.change.as_dict(),
            "old_capitalization": self.old_capitalization,
            "new_capitalization": self.new_capitalization,
            "from_reference": list(self.from_reference),
            "decisions": {code: d.as_dict() for code, d in self.decisions.items()},
        }


def _index_value(capitalization: float, divisor: float, currency: str, fx: float | None) -> float:
    if currency == "RUB":
        return capitalization / divisor
    assert fx is not None
    return capitalization / (fx * divisor)


def new_base_prices(
    base: IndexBase, prices: Mapping[str, float]
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Roubles per line of ``base``: the current price, else the base's reference price (waprice);
    also the secids that took the reference. BaseChangeError names a line with neither."""
    used: dict[str, float] = {}
    from_reference: list[str] = []
    for constituent in base.constituents:
        secid = constituent.secid
        price = prices.get(secid)
        if price is None:
            price = constituent.reference_price
            if price is None:
                raise BaseChangeError(
                    "secid", secid, "no current price and no reference price (waprice) in the base"
                )
            from_reference.append(secid)
        if isinstance(price, bool) or not (math.isfinite(price) and price > 0):
            raise BaseChangeError("secid", secid, f"price must be positive, got {price!r}")
        used[secid] = float(price)
    return used, tuple(from_reference)


def apply_base_change(
    change: BaseChange,
    prices: Mapping[str, float],
    old_capitalization: float,
    indices: Iterable[IndexLike],
    *,
    fx_rate: float | None = None,
    policy: DivisorPolicy | str = DivisorPolicy.OFFICIAL,
) -> BaseChangeOutcome:
    """Divisors of every index for the new base, at the current prices (roubles) and the old
    base's capitalization at those prices (roubles); ``fx_rate`` (roubles per dollar) is needed
    only for the values of USD indices — the divisor ratio is the same for every currency."""
    chosen = parse_policy(policy, "policy")
    before = _positive(old_capitalization, "old_capitalization")
    used, from_reference = new_base_prices(change.base, prices)
    shares = {c.secid: c.index_shares for c in change.base.constituents}
    after = math.fsum(used[secid] * shares[secid] for secid in used)
    specs = list(indices)
    codes = [spec.code for spec in specs]
    if len(set(codes)) != len(codes):
        raise BaseChangeError("index", ", ".join(codes), "index codes must be unique")
    for code in change.official_divisors:
        if code not in codes:
            raise BaseChangeError("official_divisors", code, "no such index is calculated")
    if any(spec.currency == "USD" for spec in specs):
        fx = _positive(fx_rate, "fx_rate") if fx_rate is not None else None
        if fx is None:
            raise ConfigError("fx_rate", "a USD index needs a positive RUB per USD rate")
    else:
        fx = None
    decisions: dict[str, DivisorDecision] = {}
    for spec in specs:
        if spec.currency not in ("RUB", "USD"):
            raise BaseChangeError("currency", spec.currency, f"{spec.code}: must be RUB or USD")
        old = _positive(spec.divisor, f"{spec.code}.divisor")
        # FX does not move at the switch, so MC/(FX·D) keeps its value with the same ratio.
        computed = old * after / before
        official = change.official_divisors.get(spec.code)
        adopted = (
            official if chosen is DivisorPolicy.OFFICIAL and official is not None else computed
        )
        decisions[spec.code] = DivisorDecision(
            code=spec.code,
            currency=spec.currency,
            policy=chosen,
            old_divisor=old,
            computed=computed,
            official=official,
            adopted=adopted,
            value_before=_index_value(before, old, spec.currency, fx),
            value_after=_index_value(after, adopted, spec.currency, fx),
        )
    return BaseChangeOutcome(
        change=change,
        old_capitalization=before,
        new_capitalization=after,
        prices=MappingProxyType(used),
        from_reference=from_reference,
        decisions=MappingProxyType(decisions),
    )


class BaseSchedule:
    """Pending base changes in effective order; a moment already past means "now"."""

    def __init__(self, changes: Iterable[BaseChange] = ()) -> None:
        self._pending: list[BaseChange] = []
        self._applied: dict[str, BaseChange] = {}
        for change in changes:
            self.add(change)

    def add(self, change: BaseChange) -> None:
        """Schedule a change; ConfigError if its definition already has one at that moment."""
        for pending in self._pending:
            if pending.definition == change.definition and pending.effective == change.effective:
                raise ConfigError(
                    "effective",
                    f"{change.definition} already has a base change at"
                    f" {iso_utc(change.effective)} ({pending.reason})",
                    change.base.source,
                )
        self._pending.append(change)
        # Stable: changes at one moment for different definitions keep the order they came in.
        self._pending.sort(key=lambda c: c.effective)

    @property
    def pending(self) -> tuple[BaseChange, ...]:
        """Every change not yet taken, earliest first."""
        return tuple(self._pending)

    def __len__(self) -> int:
        return len(self._pending)

    def due(self, now: datetime) -> list[BaseChange]:
        """Changes effective at or before ``now`` (aware), earliest first; the schedule is kept."""
        if now.utcoffset() is None:
            raise ConfigError("now", f"must be an aware datetime, got {now!r}")
        return [c for c in self._pending if c.effective <= now]

    def pop_due(self, now: datetime) -> list[BaseChange]:
        """Remove and return the changes due at ``now``; the latest of each definition becomes
        its current one."""
        taken = self.due(now)
        self._pending = self._pending[len(taken) :]
        for change in taken:
            self._applied[change.definition] = change
        return taken

    def remove(self, definition: str, effective: datetime) -> BaseChange | None:
        """Take a pending change out of the schedule; None when there is no such change."""
        for n, change in enumerate(self._pending):
            if change.definition == definition and change.effective == effective:
                return self._pending.pop(n)
        return None

    def next_change(self, definition: str | None = None) -> BaseChange | None:
        """The earliest pending change (of one definition when given), or None."""
        return next(
            (c for c in self._pending if definition is None or c.definition == definition), None
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the change last taken per definition, and every pending one in order."""
        return {
            "current": {name: c.as_dict() for name, c in sorted(self._applied.items())},
            "scheduled": [c.as_dict() for c in self._pending],
        }
