"""FX for a USD index: a step function of time in roubles per US dollar, one source per step.

Two rules make the steps: the Bank of Russia (CBR) official rate, switched in at the later of
17:00 Moscow time and its publication (RTSI since 2024-06-13), and the exchange's live USD/RUB
tick (before). Moments are aware UTC datetimes; calendar days use a fixed UTC offset (Moscow)."""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import Enum
from typing import Any, ClassVar

from streaming.errors import ConfigError, TickRejected
from streaming.methodology.schedule import iso_utc, parse_clock
from streaming.ticks import parse_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SOURCE_LENGTH = 64
# Sources end up in every RTSI message and in Redis keys' neighbours: keep them plain tokens.
_SOURCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/+-]*")
# A published_at a little ahead of the receiving clock is clock skew, not a forecast.
MAX_CLOCK_SKEW = timedelta(seconds=60)
FX_RULES = ("cbr", "live")


class FxRejected(TickRejected):
    """An FX rate or FX update failed validation: names the field and the reason."""


def _rate(value: object, field: str) -> float:
    # bool is an int subclass; a JSON true is never a rate.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FxRejected(field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise FxRejected(field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise FxRejected(field, f"must be a positive finite number of roubles, got {value!r}")
    return number


def _utc(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise FxRejected(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise FxRejected(field, "must be timezone-aware")
    return value.astimezone(UTC)


def _source(value: object, field: str = "source") -> str:
    if not isinstance(value, str):
        raise FxRejected(field, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_SOURCE_LENGTH:
        raise FxRejected(field, f"longer than {MAX_SOURCE_LENGTH} characters")
    if not _SOURCE_PATTERN.fullmatch(value):
        raise FxRejected(field, f"must be a plain token like 'cbr:2026-11-21', got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class FxStep:
    """One FX level: rate in roubles per US dollar, in force from effective_from (UTC) on."""

    rate: float
    effective_from: datetime
    source: str  # "cbr:2026-11-21", "exchange:USD000UTSTOM", "config", "api", ...
    published_at: datetime | None = None  # when the rate became known, UTC

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", _rate(self.rate, "rate"))
        object.__setattr__(self, "effective_from", _utc(self.effective_from, "effective_from"))
        if self.published_at is not None:
            object.__setattr__(self, "published_at", _utc(self.published_at, "published_at"))
        _source(self.source)

    @property
    def kind(self) -> str:
        """The source kind, the part before ':' ("cbr", "exchange", "config", "api")."""
        return self.source.partition(":")[0]

    def as_dict(self) -> dict[str, Any]:
        """JSON form; times ISO 8601 UTC, millisecond precision."""
        return {
            "rate": self.rate,
            "effective_from": iso_utc(self.effective_from),
            "source": self.source,
            "published_at": None if self.published_at is None else iso_utc(self.published_at),
        }

    def trace(self) -> dict[str, Any]:
        """The fields a USD index publication carries so its value is traceable to this rate."""
        return {
            "fx_rate": self.rate,
            "fx_source": self.source,
            "fx_effective": iso_utc(self.effective_from),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FxStep:
        """Inverse of as_dict; raises FxRejected naming the bad field."""
        for key in ("rate", "effective_from", "source"):
            if key not in data:
                raise FxRejected(key, "missing")
        published = data.get("published_at")
        return cls(
            rate=_rate(data["rate"], "rate"),
            effective_from=_parse_moment(data["effective_from"], "effective_from"),
            source=_source(data["source"]),
            published_at=None if published is None else _parse_moment(published, "published_at"),
        )


def constant_step(rate: float, source: str = "config") -> FxStep:
    """A rate fixed by configuration, in force since 1970 (the demo's illustrative rate)."""
    return FxStep(rate=rate, effective_from=EPOCH, source=source)


def _parse_moment(value: object, field: str) -> datetime:
    try:
        return parse_time(value, field)
    except TickRejected as error:
        raise FxRejected(error.field, error.reason) from None


def _offset(hours: timedelta, key: str) -> timezone:
    if abs(hours) > timedelta(hours=14):
        raise ConfigError(key, f"must be within ±14 hours, got {hours}")
    return timezone(hours)


@dataclass(frozen=True, slots=True)
class CbrRule:
    """Bank of Russia official rate: in force from the later of switch_time (local) on the
    publication day and the publication itself."""

    switch_time: time = time(17, 0)
    utc_offset: timedelta = timedelta(hours=3)  # Moscow, no daylight saving
    holidays: frozenset[date] = frozenset()  # non-business weekdays, for publication_day
    max_lead_days: int = 10  # a rate dated further ahead of its publication is a typo
    name: ClassVar[str] = "cbr"

    def __post_init__(self) -> None:
        _offset(self.utc_offset, "fx.utc_offset_hours")
        lead = self.max_lead_days
        if isinstance(lead, bool) or not isinstance(lead, int) or not 1 <= lead <= 366:
            raise ConfigError("fx.max_lead_days", f"must be 1..366, got {self.max_lead_days!r}")

    def publication_day(self, rate_date: date) -> date:
        """The business day before rate_date (Mon-Fri, minus holidays): the assumed publication."""
        day = rate_date - timedelta(days=1)
        while day.weekday() >= 5 or day in self.holidays:
            day -= timedelta(days=1)
        return day

    def switch_moment(self, day: date) -> datetime:
        """switch_time in local time on that local day, as UTC."""
        local = datetime.combine(day, self.switch_time, tzinfo=timezone(self.utc_offset))
        return local.astimezone(UTC)

    def step_for_publication(
        self, rate: float, rate_date: date, published_at: datetime | None = None
    ) -> FxStep:
        """The step for the CBR rate dated rate_date (RUB per USD) published at published_at."""
        source = f"cbr:{rate_date.isoformat()}"
        if published_at is None:
            # No publication moment (an archive backfill): the normal calendar decides.
            effective = self.switch_moment(self.publication_day(rate_date))
            return FxStep(rate=rate, effective_from=effective, source=source)
        published = _utc(published_at, "published_at")
        day = published.astimezone(timezone(self.utc_offset)).date()
        if rate_date <= day:
            # Catch-up: the rate's own day has begun, it is the latest one; use it at once.
            effective = published
        else:
            lead = (rate_date - day).days
            if lead > self.max_lead_days:
                raise FxRejected(
                    "rate_date",
                    f"{rate_date} is {lead} days after its publication on {day}, "
                    f"more than {self.max_lead_days}",
                )
            effective = max(self.switch_moment(day), published)
        return FxStep(rate=rate, effective_from=effective, source=source, published_at=published)


@dataclass(frozen=True, slots=True)
class LiveRule:
    """The exchange's live USD/RUB rate: every tick is a step at its own time."""

    instrument: str = "USD000UTSTOM"
    ignore_invalid: bool = True  # drop a non-positive or non-finite tick instead of raising
    name: ClassVar[str] = "live"

    def __post_init__(self) -> None:
        try:
            _source(self.source)
        except FxRejected as error:
            raise ConfigError("fx.instrument", error.reason) from None

    @property
    def source(self) -> str:
        return f"exchange:{self.instrument}"

    def step_for_tick(self, rate: float, moment: datetime) -> FxStep | None:
        """The step for one USD/RUB trade (roubles per dollar at moment, UTC); None if ignored."""
        if self.ignore_invalid and (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not (math.isfinite(rate) and rate > 0)
        ):
            return None
        return FxStep(rate=rate, effective_from=moment, source=self.source, published_at=moment)


FxRule = CbrRule | LiveRule


@dataclass(frozen=True, slots=True)
class FxLimits:
    """Maximum age of the step in force before it is stale, per source kind; None: never."""

    cbr: timedelta | None = timedelta(hours=96)  # Thursday 17:00 to Monday 17:00 still fresh
    exchange: timedelta | None = timedelta(minutes=5)
    other: timedelta | None = None  # "config" and "api" rates are explicit choices

    def max_age_for(self, step: FxStep) -> timedelta | None:
        """The limit that applies to this step's source kind."""
        if step.kind == "cbr":
            return self.cbr
        if step.kind == "exchange":
            return self.exchange
        return self.other


class FxState(Enum):
    OK = "ok"
    STALE = "stale"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class FxStatus:
    """The FX in force at one moment, its age and whether it may be trusted."""

    moment: datetime
    state: FxState
    step: FxStep | None
    age: timedelta | None
    max_age: timedelta | None
    reason: str | None
    next_step: FxStep | None = None

    @property
    def rate(self) -> float | None:
        return None if self.step is None else self.step.rate

    @property
    def stale(self) -> bool:
        return self.state is FxState.STALE

    @property
    def missing(self) -> bool:
        return self.state is FxState.MISSING

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API: rate, source, effective_from, age in seconds, state, reason."""
        step = self.step
        return {
            "time": iso_utc(self.moment),
            "state": self.state.value,
            "stale": self.stale,
            "missing": self.missing,
            "reason": self.reason,
            "rate": self.rate,
            "source": None if step is None else step.source,
            "effective_from": None if step is None else iso_utc(step.effective_from),
            "published_at": (
                None if step is None or step.published_at is None else iso_utc(step.published_at)
            ),
            "age_seconds": None if self.age is None else self.age.total_seconds(),
            "max_age_seconds": None if self.max_age is None else self.max_age.total_seconds(),
            "next": None if self.next_step is None else self.next_step.as_dict(),
        }


class AddOutcome(Enum):
    ADDED = "added"
    UNCHANGED = "unchanged"  # the same step, or the same CBR publication, seen before
    REPLACED = "replaced"  # overwrote a step at the same moment, or removed superseded ones
    SUPERSEDED = "superseded"  # a CBR rate dated earlier than one already in force: refused
    TOO_OLD = "too_old"  # before the retained history: refused
    FULL = "full"  # max_future steps are already waiting: refused


@dataclass(slots=True)
class FxSchedule:
    """FX as a step function: the step in force at t is the latest with effective_from ≤ t.

    Memory is bounded: `history` steps before the one in force at the clock (see advance), the
    step in force and at most `max_future` steps after it. Among "cbr:YYYY-MM-DD" steps a rate
    dated earlier never follows one dated later, and one publication is kept once."""

    history: int = 32
    max_future: int = 8
    _steps: list[FxStep] = field(default_factory=list, init=False, repr=False)
    _keys: list[datetime] = field(default_factory=list, init=False, repr=False)
    _clock: datetime | None = field(default=None, init=False)
    _horizon: datetime | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        for key, value in (("fx.history", self.history), ("fx.max_future", self.max_future)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
                raise ConfigError(key, f"must be a whole number 0..10000, got {value!r}")

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def steps(self) -> tuple[FxStep, ...]:
        """Retained steps, oldest first."""
        return tuple(self._steps)

    @property
    def horizon(self) -> datetime | None:
        """Steps before this moment were dropped; a step added before it is refused."""
        return self._horizon

    @property
    def clock(self) -> datetime | None:
        """The latest moment given to advance(), UTC."""
        return self._clock

    def rate_at(self, moment: datetime) -> FxStep | None:
        """The step in force at moment (effective_from inclusive), or None before the first."""
        position = bisect_right(self._keys, _utc(moment, "moment")) - 1
        return self._steps[position] if position >= 0 else None

    def next_change_after(self, moment: datetime) -> FxStep | None:
        """The first step with effective_from strictly after moment, if one is known."""
        position = bisect_right(self._keys, _utc(moment, "moment"))
        return self._steps[position] if position < len(self._steps) else None

    def advance(self, now: datetime) -> None:
        """Tell the schedule the time (UTC) and drop history it no longer needs; never goes back."""
        now = _utc(now, "now")
        if self._clock is None or now > self._clock:
            self._clock = now
        self._trim()

    def add(self, step: FxStep, now: datetime | None = None) -> AddOutcome:
        """Insert a step in effective_from order (late arrivals included) and say what happened.

        now: the receiving time, UTC; advances the clock first. Without any clock every step
        counts as history of the newest one; steps after the clock count as scheduled ones."""
        if now is not None:
            self.advance(now)
        key = step.effective_from
        if self._horizon is not None and key < self._horizon:
            return AddOutcome.TOO_OLD
        position = bisect_left(self._keys, key)
        if position < len(self._keys) and self._steps[position] == step:
            return AddOutcome.UNCHANGED
        removals: list[int] = []
        rate_date = _cbr_date(step)
        if rate_date is not None:
            for index, known in enumerate(self._steps):
                known_date = _cbr_date(known)
                if known_date is None:
                    continue
                if known.source == step.source and known.rate == step.rate:
                    # One publication delivered again (a re-poll): its first moment stands.
                    if known.effective_from <= key:
                        return AddOutcome.UNCHANGED
                    removals.append(index)
                elif known.effective_from <= key and known_date > rate_date:
                    return AddOutcome.SUPERSEDED
                elif known.effective_from >= key and known_date < rate_date:
                    removals.append(index)
        if self._clock is not None and key > self._clock:
            waiting = self._future() - sum(1 for i in removals if self._keys[i] > self._clock)
            replacing = any(self._keys[i] == key for i in removals) or (
                position < len(self._keys) and self._keys[position] == key
            )
            if not replacing and waiting >= self.max_future:
                return AddOutcome.FULL
        for index in reversed(removals):
            del self._steps[index], self._keys[index]
        replaced = self._insert(step) or bool(removals)
        self._trim()
        if self._horizon is not None and key < self._horizon:
            return AddOutcome.TOO_OLD
        return AddOutcome.REPLACED if replaced else AddOutcome.ADDED

    def status(
        self, moment: datetime, limits: FxLimits | None = None, *, max_age: timedelta | None = None
    ) -> FxStatus:
        """The FX in force at moment, with its age and staleness under the limits."""
        moment = _utc(moment, "moment")
        step = self.rate_at(moment)
        upcoming = self.next_change_after(moment)
        if step is None:
            if not self._steps:
                reason = "no FX rate received"
            elif self._horizon is not None and moment < self._horizon:
                reason = f"{iso_utc(moment)} is before the retained FX history"
            else:
                reason = f"no FX rate in force before {iso_utc(self._steps[0].effective_from)}"
            return FxStatus(moment, FxState.MISSING, None, None, None, reason, upcoming)
        age = moment - step.effective_from
        limit = max_age if max_age is not None else (limits or FxLimits()).max_age_for(step)
        if limit is not None and age > limit:
            reason = (
                f"{step.source} in force since {iso_utc(step.effective_from)}, "
                f"{_hours(age)} old, more than {_hours(limit)}"
            )
            return FxStatus(moment, FxState.STALE, step, age, limit, reason, upcoming)
        return FxStatus(moment, FxState.OK, step, age, limit, None, upcoming)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the API and the saved state."""
        return {
            "steps": [step.as_dict() for step in self._steps],
            "clock": None if self._clock is None else iso_utc(self._clock),
            "horizon": None if self._horizon is None else iso_utc(self._horizon),
            "history": self.history,
            "max_future": self.max_future,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FxSchedule:
        """Inverse of as_dict (times at millisecond precision)."""
        schedule = cls(history=data.get("history", 32), max_future=data.get("max_future", 8))
        raw_steps = data.get("steps", [])
        if not isinstance(raw_steps, list):
            raise FxRejected("steps", "must be a list")
        for raw in raw_steps:
            step = FxStep.from_dict(raw)
            schedule._insert(step)
        if data.get("horizon") is not None:
            schedule._horizon = _parse_moment(data["horizon"], "horizon")
        if data.get("clock") is not None:
            schedule.advance(_parse_moment(data["clock"], "clock"))
        return schedule

    def _insert(self, step: FxStep) -> bool:
        """Put the step in order; True when it overwrote one at the same moment."""
        position = bisect_left(self._keys, step.effective_from)
        if position < len(self._keys) and self._keys[position] == step.effective_from:
            self._steps[position] = step
            return True
        self._keys.insert(position, step.effective_from)
        self._steps.insert(position, step)
        return False

    def _in_force(self) -> int:
        # Without a clock the newest step stands for "now": everything before it is history.
        if self._clock is None:
            return len(self._keys) - 1
        return bisect_right(self._keys, self._clock) - 1

    def _future(self) -> int:
        return len(self._keys) - 1 - self._in_force()

    def _trim(self) -> None:
        excess = self._in_force() - self.history
        if excess > 0:
            del self._steps[:excess], self._keys[:excess]
            self._horizon = self._keys[0]


def _cbr_date(step: FxStep) -> date | None:
    """The rate date of a "cbr:YYYY-MM-DD" step; None for any other source."""
    if not step.source.startswith("cbr:"):
        return None
    try:
        return date.fromisoformat(step.source[4:])
    except ValueError:
        return None


def _hours(span: timedelta) -> str:
    seconds = span.total_seconds()
    if abs(seconds) < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def parse_fx_update(
    raw: object, *, now: datetime, rule: CbrRule | None = None, default_source: str = "api"
) -> FxStep:
    """Validate one FX update {"rate", "rate_date"?, "published_at"?, "time"?, "source"?}.

    rate_date: a CBR rate, effective by the CBR rule (published_at defaults to now, UTC).
    time: effective at exactly that moment. Neither: effective at published_at or now."""
    if not isinstance(raw, Mapping):
        raise FxRejected("fx", f"must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(str(key) for key in raw if key not in _UPDATE_FIELDS)
    if unknown:
        raise FxRejected(unknown[0], f"unknown field; expected one of {sorted(_UPDATE_FIELDS)}")
    if raw.get("rate") is None:
        raise FxRejected("rate", "missing")
    rate = _rate(raw["rate"], "rate")
    now = _utc(now, "now")
    published = _optional_moment(raw, "published_at")
    if published is not None and published > now + MAX_CLOCK_SKEW:
        raise FxRejected("published_at", f"{iso_utc(published)} is in the future")
    effective = _optional_moment(raw, "time")
    rate_date = _optional_date(raw, "rate_date")
    source = None if raw.get("source") is None else _source(raw["source"])
    if rate_date is not None:
        if effective is not None:
            raise FxRejected("time", "give rate_date (the CBR rule decides) or time, not both")
        step = (rule or CbrRule()).step_for_publication(rate, rate_date, published or now)
        if source is not None and source != step.source:
            # The rate date in the source is what orders CBR steps; it must not disagree.
            raise FxRejected("source", f"with rate_date the source is {step.source!r}")
        return step
    return FxStep(
        rate=rate,
        effective_from=effective or published or now,
        source=source or _source(default_source),
        published_at=published,
    )


_UPDATE_FIELDS = frozenset({"rate", "rate_date", "published_at", "time", "source"})


def _optional_moment(raw: Mapping[Any, Any], field: str) -> datetime | None:
    value = raw.get(field)
    return None if value is None else _parse_moment(value, field)


def _optional_date(raw: Mapping[Any, Any], field: str) -> date | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FxRejected(field, f"must be a YYYY-MM-DD string, got {type(value).__name__}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise FxRejected(field, f"must be a YYYY-MM-DD date, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class FxSettings:
    """The FX configuration: which rule makes steps, staleness limits and schedule size."""

    rule: FxRule
    limits: FxLimits = FxLimits()
    history: int = 32
    max_future: int = 8

    def new_schedule(self) -> FxSchedule:
        return FxSchedule(history=self.history, max_future=self.max_future)


_COMMON_KEYS = {
    "rule",
    "history",
    "max_future",
    "cbr_max_age_hours",
    "live_max_age_seconds",
    "other_max_age_hours",
}
_RULE_KEYS = {
    "cbr": {"switch_time", "utc_offset_hours", "holidays", "max_lead_days"},
    "live": {"instrument", "ignore_invalid"},
}


def parse_fx_settings(table: Mapping[str, Any], source: str | None = None) -> FxSettings:
    """Read an [fx] configuration table; raise ConfigError naming the key ("fx.<key>")."""
    name = table.get("rule", "cbr")
    if name not in FX_RULES:
        raise ConfigError("fx.rule", f"must be one of {FX_RULES}, got {name!r}", source)
    for key in table:
        if key in _COMMON_KEYS or key in _RULE_KEYS[name]:
            continue
        other = next((rule for rule, keys in _RULE_KEYS.items() if key in keys), None)
        reason = f"only for rule {other!r}" if other else "unknown key"
        raise ConfigError(f"fx.{key}", reason, source)
    try:
        rule = _rule_from_table(name, table, source)
        limits = FxLimits(
            cbr=_max_age(table, "cbr_max_age_hours", 3600.0, timedelta(hours=96), source),
            exchange=_max_age(table, "live_max_age_seconds", 1.0, timedelta(minutes=5), source),
            other=_max_age(table, "other_max_age_hours", 3600.0, None, source),
        )
        settings = FxSettings(
            rule=rule,
            limits=limits,
            history=table.get("history", 32),
            max_future=table.get("max_future", 8),
        )
        settings.new_schedule()  # validates history and max_future
    except ConfigError as error:
        raise ConfigError(error.key, error.reason, source) from None
    return settings


def _rule_from_table(name: str, table: Mapping[str, Any], source: str | None) -> FxRule:
    if name == "live":
        instrument = table.get("instrument", "USD000UTSTOM")
        if not isinstance(instrument, str):
            raise ConfigError("fx.instrument", "must be a string", source)
        ignore = table.get("ignore_invalid", True)
        if not isinstance(ignore, bool):
            raise ConfigError("fx.ignore_invalid", "must be true or false", source)
        return LiveRule(instrument=instrument, ignore_invalid=ignore)
    switch = table.get("switch_time", "17:00")
    if not isinstance(switch, str):
        raise ConfigError("fx.switch_time", f"must be HH:MM, got {switch!r}", source)
    offset = table.get("utc_offset_hours", 3)
    if isinstance(offset, bool) or not isinstance(offset, int | float) or not math.isfinite(offset):
        raise ConfigError("fx.utc_offset_hours", f"must be a number, got {offset!r}", source)
    if abs(offset) > 14:  # CbrRule checks it too, but a huge value overflows timedelta first
        raise ConfigError("fx.utc_offset_hours", f"must be within ±14 hours, got {offset}", source)
    raw_holidays = table.get("holidays", [])
    if not isinstance(raw_holidays, list):
        raise ConfigError("fx.holidays", "must be a list of YYYY-MM-DD dates", source)
    holidays: set[date] = set()
    for item in raw_holidays:
        try:
            holidays.add(item if isinstance(item, date) else date.fromisoformat(str(item)))
        except ValueError:
            raise ConfigError("fx.holidays", f"not a YYYY-MM-DD date: {item!r}", source) from None
    return CbrRule(
        switch_time=parse_clock(switch, "fx.switch_time"),
        utc_offset=timedelta(hours=offset),
        holidays=frozenset(holidays),
        max_lead_days=table.get("max_lead_days", 10),
    )


def _max_age(
    table: Mapping[str, Any],
    key: str,
    unit_seconds: float,
    default: timedelta | None,
    source: str | None,
) -> timedelta | None:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"fx.{key}", f"must be a positive number, got {value!r}", source)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"fx.{key}", f"must be a positive number, got {value!r}", source)
    return timedelta(seconds=value * unit_seconds)
