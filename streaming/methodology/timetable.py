"""When to publish what, and which prices a tick moves: the exchange timetable (phases and the
calendar) or around the clock for the demo. The engine asks only this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

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
    publication_kind,
)

EVERY_PROFILE = tuple(range(len(PROFILES)))


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
