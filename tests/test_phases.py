"""Trading phases through the day, the calendar, and what each grid instant publishes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest

from streaming.errors import ConfigError, TickRejected
from streaming.methodology.calendar import WEEKDAYS, parse_calendar
from streaming.methodology.phases import (
    AuctionPolicy,
    Phase,
    Profile,
    PublicationKind,
    SessionSpec,
    Window,
    ceil_to_grid,
    moves,
    parse_auction_policy,
    parse_phase,
    parse_profile,
    phase_at,
    publication_kind,
)

FRIDAY = date(2026, 11, 20)
SATURDAY = date(2026, 11, 21)
MONDAY = date(2026, 11, 23)
MSK = timedelta(hours=3)
DEFAULT = SessionSpec()
LATER_AUCTION = SessionSpec.from_mapping(
    {"continuous_end": "18:55", "auction_start": "18:55", "auction_end": "19:00"}, "later.toml"
)
CALENDAR = parse_calendar(
    "date,kind\n2026-11-18,holiday\n2026-11-28,workday\n", "test-calendar.csv"
)


def moscow(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    """A Moscow wall-clock moment as an aware UTC datetime."""
    return datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=UTC) - MSK


def expected_default_phase(second_of_day: int) -> Phase:
    """The MOEX day written independently of the code, in seconds after local midnight."""
    h = 3600
    bounds = [
        (7 * h, Phase.CLOSED),
        (9 * h + 50 * 60, Phase.AFTER_HOURS),
        (10 * h, Phase.PRE_OPEN),
        (18 * h + 40 * 60, Phase.CONTINUOUS),
        (18 * h + 50 * 60, Phase.CLOSING_AUCTION),
        (19 * h + 5 * 60, Phase.CLOSED),
        (23 * h + 50 * 60, Phase.AFTER_HOURS),
        (24 * h, Phase.CLOSED),
    ]
    return next(phase for end, phase in bounds if second_of_day < end)


def test_every_second_of_a_trading_day() -> None:
    start = moscow(FRIDAY, 0)
    counts: Counter[Phase] = Counter()
    for second in range(86_400):
        phase = phase_at(start + timedelta(seconds=second), DEFAULT, CALENDAR)
        assert phase is expected_default_phase(second), second
        counts[phase] += 1
    assert counts == {
        Phase.CLOSED: 7 * 3600 + 15 * 60 + 10 * 60,
        Phase.AFTER_HOURS: 170 * 60 + 285 * 60,
        Phase.PRE_OPEN: 600,
        Phase.CONTINUOUS: 520 * 60,
        Phase.CLOSING_AUCTION: 600,
    }


@pytest.mark.parametrize(
    ("clock", "phase"),
    [
        (time(9, 59, 59, 999_999), Phase.PRE_OPEN),
        (time(10, 0, 0), Phase.CONTINUOUS),
        (time(18, 39, 59, 999_999), Phase.CONTINUOUS),
        (time(18, 40, 0), Phase.CLOSING_AUCTION),
        (time(18, 49, 59, 999_999), Phase.CLOSING_AUCTION),
        (time(18, 50, 0), Phase.CLOSED),
        (time(19, 5, 0), Phase.AFTER_HOURS),
        (time(23, 50, 0), Phase.CLOSED),
        (time(7, 0, 0), Phase.AFTER_HOURS),
    ],
)
def test_boundaries_are_half_open(clock: time, phase: Phase) -> None:
    moment = moscow(FRIDAY, clock.hour, clock.minute, clock.second, clock.microsecond)
    assert phase_at(moment, DEFAULT, CALENDAR) is phase


def test_any_aware_zone_gives_the_same_phase() -> None:
    ten_in_moscow = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    for hours in (-5, 0, 3, 9):
        elsewhere = ten_in_moscow.astimezone(timezone(timedelta(hours=hours)))
        assert phase_at(elsewhere, DEFAULT, CALENDAR) is Phase.CONTINUOUS
        assert DEFAULT.trading_day(elsewhere) == FRIDAY
    with pytest.raises(ValueError, match="timezone-aware"):
        phase_at(datetime(2026, 11, 20, 10, 0), DEFAULT, CALENDAR)


@pytest.mark.parametrize(
    "day",
    [SATURDAY, date(2026, 11, 22), date(2026, 11, 18)],  # Saturday, Sunday, listed holiday
)
def test_non_trading_days_are_closed_all_day(day: date) -> None:
    start = moscow(day, 0)
    assert {
        phase_at(start + timedelta(seconds=s), DEFAULT, CALENDAR) for s in range(0, 86_400, 5)
    } == {Phase.CLOSED}


def test_a_working_saturday_has_the_normal_day() -> None:
    assert phase_at(moscow(date(2026, 11, 28), 12), DEFAULT, CALENDAR) is Phase.CONTINUOUS
    assert phase_at(moscow(date(2026, 11, 28), 18, 45), DEFAULT, CALENDAR) is (
        Phase.CLOSING_AUCTION
    )


def test_a_later_auction_is_configuration() -> None:
    assert phase_at(moscow(FRIDAY, 18, 50), LATER_AUCTION, CALENDAR) is Phase.CONTINUOUS
    assert phase_at(moscow(FRIDAY, 18, 55), LATER_AUCTION, CALENDAR) is Phase.CLOSING_AUCTION
    assert phase_at(moscow(FRIDAY, 19, 0), LATER_AUCTION, CALENDAR) is Phase.CLOSED
    assert LATER_AUCTION.session_close(FRIDAY) == moscow(FRIDAY, 19)
    assert LATER_AUCTION.close_instant(FRIDAY, 15) == moscow(FRIDAY, 19)


def test_a_pause_between_continuous_trading_and_the_auction() -> None:
    spec = SessionSpec.from_mapping(
        {"continuous_end": "18:50", "auction_start": "18:55", "auction_end": "19:00"}
    )
    assert phase_at(moscow(FRIDAY, 18, 52), spec, CALENDAR) is Phase.CLOSED
    # The session is not over: the intraday value stands and keeps being published.
    kind = publication_kind(
        moscow(FRIDAY, 18, 52), spec, CALENDAR, Profile.MAIN, AuctionPolicy.PAUSE, 15
    )
    assert kind is PublicationKind.INTRADAY


def test_a_different_utc_offset_moves_every_boundary() -> None:
    plus4 = SessionSpec.from_mapping({"utc_offset_hours": 4})
    ten_local = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    assert phase_at(ten_local, plus4, CALENDAR) is Phase.CONTINUOUS
    assert phase_at(ten_local, DEFAULT, CALENDAR) is Phase.AFTER_HOURS  # 09:00 in Moscow
    assert plus4.session_open(FRIDAY) == datetime(2026, 11, 20, 5, 50, tzinfo=UTC)
    assert plus4.session_close(FRIDAY) == datetime(2026, 11, 20, 14, 50, tzinfo=UTC)
    assert DEFAULT.session_close(FRIDAY) == datetime(2026, 11, 20, 15, 50, tzinfo=UTC)
    # 20:30 UTC Friday is 00:30 Saturday at UTC+4: a closed day there, a Friday evening at +3.
    late = datetime(2026, 11, 20, 20, 30, tzinfo=UTC)
    assert plus4.trading_day(late) == SATURDAY
    assert phase_at(late, plus4, CALENDAR) is Phase.CLOSED
    assert phase_at(late, DEFAULT, CALENDAR) is Phase.AFTER_HOURS


def test_no_daylight_saving_in_moscow() -> None:
    summer, winter = date(2026, 7, 15), date(2026, 1, 15)
    assert DEFAULT.session_close(summer).time() == DEFAULT.session_close(winter).time()
    assert DEFAULT.session_close(summer).time() == time(15, 50)


def test_parse_phase_accepts_the_tick_labels_only() -> None:
    assert parse_phase("continuous") is Phase.CONTINUOUS
    assert parse_phase(" Auction ") is Phase.CLOSING_AUCTION
    assert parse_phase("after-hours") is Phase.AFTER_HOURS
    assert parse_phase("pre-open") is Phase.PRE_OPEN
    for bad in ("closed", "evening", "", 3, None):
        with pytest.raises(TickRejected) as caught:
            parse_phase(bad)
        assert caught.value.field == "phase"


def test_which_phases_move_which_profile() -> None:
    main = {phase for phase in Phase if moves(Profile.MAIN, phase)}
    extended = {phase for phase in Phase if moves(Profile.EXTENDED, phase)}
    assert main == {Phase.PRE_OPEN, Phase.CONTINUOUS, Phase.CLOSING_AUCTION}
    assert extended == main | {Phase.AFTER_HOURS}
    assert not moves(Profile.MAIN, Phase.AFTER_HOURS)


def publications(
    day: date,
    cadence: int,
    spec: SessionSpec = DEFAULT,
    profile: Profile = Profile.MAIN,
    policy: AuctionPolicy = AuctionPolicy.PAUSE,
    days: int = 1,
) -> list[tuple[datetime, PublicationKind]]:
    """Ask for every grid instant from local midnight of day for a number of days."""
    start = moscow(day, 0)
    return [
        (moment, publication_kind(moment, spec, CALENDAR, profile, policy, cadence))
        for n in range(days * 86_400 // cadence)
        for moment in (start + timedelta(seconds=n * cadence),)
    ]


@pytest.mark.parametrize("cadence", [1, 5, 15, 60])
def test_close_exactly_once_per_trading_day(cadence: int) -> None:
    # Friday, Saturday, Sunday, Monday.
    closes = [m for m, kind in publications(FRIDAY, cadence, days=4) if kind == "close"]
    assert closes == [moscow(FRIDAY, 18, 50), moscow(MONDAY, 18, 50)]


@pytest.mark.parametrize("cadence", [1, 15, 60, 900, 3600])
def test_close_with_the_later_auction(cadence: int) -> None:
    closes = [
        m
        for m, kind in publications(FRIDAY, cadence, LATER_AUCTION, days=2)
        if kind is PublicationKind.CLOSE
    ]
    assert closes == [moscow(FRIDAY, 19)]


def test_close_is_the_first_grid_instant_at_or_after_the_auction_end() -> None:
    odd = SessionSpec.from_mapping({"auction_end": "18:50:10"})
    closes = [m for m, kind in publications(FRIDAY, 15, odd) if kind is PublicationKind.CLOSE]
    assert closes == [moscow(FRIDAY, 18, 50, 15)]
    hourly = [m for m, kind in publications(FRIDAY, 3600) if kind is PublicationKind.CLOSE]
    assert hourly == [moscow(FRIDAY, 19)]
    assert ceil_to_grid(moscow(FRIDAY, 18, 50, 0, 1), 15) == moscow(FRIDAY, 18, 50, 15)


def test_main_profile_day_with_the_auction_paused() -> None:
    kinds = dict(publications(FRIDAY, 15))
    assert kinds[moscow(FRIDAY, 9, 55)] is PublicationKind.NONE  # opening auction, paused
    assert kinds[moscow(FRIDAY, 10)] is PublicationKind.INTRADAY
    assert kinds[moscow(FRIDAY, 18, 39, 45)] is PublicationKind.INTRADAY
    assert kinds[moscow(FRIDAY, 18, 40)] is PublicationKind.NONE
    assert kinds[moscow(FRIDAY, 18, 50)] is PublicationKind.CLOSE
    assert kinds[moscow(FRIDAY, 18, 50, 15)] is PublicationKind.NONE
    assert kinds[moscow(FRIDAY, 20)] is PublicationKind.NONE  # after-hours do not publish IMOEX
    tally = Counter(kinds.values())
    assert tally[PublicationKind.INTRADAY] == 520 * 4
    assert tally[PublicationKind.CLOSE] == 1
    assert tally[PublicationKind.INDICATIVE] == 0


def test_main_profile_day_with_indicative_auctions() -> None:
    kinds = dict(publications(FRIDAY, 15, policy=AuctionPolicy.INDICATIVE))
    assert kinds[moscow(FRIDAY, 9, 50)] is PublicationKind.INDICATIVE
    assert kinds[moscow(FRIDAY, 18, 40)] is PublicationKind.INDICATIVE
    assert kinds[moscow(FRIDAY, 18, 49, 45)] is PublicationKind.INDICATIVE
    assert kinds[moscow(FRIDAY, 18, 50)] is PublicationKind.CLOSE
    assert Counter(kinds.values())[PublicationKind.INDICATIVE] == 2 * 40


def test_no_opening_auction_starts_at_continuous_trading() -> None:
    spec = SessionSpec.from_mapping({"opening_auction": []})
    assert spec.opening_auction is None
    assert phase_at(moscow(FRIDAY, 9, 55), spec, CALENDAR) is Phase.CLOSED
    assert spec.session_open(FRIDAY) == moscow(FRIDAY, 10)


def test_extended_profile_runs_from_seven_to_ten_to_midnight() -> None:
    kinds = dict(publications(FRIDAY, 15, profile=Profile.EXTENDED))
    assert kinds[moscow(FRIDAY, 6, 59, 45)] is PublicationKind.NONE
    assert kinds[moscow(FRIDAY, 7)] is PublicationKind.INTRADAY
    assert kinds[moscow(FRIDAY, 18, 45)] is PublicationKind.NONE  # the auction, paused
    assert kinds[moscow(FRIDAY, 18, 50)] is PublicationKind.INTRADAY  # no close at 18:50
    assert kinds[moscow(FRIDAY, 19)] is PublicationKind.INTRADAY  # between sessions
    assert kinds[moscow(FRIDAY, 23, 49, 45)] is PublicationKind.INTRADAY
    assert kinds[moscow(FRIDAY, 23, 50)] is PublicationKind.CLOSE
    assert Counter(kinds.values())[PublicationKind.CLOSE] == 1
    assert DEFAULT.session_open(FRIDAY, Profile.EXTENDED) == moscow(FRIDAY, 7)
    assert DEFAULT.session_close(FRIDAY, Profile.EXTENDED) == moscow(FRIDAY, 23, 50)


def test_extended_close_past_midnight_belongs_to_the_day_before() -> None:
    # Hourly: Friday's 23:50 close is published at 00:00 Saturday, a non-trading day, and
    # Thursday's at 00:00 Friday; the weekend publishes none, Monday's falls on Tuesday.
    closes = [
        m
        for m, kind in publications(FRIDAY, 3600, profile=Profile.EXTENDED, days=4)
        if kind is PublicationKind.CLOSE
    ]
    assert closes == [moscow(FRIDAY, 0), moscow(SATURDAY, 0)]


def test_off_grid_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="not on the 15 s grid"):
        publication_kind(
            moscow(FRIDAY, 12, 0, 7), DEFAULT, WEEKDAYS, Profile.MAIN, AuctionPolicy.PAUSE, 15
        )


def test_defaults_are_the_moex_main_board() -> None:
    assert SessionSpec.from_mapping({}) == DEFAULT
    assert DEFAULT.main_span == Window(time(9, 50), time(18, 50))
    assert DEFAULT.extended_span == Window(time(7, 0), time(23, 50))
    assert DEFAULT.utc_offset == MSK


def test_a_full_mapping_round_trips() -> None:
    spec = SessionSpec.from_mapping(
        {
            "utc_offset_hours": 3,
            "continuous_start": "10:00",
            "continuous_end": "18:55",
            "auction_start": "18:55",
            "auction_end": "19:00",
            "opening_auction": ["09:50", "10:00"],
            "extended": [["07:00", "09:50"], ["19:05", "23:50"]],
        }
    )
    assert spec == LATER_AUCTION


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"open": "10:00"}, "session.open", "unknown key"),
        ({"continuous_start": "25:00"}, "session.continuous_start", "HH:MM"),
        ({"continuous_start": 1000}, "session.continuous_start", "string"),
        ({"auction_end": "18:50+03:00"}, "session.auction_end", "without a zone"),
        ({"continuous_end": "09:00"}, "session.continuous_end", "after continuous_start"),
        ({"auction_start": "18:30"}, "session.auction_start", "not be before continuous_end"),
        ({"auction_end": "18:40"}, "session.auction_end", "after auction_start"),
        ({"opening_auction": ["09:55", "10:05"]}, "session.opening_auction", "ending by"),
        ({"opening_auction": ["09:50"]}, "session.opening_auction", "pair"),
        ({"extended": [["07:00", "09:55"]]}, "session.extended[0]", "overlaps the main"),
        (
            {"extended": [["19:05", "23:50"], ["07:00", "09:50"]]},
            "session.extended[1]",
            r"after extended\[0\]",
        ),
        ({"extended": [["20:00", "19:30"]]}, "session.extended[0]", "end after"),
        ({"extended": "19:05-23:50"}, "session.extended", "list"),
        ({"utc_offset_hours": 15}, "session.utc_offset_hours", "from -12"),
        ({"utc_offset_hours": 3.01}, "session.utc_offset_hours", "whole minutes"),
        ({"utc_offset_hours": True}, "session.utc_offset_hours", "number"),
    ],
)
def test_bad_session_settings_name_the_key(data: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        SessionSpec.from_mapping(data, "index.toml")
    assert caught.value.key == key
    assert caught.value.source == "index.toml"


def test_errors_use_the_caller_prefix() -> None:
    with pytest.raises(ConfigError) as caught:
        SessionSpec.from_mapping({"auction_end": "18:00"}, "x.toml", prefix="imoex2.session.")
    assert caught.value.key == "imoex2.session.auction_end"


def test_profile_and_policy_settings() -> None:
    assert parse_profile("extended") is Profile.EXTENDED
    assert parse_auction_policy("indicative") is AuctionPolicy.INDICATIVE
    with pytest.raises(ConfigError) as caught:
        parse_auction_policy("skip", "publish.auction_policy", "settings.toml")
    assert caught.value.key == "publish.auction_policy"
    with pytest.raises(ConfigError, match="main or extended"):
        parse_profile(1)
