"""When to publish what, and which prices a tick moves: the exchange timetable (phases and the
calendar) or around the clock for the demo. The engine asks only this module."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streaming.methodology.calendar import ExchangeCalendar, load_calendar
from streaming.methodology.family import PROFILES
from streaming.methodology.phases import (
    AuctionPolicy,
    Phase,
    Profile,
    PublicationKind,
    SessionSpec,
    moves,
    phase_at,
    phase_of_clock,
    publication_kind,
)
from streaming.ticks import NO_PHASE, PHASES, FloatArray, PhaseArray

BoolArray = npt.NDArray[np.bool_]

EVERY_PROFILE = tuple(range(len(PROFILES)))
DAY_SECONDS = 86_400
# Trades closer than this to a phase boundary or to midnight (seconds) are classified one by one
# on their exact microsecond time, so float rounding can never put one in the wrong phase.
BOUNDARY_MARGIN = 1e-3
# Per profile row, per phase code: whether a trade in that phase moves the row's prices.
MOVES_BY_CODE: BoolArray = np.array(
    [[moves(Profile(name), phase) for phase in PHASES] for name in PROFILES], dtype=np.bool_
)


class Timetable(Protocol):
    """What the engine asks about time."""

    @property
    def name(self) -> str: ...

    def trading_day(self, moment: datetime) -> date:
        """The exchange local date a moment belongs to."""
        ...

    def is_open(self, moment: datetime) -> bool:
        """Whether the main session trades at a moment."""
        ...

    def publication(self, grid: datetime, profile: str, cadence: int) -> PublicationKind:
        """What one index of this profile publishes at a grid instant."""
        ...

    def tick_profiles(self, moment: datetime, phase: Phase | None) -> tuple[int, ...]:
        """The profiles (rows of PROFILES) a trade at this moment, in this phase, moves."""
        ...

    def profile_mask(self, epochs: FloatArray, phases: PhaseArray) -> BoolArray:
        """tick_profiles for a whole batch (UTC epoch seconds, phase codes of PHASES or
        NO_PHASE): a profiles × trades array, True where the trade moves that profile."""
        ...


@dataclass(frozen=True, slots=True)
class AroundTheClock:
    """The demo: every grid instant is an intraday publication and every trade counts."""

    utc_offset: timedelta = timedelta(hours=3)
    name: str = "always"

    def trading_day(self, moment: datetime) -> date:
        return (moment.astimezone(UTC) + self.utc_offset).date()

    def is_open(self, moment: datetime) -> bool:
        return True

    def publication(self, grid: datetime, profile: str, cadence: int) -> PublicationKind:
        return PublicationKind.INTRADAY

    def tick_profiles(self, moment: datetime, phase: Phase | None) -> tuple[int, ...]:
        return EVERY_PROFILE

    def profile_mask(self, epochs: FloatArray, phases: PhaseArray) -> BoolArray:
        return np.ones((len(PROFILES), len(epochs)), dtype=np.bool_)


@dataclass(frozen=True, slots=True)
class ExchangeTimetable:
    """The exchange's sessions, auctions and trading days (Moscow time by default)."""

    spec: SessionSpec = field(default_factory=SessionSpec)
    calendar: ExchangeCalendar = field(default_factory=load_calendar)  # the shipped one
    auction_policy: AuctionPolicy = AuctionPolicy.PAUSE
    name: str = "moex"

    def trading_day(self, moment: datetime) -> date:
        return self.spec.trading_day(moment)

    def is_open(self, moment: datetime) -> bool:
        return phase_at(moment, self.spec, self.calendar) is not Phase.CLOSED

    def publication(self, grid: datetime, profile: str, cadence: int) -> PublicationKind:
        return publication_kind(
            grid, self.spec, self.calendar, Profile(profile), self.auction_policy, cadence
        )

    def tick_profiles(self, moment: datetime, phase: Phase | None) -> tuple[int, ...]:
        actual = phase if phase is not None else phase_at(moment, self.spec, self.calendar)
        return tuple(p for p, name in enumerate(PROFILES) if moves(Profile(name), actual))

    def profile_mask(self, epochs: FloatArray, phases: PhaseArray) -> BoolArray:
        codes = np.asarray(phases, dtype=np.intp).copy()
        unlabelled = np.flatnonzero(codes == NO_PHASE)
        if len(unlabelled):
            codes[unlabelled] = self._phase_codes(np.asarray(epochs)[unlabelled])
        mask: BoolArray = MOVES_BY_CODE[:, codes]
        return mask

    def _phase_codes(self, epochs: FloatArray) -> npt.NDArray[np.intp]:
        """phase_at for many moments, as codes of PHASES."""
        spec = self.spec
        edges, phase_after = _clock_table(spec)
        local = epochs + spec.utc_offset.total_seconds()
        days = np.floor(local / DAY_SECONDS)
        clock = local - days * DAY_SECONDS
        slot = np.searchsorted(edges, clock, side="right") - 1
        codes: npt.NDArray[np.intp] = phase_after[slot]
        first, last = float(days.min()), float(days.max())
        for day in range(int(first), int(last) + 1):
            if not self.calendar.is_trading_day(date.fromordinal(EPOCH_ORDINAL + day)):
                codes[days == day] = PHASES.index(Phase.CLOSED)
        # Distance to the nearest edge: the one at or before (slot) or the one after.
        gap = np.minimum(clock - edges[slot], edges[np.minimum(slot + 1, len(edges) - 1)] - clock)
        for i in np.flatnonzero(gap < BOUNDARY_MARGIN).tolist():
            moment = datetime.fromtimestamp(float(epochs[i]), tz=UTC)
            codes[i] = PHASES.index(phase_at(moment, spec, self.calendar))
        return codes


@functools.lru_cache(maxsize=16)
def _clock_table(spec: SessionSpec) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """Every phase boundary of the day (seconds since local midnight, from 0 to 86 400) and
    the phase code from each one on: phase_of_clock as a step function."""
    bounds = {0.0, float(DAY_SECONDS)}
    windows = [spec.continuous, spec.closing_auction, *spec.extended]
    if spec.opening_auction is not None:
        windows.append(spec.opening_auction)
    for window in windows:
        bounds |= {_seconds(window.start), _seconds(window.end)}
    edges = np.array(sorted(bounds))
    after = [PHASES.index(phase_of_clock(_clock_at(edge), spec)) for edge in edges[:-1].tolist()]
    return edges, np.array([*after, PHASES.index(Phase.CLOSED)], dtype=np.intp)


def _clock_at(seconds: float) -> time:
    whole = int(seconds)
    return time(whole // 3600, whole // 60 % 60, whole % 60, round((seconds - whole) * 1e6))


EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _seconds(clock: time) -> float:
    """Seconds since local midnight of a clock time."""
    return clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6
