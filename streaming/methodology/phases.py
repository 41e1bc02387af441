"""Trading phases of the exchange day and what each phase means for publication.

All clock times are exchange local time (Moscow, UTC+3 by default, no daylight saving); every
moment passed in or returned is an aware datetime, returned in UTC. Windows are half-open,
`[start, end)`: at 10:00:00 continuous trading has begun, at 18:40:00 the closing auction has
begun, at 18:50:00 it is over."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from streaming.errors import ConfigError, TickRejected
from streaming.methodology.calendar import ExchangeCalendar
from streaming.methodology.schedule import parse_clock, validate_cadence

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# Real zones span UTC-12 to UTC+14.
MIN_OFFSET_HOURS = -12
MAX_OFFSET_HOURS = 14
SPEC_KEYS = frozenset(
    {
        "utc_offset_hours",
        "continuous_start",
        "continuous_end",
        "auction_start",
        "auction_end",
        "opening_auction",
        "extended",
    }
)


class Phase(StrEnum):
    """What the order book of the main board is doing at a moment."""

    CLOSED = "closed"
    PRE_OPEN = "pre-open"  # the opening auction: orders collected, one uncrossing at the end
    CONTINUOUS = "continuous"
    CLOSING_AUCTION = "auction"
    AFTER_HOURS = "after-hours"  # the morning and evening sessions outside the main one


class Profile(StrEnum):
    """Which index variant: the main session (IMOEX) or all sessions (IMOEX2)."""

    MAIN = "main"
    EXTENDED = "extended"


class AuctionPolicy(StrEnum):
    """What intraday publication does while an auction collects orders."""

    PAUSE = "pause"  # publish nothing until the auction is over
    INDICATIVE = "indicative"  # keep publishing, flagged as indicative


class PublicationKind(StrEnum):
    """What, if anything, to publish at one grid instant."""

    NONE = "none"
    INTRADAY = "intraday"
    INDICATIVE = "indicative"
    CLOSE = "close"


_MOVES: dict[Profile, frozenset[Phase]] = {
    # The opening auction's uncrossing trade is the first main-session price of the day.
    Profile.MAIN: frozenset({Phase.PRE_OPEN, Phase.CONTINUOUS, Phase.CLOSING_AUCTION}),
    Profile.EXTENDED: frozenset(
        {Phase.PRE_OPEN, Phase.CONTINUOUS, Phase.CLOSING_AUCTION, Phase.AFTER_HOURS}
    ),
}
_AUCTIONS = frozenset({Phase.PRE_OPEN, Phase.CLOSING_AUCTION})
# A trade cannot print while the book is closed, so "closed" is no tick label.
_TICK_PHASES = {phase.value: phase for phase in Phase if phase is not Phase.CLOSED}
PHASES_OF_TICKS = tuple(_TICK_PHASES.values())  # the labels a tick may carry


@dataclass(frozen=True, slots=True)
class Window:
    """A span of local clock time, start included, end excluded."""

    start: time
    end: time

    def contains(self, clock: time) -> bool:
        """Whether a local clock time falls in the window."""
        return self.start <= clock < self.end

    def overlaps(self, other: Window) -> bool:
        """Whether two windows share any instant."""
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}–{self.end.isoformat()}"


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """The exchange day's timetable in local time; the defaults are the MOEX main board today."""

    continuous: Window = Window(time(10, 0), time(18, 40))
    closing_auction: Window = Window(time(18, 40), time(18, 50))
    opening_auction: Window | None = Window(time(9, 50), time(10, 0))
    extended: tuple[Window, ...] = (
        Window(time(7, 0), time(9, 50)),
        Window(time(19, 5), time(23, 50)),
    )
    utc_offset: timedelta = timedelta(hours=3)

    def __post_init__(self) -> None:
        hours = self.utc_offset / timedelta(hours=1)
        if not MIN_OFFSET_HOURS <= hours <= MAX_OFFSET_HOURS or self.utc_offset % timedelta(
            minutes=1
        ):
            raise ConfigError(
                "session.utc_offset_hours",
                f"must be whole minutes from {MIN_OFFSET_HOURS} to +{MAX_OFFSET_HOURS} hours,"
                f" got {hours}",
            )
        if self.continuous.start >= self.continuous.end:
            raise ConfigError(
                "session.continuous_end", f"must be after continuous_start, got {self.continuous}"
            )
        if self.closing_auction.start >= self.closing_auction.end:
            raise ConfigError(
                "session.auction_end", f"must be after auction_start, got {self.closing_auction}"
            )
        if self.closing_auction.start < self.continuous.end:
            raise ConfigError(
                "session.auction_start",
                f"must not be before continuous_end ({self.continuous.end}),"
                f" got {self.closing_auction.start}",
            )
        if self.opening_auction is not None and not (
            self.opening_auction.start < self.opening_auction.end <= self.continuous.start
        ):
            raise ConfigError(
                "session.opening_auction",
                f"must be a non-empty window ending by continuous_start ({self.continuous.start}),"
                f" got {self.opening_auction}",
            )
        main = self.main_span
        for n, window in enumerate(self.extended):
            key = f"session.extended[{n}]"
            if window.start >= window.end:
                raise ConfigError(key, f"must end after it starts, got {window}")
            if window.overlaps(main):
                raise ConfigError(key, f"overlaps the main session {main}, got {window}")
            if n and window.start < self.extended[n - 1].end:
                raise ConfigError(key, f"must start after extended[{n - 1}] ends, got {window}")

    @property
    def main_span(self) -> Window:
        """From the opening auction (or continuous trading) to the end of the closing auction."""
        start = (
            self.continuous.start if self.opening_auction is None else self.opening_auction.start
        )
        return Window(start, self.closing_auction.end)

    @property
    def extended_span(self) -> Window:
        """From the first trading window of the day to the end of the last one."""
        windows = [self.main_span, *self.extended]
        return Window(min(w.start for w in windows), max(w.end for w in windows))

    def span(self, profile: Profile) -> Window:
        """The local hours over which an index profile is calculated."""
        return self.main_span if profile is Profile.MAIN else self.extended_span

    def local(self, moment: datetime) -> datetime:
        """An aware moment as naive exchange local time."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"moment must be timezone-aware, got {moment!r}")
        return (moment.astimezone(UTC) + self.utc_offset).replace(tzinfo=None)

    def trading_day(self, moment: datetime) -> date:
        """The exchange local date of an aware moment."""
        return self.local(moment).date()

    def at(self, day: date, clock: time) -> datetime:
        """The UTC moment of a local clock time on a local date."""
        return datetime.combine(day, clock, tzinfo=UTC) - self.utc_offset

    def session_open(self, day: date, profile: Profile = Profile.MAIN) -> datetime:
        """UTC moment a profile starts calculating on a local date (calendar not consulted)."""
        return self.at(day, self.span(profile).start)

    def session_close(self, day: date, profile: Profile = Profile.MAIN) -> datetime:
        """UTC moment of a profile's official close on a local date (calendar not consulted)."""
        return self.at(day, self.span(profile).end)

    def close_instant(self, day: date, cadence: int, profile: Profile = Profile.MAIN) -> datetime:
        """The grid instant (UTC) that publishes the close: the first at or after it."""
        return ceil_to_grid(self.session_close(day, profile), cadence)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], source: str | None = None, prefix: str = "session."
    ) -> SessionSpec:
        """Build from a TOML-like table; missing keys keep the defaults, unknown keys fail."""
        try:
            return _spec_from_mapping(data, prefix)
        except ConfigError as error:
            key = error.key
            if key.startswith("session.") and prefix != "session.":
                key = prefix + key.removeprefix("session.")
            raise ConfigError(key, error.reason, source) from None


def _clock(value: object, key: str) -> time:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be an 'HH:MM' string, got {type(value).__name__}")
    clock = parse_clock(value, key)
    if clock.tzinfo is not None:
        # Session times are exchange local time; the zone is utc_offset_hours, set once.
        raise ConfigError(key, f"must be local time without a zone, got {value!r}")
    return clock


def _window(value: object, key: str) -> Window:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(key, f"must be a pair [start, end] of 'HH:MM', got {value!r}")
    return Window(_clock(value[0], key), _clock(value[1], key))


def _spec_from_mapping(data: Mapping[str, Any], prefix: str) -> SessionSpec:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip("."), f"must be a table, got {type(data).__name__}")
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ConfigError(prefix + unknown[0], "unknown key")
    default = SessionSpec()

    def clock(name: str, fallback: time) -> time:
        return _clock(data[name], prefix + name) if name in data else fallback

    continuous = Window(
        clock("continuous_start", default.continuous.start),
        clock("continuous_end", default.continuous.end),
    )
    auction = Window(
        clock("auction_start", default.closing_auction.start),
        clock("auction_end", default.closing_auction.end),
    )
    opening = default.opening_auction
    if "opening_auction" in data:
        raw = data["opening_auction"]
        empty = raw is False or (isinstance(raw, list | tuple) and not raw)
        opening = None if empty else _window(raw, prefix + "opening_auction")
    extended = default.extended
    if "extended" in data:
        raw = data["extended"]
        if not isinstance(raw, list | tuple):
            raise ConfigError(prefix + "extended", f"must be a list of windows, got {raw!r}")
        extended = tuple(_window(w, f"{prefix}extended[{n}]") for n, w in enumerate(raw))
    offset = default.utc_offset
    if "utc_offset_hours" in data:
        hours = data["utc_offset_hours"]
        if (
            isinstance(hours, bool)
            or not isinstance(hours, int | float)
            or not math.isfinite(hours)
        ):
            raise ConfigError(prefix + "utc_offset_hours", f"must be a number, got {hours!r}")
        if not MIN_OFFSET_HOURS <= hours <= MAX_OFFSET_HOURS:  # timedelta overflows on huge ones
            raise ConfigError(
                prefix + "utc_offset_hours",
                f"must be whole minutes from {MIN_OFFSET_HOURS} to +{MAX_OFFSET_HOURS} hours,"
                f" got {hours}",
            )
        offset = timedelta(hours=hours)
    return SessionSpec(continuous, auction, opening, extended, offset)


def ceil_to_grid(moment: datetime, cadence: int) -> datetime:
    """The first instant of the clock-aligned grid (UTC epoch multiples) at or after a moment."""
    step = validate_cadence(cadence) * 1_000_000
    micros = (moment - EPOCH) // MICROSECOND
    return EPOCH + timedelta(microseconds=-(-micros // step) * step)


def phase_of_clock(clock: time, spec: SessionSpec) -> Phase:
    """The phase at a local clock time of a trading day."""
    if spec.continuous.contains(clock):
        return Phase.CONTINUOUS
    if spec.closing_auction.contains(clock):
        return Phase.CLOSING_AUCTION
    if spec.opening_auction is not None and spec.opening_auction.contains(clock):
        return Phase.PRE_OPEN
    if any(window.contains(clock) for window in spec.extended):
        return Phase.AFTER_HOURS
    return Phase.CLOSED


def phase_at(moment: datetime, spec: SessionSpec, calendar: ExchangeCalendar) -> Phase:
    """The phase at an aware moment; CLOSED all day on a non-trading day."""
    local = spec.local(moment)
    if not calendar.is_trading_day(local.date()):
        return Phase.CLOSED
    return phase_of_clock(local.time(), spec)


def parse_phase(value: object) -> Phase:
    """A tick's explicit phase label; TickRejected naming the field `phase` otherwise."""
    if not isinstance(value, str):
        raise TickRejected("phase", f"must be a string, got {type(value).__name__}")
    phase = _TICK_PHASES.get(value.strip().lower())
    if phase is None:
        raise TickRejected("phase", f"must be one of {', '.join(_TICK_PHASES)}, got {value!r}")
    return phase


def moves(profile: Profile, phase: Phase) -> bool:
    """Whether a trade printed in this phase changes the index of this profile."""
    return phase in _MOVES[profile]


def parse_profile(value: object, key: str = "profile", source: str | None = None) -> Profile:
    """'main' or 'extended', with an error naming the key."""
    for profile in Profile:
        if value == profile.value:
            return profile
    raise ConfigError(key, f"must be main or extended, got {value!r}", source)


def parse_auction_policy(
    value: object, key: str = "auction_policy", source: str | None = None
) -> AuctionPolicy:
    """'pause' or 'indicative', with an error naming the key."""
    for policy in AuctionPolicy:
        if value == policy.value:
            return policy
    raise ConfigError(key, f"must be pause or indicative, got {value!r}", source)


def publication_kind(
    grid_moment: datetime,
    spec: SessionSpec,
    calendar: ExchangeCalendar,
    profile: Profile,
    auction_policy: AuctionPolicy,
    cadence: int,
) -> PublicationKind:
    """What to publish at one grid instant (aware, a multiple of cadence seconds since the epoch).

    CLOSE is returned for exactly one grid instant per trading day: the first one at or after
    the end of the profile's span (`spec.close_instant`), so a caller asking once per grid
    instant publishes one close a day with no state of its own. Otherwise, on a trading day and
    inside the span: auctions give INDICATIVE or NONE by policy, everything else INTRADAY
    (including pauses between windows, where last prices stand). Outside: NONE."""
    step = timedelta(seconds=validate_cadence(cadence))
    if (grid_moment - EPOCH) % step:
        raise ValueError(f"{grid_moment.isoformat()} is not on the {cadence} s grid")
    today = spec.trading_day(grid_moment)
    # The close instant lies less than one cadence after the close, so it can fall on the
    # next local date when a span ends shortly before midnight.
    for day in (today, today - timedelta(days=1)):
        if _close_of_day(spec, calendar, profile, cadence, day) == grid_moment:
            return PublicationKind.CLOSE
    if not calendar.is_trading_day(today):
        return PublicationKind.NONE
    clock = spec.local(grid_moment).time()
    if not spec.span(profile).contains(clock):
        return PublicationKind.NONE
    if phase_of_clock(clock, spec) in _AUCTIONS:
        if auction_policy is AuctionPolicy.INDICATIVE:
            return PublicationKind.INDICATIVE
        return PublicationKind.NONE
    return PublicationKind.INTRADAY


@functools.lru_cache(maxsize=256)
def _close_of_day(
    spec: SessionSpec, calendar: ExchangeCalendar, profile: Profile, cadence: int, day: date
) -> datetime | None:
    """The close instant of a profile on a local date, None when the exchange does not trade;
    asked at every grid instant, the same few days over and over."""
    if not calendar.is_trading_day(day):
        return None
    return spec.close_instant(day, cadence, profile)
