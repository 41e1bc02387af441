"""FX as a step function: the CBR 17:00 rule, the live rule, staleness, parsing and bounds."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.errors import ConfigError, IndexTickerError, TickRejected
from streaming.methodology.fx import (
    AddOutcome,
    CbrRule,
    FxLimits,
    FxRejected,
    FxSchedule,
    FxState,
    FxStep,
    LiveRule,
    constant_step,
    parse_fx_settings,
    parse_fx_update,
)

MSK = timezone(timedelta(hours=3))
# 2026-11-20 is a Friday; 21 Saturday, 23 Monday, 24 Tuesday.
FRI, SAT, SUN, MON, TUE = (date(2026, 11, d) for d in (20, 21, 22, 23, 24))


def msk(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A Moscow wall-clock moment as UTC."""
    return datetime.combine(day, time(hour, minute, second), tzinfo=MSK).astimezone(UTC)


# --- the CBR rule -------------------------------------------------------------------------


def test_published_before_17_takes_effect_at_17_moscow() -> None:
    step = CbrRule().step_for_publication(92.5, TUE, msk(MON, 11, 30))
    assert step.effective_from == datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert step.rate == 92.5
    assert step.source == "cbr:2026-11-24"
    assert step.published_at == msk(MON, 11, 30)


def test_published_after_17_takes_effect_on_arrival() -> None:
    step = CbrRule().step_for_publication(92.5, TUE, msk(MON, 17, 20))
    assert step.effective_from == msk(MON, 17, 20)
    assert CbrRule().step_for_publication(92.5, TUE, msk(MON, 17)).effective_from == msk(MON, 17)


def test_friday_rate_for_saturday_covers_the_weekend_and_monday_until_17() -> None:
    rule = CbrRule()
    schedule = FxSchedule()
    assert schedule.add(rule.step_for_publication(91.0, SAT, msk(FRI, 15, 30))) is AddOutcome.ADDED
    assert schedule.add(rule.step_for_publication(93.0, TUE, msk(MON, 15, 30))) is AddOutcome.ADDED
    assert schedule.rate_at(msk(FRI, 16, 59, 59)) is None
    for moment in (msk(FRI, 17), msk(SAT, 12), msk(SUN, 23, 59), msk(MON, 16, 59, 59)):
        step = schedule.rate_at(moment)
        assert step is not None and step.source == "cbr:2026-11-21" and step.rate == 91.0
    last_before = msk(MON, 17) - timedelta(microseconds=1)
    assert schedule.rate_at(last_before).rate == 91.0  # type: ignore[union-attr]
    # effective_from is inclusive: at 17:00:00.000 exactly the new rate is in force.
    assert schedule.rate_at(msk(MON, 17)).source == "cbr:2026-11-24"  # type: ignore[union-attr]


def test_without_a_publication_moment_the_business_day_before_decides() -> None:
    rule = CbrRule()
    assert rule.publication_day(SAT) == FRI
    assert rule.publication_day(SUN) == FRI
    assert rule.publication_day(MON) == FRI
    assert rule.publication_day(TUE) == MON
    assert rule.step_for_publication(91.0, SAT).effective_from == msk(FRI, 17)
    assert rule.step_for_publication(91.0, TUE).effective_from == msk(MON, 17)
    assert rule.step_for_publication(91.0, TUE).published_at is None
    # A Monday holiday moves Tuesday's publication back to Friday.
    with_holiday = CbrRule(holidays=frozenset({MON}))
    assert with_holiday.publication_day(TUE) == FRI
    assert with_holiday.step_for_publication(91.0, TUE).effective_from == msk(FRI, 17)


def test_a_rate_for_a_day_already_begun_is_a_catch_up_effective_at_once() -> None:
    rule = CbrRule()
    arrival = msk(TUE, 9, 5)
    assert rule.step_for_publication(92.0, TUE, arrival).effective_from == arrival
    assert rule.step_for_publication(91.0, MON, arrival).effective_from == arrival
    # Friday's rate for Saturday arriving on Saturday morning: at once too.
    assert rule.step_for_publication(91.0, SAT, msk(SAT, 8)).effective_from == msk(SAT, 8)


def test_rate_dated_too_far_ahead_of_its_publication_is_refused() -> None:
    with pytest.raises(FxRejected) as caught:
        CbrRule().step_for_publication(92.0, date(2026, 12, 24), msk(MON, 12))
    assert caught.value.field == "rate_date"
    assert "31 days" in caught.value.reason


def test_switch_time_and_offset_are_configuration() -> None:
    rule = CbrRule(switch_time=time(18, 30), utc_offset=timedelta(hours=0))
    step = rule.step_for_publication(92.0, TUE, datetime(2026, 11, 23, 12, tzinfo=UTC))
    assert step.effective_from == datetime(2026, 11, 23, 18, 30, tzinfo=UTC)
    with pytest.raises(ConfigError, match="utc_offset"):
        CbrRule(utc_offset=timedelta(hours=15))
    with pytest.raises(ConfigError, match="max_lead_days"):
        CbrRule(max_lead_days=0)


def test_an_older_cbr_rate_never_overrides_a_newer_one() -> None:
    rule = CbrRule()
    tuesday = rule.step_for_publication(93.0, TUE, msk(MON, 15, 30))
    late_monday = rule.step_for_publication(91.0, MON, msk(TUE, 9))  # catch-up, at once
    schedule = FxSchedule()
    schedule.add(tuesday)
    assert schedule.add(late_monday) is AddOutcome.SUPERSEDED
    assert schedule.rate_at(msk(TUE, 10)) == tuesday
    # The other order ends in the same place: the newer rate removes the later-effective older.
    other = FxSchedule()
    other.add(late_monday)
    assert other.add(tuesday) is AddOutcome.REPLACED
    assert other.steps == (tuesday,)


def test_a_publication_polled_again_keeps_its_first_moment() -> None:
    rule = CbrRule()
    schedule = FxSchedule()
    first = rule.step_for_publication(93.0, TUE, msk(MON, 15, 30))
    schedule.add(first)
    again = rule.step_for_publication(93.0, TUE, msk(MON, 17, 5))
    assert again.effective_from == msk(MON, 17, 5)
    assert schedule.add(again) is AddOutcome.UNCHANGED
    assert schedule.steps == (first,)
    # A correction before 17:00 replaces the rate at 17:00; one after 17:00 is a step of its own.
    corrected = rule.step_for_publication(93.5, TUE, msk(MON, 16))
    assert schedule.add(corrected) is AddOutcome.REPLACED
    assert schedule.rate_at(msk(MON, 17)) == corrected
    late = rule.step_for_publication(93.7, TUE, msk(MON, 17, 10))
    assert schedule.add(late) is AddOutcome.ADDED
    assert [s.rate for s in schedule.steps] == [93.5, 93.7]


# --- the schedule -------------------------------------------------------------------------


def api_step(rate: float, minute: int, source: str = "api") -> FxStep:
    return FxStep(rate=rate, effective_from=msk(MON, 12, minute), source=source)


def test_out_of_order_adds_are_kept_in_time_order() -> None:
    schedule = FxSchedule()
    for rate, minute in ((3.0, 30), (1.0, 10), (2.0, 20)):
        assert schedule.add(api_step(rate, minute)) is AddOutcome.ADDED
    assert [s.rate for s in schedule.steps] == [1.0, 2.0, 3.0]
    assert schedule.rate_at(msk(MON, 12, 9)) is None
    assert schedule.rate_at(msk(MON, 12, 10)).rate == 1.0  # type: ignore[union-attr]
    assert schedule.rate_at(msk(MON, 12, 25)).rate == 2.0  # type: ignore[union-attr]
    assert schedule.rate_at(msk(MON, 13)).rate == 3.0  # type: ignore[union-attr]
    assert schedule.next_change_after(msk(MON, 12, 10)).rate == 2.0  # type: ignore[union-attr]
    assert schedule.next_change_after(msk(MON, 12, 9)).rate == 1.0  # type: ignore[union-attr]
    assert schedule.next_change_after(msk(MON, 12, 30)) is None


def test_duplicates_are_deterministic() -> None:
    schedule = FxSchedule()
    assert schedule.add(api_step(1.0, 10)) is AddOutcome.ADDED
    assert schedule.add(api_step(1.0, 10)) is AddOutcome.UNCHANGED
    assert schedule.add(api_step(1.5, 10)) is AddOutcome.REPLACED
    assert schedule.steps == (api_step(1.5, 10),)


def test_memory_is_bounded_and_old_or_excess_steps_are_refused() -> None:
    schedule = FxSchedule(history=2, max_future=1)
    live = LiveRule()
    start = msk(MON, 12)
    for second in range(100):
        moment = start + timedelta(seconds=second)
        step = live.step_for_tick(90.0 + second / 100, moment)
        assert step is not None
        assert schedule.add(step, now=moment) is AddOutcome.ADDED
        assert len(schedule) <= 3
    assert schedule.horizon == start + timedelta(seconds=97)
    assert schedule.rate_at(start + timedelta(seconds=99)).rate == pytest.approx(90.99)  # type: ignore[union-attr]
    assert schedule.status(start + timedelta(seconds=50)).missing
    old = live.step_for_tick(80.0, start + timedelta(seconds=10))
    assert old is not None and schedule.add(old) is AddOutcome.TOO_OLD
    # One scheduled future step fits; a second waits for no one.
    assert schedule.add(api_step(95.0, 30)) is AddOutcome.ADDED
    assert schedule.add(api_step(96.0, 40)) is AddOutcome.FULL
    assert schedule.add(api_step(95.5, 30)) is AddOutcome.REPLACED  # same moment: not extra
    schedule.advance(msk(MON, 12, 45))
    assert schedule.rate_at(msk(MON, 12, 45)).rate == 95.5  # type: ignore[union-attr]
    assert len(schedule) == 3
    # The clock never goes back.
    schedule.advance(start)
    assert schedule.clock == msk(MON, 12, 45)


def test_schedule_size_is_validated() -> None:
    with pytest.raises(ConfigError, match="history"):
        FxSchedule(history=-1)
    with pytest.raises(ConfigError, match="max_future"):
        FxSchedule(max_future=True)


def test_schedule_round_trips_through_its_dict() -> None:
    schedule = FxSchedule(history=1, max_future=4)
    rule = CbrRule()
    schedule.add(rule.step_for_publication(90.0, FRI, msk(date(2026, 11, 19), 15, 30)))
    schedule.add(rule.step_for_publication(91.0, SAT, msk(FRI, 15, 30)))
    schedule.advance(msk(TUE, 12))
    schedule.add(rule.step_for_publication(92.0, TUE, msk(MON, 15, 30)))
    schedule.add(rule.step_for_publication(93.0, date(2026, 11, 25), msk(TUE, 15, 30)))
    # history=1 keeps Friday's rate behind Tuesday's; Thursday's is gone.
    assert [s.rate for s in schedule.steps] == [91.0, 92.0, 93.0]
    assert schedule.horizon == msk(FRI, 17)
    data = schedule.as_dict()
    assert data["steps"][0] == {
        "rate": 91.0,
        "effective_from": "2026-11-20T14:00:00.000Z",
        "source": "cbr:2026-11-21",
        "published_at": "2026-11-20T12:30:00.000Z",
    }
    assert data["clock"] == "2026-11-24T09:00:00.000Z"
    restored = FxSchedule.from_dict(data)
    assert restored.steps == schedule.steps
    assert restored.as_dict() == data


def test_step_validation_names_the_field() -> None:
    moment = msk(MON, 12)
    cases: list[tuple[dict[str, object], str]] = [
        ({"rate": 0.0, "effective_from": moment, "source": "api"}, "rate"),
        ({"rate": math.inf, "effective_from": moment, "source": "api"}, "rate"),
        ({"rate": True, "effective_from": moment, "source": "api"}, "rate"),
        (
            {"rate": 90.0, "effective_from": moment.replace(tzinfo=None), "source": "api"},
            "effective_from",
        ),
        ({"rate": 90.0, "effective_from": moment, "source": ""}, "source"),
        ({"rate": 90.0, "effective_from": moment, "source": "a b"}, "source"),
        ({"rate": 90.0, "effective_from": moment, "source": "x" * 65}, "source"),
    ]
    for kwargs, field in cases:
        with pytest.raises(FxRejected) as caught:
            FxStep(**kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
    # Another zone is normalised to UTC.
    step = FxStep(rate=90, effective_from=msk(MON, 12).astimezone(MSK), source="api")
    assert step.effective_from.tzinfo is UTC and step.rate == 90.0


def test_a_usd_value_is_traceable_to_its_rate() -> None:
    # RTSI = MC / (FX · D): the value at each moment carries the step that produced it.
    capitalization, divisor = 9.881489027462875e12, 108446907.972
    schedule = FxSchedule()
    schedule.add(CbrRule().step_for_publication(80.0, TUE, msk(MON, 15, 30)))
    schedule.add(CbrRule().step_for_publication(100.0, date(2026, 11, 25), msk(TUE, 15, 30)))
    before, after = (schedule.rate_at(msk(TUE, hour)) for hour in (16, 17))
    assert before is not None and after is not None
    assert capitalization / (before.rate * divisor) == pytest.approx(1138.98, abs=0.005)
    assert capitalization / (after.rate * divisor) == pytest.approx(911.18, abs=0.005)
    assert after.trace() == {
        "fx_rate": 100.0,
        "fx_source": "cbr:2026-11-25",
        "fx_effective": "2026-11-24T14:00:00.000Z",
    }


# --- staleness ----------------------------------------------------------------------------


def test_cbr_rate_over_a_weekend_is_fresh_but_over_a_long_break_stale() -> None:
    schedule = FxSchedule()
    schedule.add(CbrRule().step_for_publication(91.0, SAT, msk(FRI, 15, 30)))
    status = schedule.status(msk(MON, 16, 59))
    assert status.state is FxState.OK and not status.stale and status.reason is None
    assert status.rate == 91.0 and status.age == timedelta(hours=71, minutes=59)
    thursday_rate = FxSchedule()
    thursday_rate.add(CbrRule().step_for_publication(91.0, FRI, msk(date(2026, 11, 19), 15, 30)))
    assert thursday_rate.status(msk(MON, 17)).state is FxState.OK  # exactly 96 h
    stale = thursday_rate.status(msk(TUE, 10))
    assert stale.stale and stale.rate == 91.0
    assert stale.reason == (
        "cbr:2026-11-20 in force since 2026-11-19T14:00:00.000Z, 113.0 h old, more than 96.0 h"
    )
    assert stale.as_dict()["state"] == "stale"
    assert stale.as_dict()["age_seconds"] == 113 * 3600
    tight = FxLimits(cbr=timedelta(hours=24))
    assert schedule.status(msk(MON, 16, 59), tight).stale
    assert schedule.status(msk(SAT, 12), max_age=timedelta(hours=1)).stale


def test_live_rate_goes_stale_after_five_minutes() -> None:
    schedule = FxSchedule()
    tick = LiveRule().step_for_tick(91.25, msk(MON, 12))
    assert tick is not None
    schedule.add(tick)
    assert not schedule.status(msk(MON, 12, 4, 59)).stale
    stale = schedule.status(msk(MON, 12, 5, 1))
    assert stale.stale and stale.reason is not None and "5.0 min" in stale.reason


def test_missing_fx_is_said_out_loud() -> None:
    empty = FxSchedule().status(msk(MON, 12))
    assert empty.missing and empty.rate is None and empty.reason == "no FX rate received"
    assert empty.as_dict()["state"] == "missing" and empty.as_dict()["source"] is None
    schedule = FxSchedule()
    schedule.add(CbrRule().step_for_publication(93.0, TUE, msk(MON, 15, 30)))
    early = schedule.status(msk(MON, 12))
    assert early.missing
    assert early.reason == "no FX rate in force before 2026-11-23T14:00:00.000Z"
    assert early.next_step is not None and early.as_dict()["next"]["rate"] == 93.0


def test_a_configured_constant_never_goes_stale_unless_asked() -> None:
    schedule = FxSchedule()
    schedule.add(constant_step(80.0))
    status = schedule.status(msk(MON, 12))
    assert status.state is FxState.OK and status.step is not None
    assert status.step.source == "config" and status.max_age is None
    assert schedule.status(msk(MON, 12), FxLimits(other=timedelta(days=1))).stale


# --- the live rule ------------------------------------------------------------------------


def test_every_live_tick_is_a_step_at_its_time() -> None:
    rule = LiveRule()
    schedule = FxSchedule()
    rates = [90.10, 90.12, 90.08]
    for offset, rate in enumerate(rates):
        step = rule.step_for_tick(rate, msk(MON, 11, 0, offset))
        assert step is not None and step.source == "exchange:USD000UTSTOM"
        schedule.add(step, now=msk(MON, 11, 0, offset))
    assert [schedule.rate_at(msk(MON, 11, 0, s)).rate for s in range(3)] == rates  # type: ignore[union-attr]


def test_live_rule_ignores_or_refuses_bad_ticks() -> None:
    moment = msk(MON, 11)
    for bad in (0.0, -1.0, math.nan, math.inf):
        assert LiveRule().step_for_tick(bad, moment) is None
        with pytest.raises(FxRejected, match="rate"):
            LiveRule(ignore_invalid=False).step_for_tick(bad, moment)
    assert LiveRule(instrument="CNYRUB_TOM").step_for_tick(12.5, moment).source == (  # type: ignore[union-attr]
        "exchange:CNYRUB_TOM"
    )
    with pytest.raises(ConfigError, match="instrument"):
        LiveRule(instrument="bad instrument")


# --- FX updates from the API --------------------------------------------------------------

NOW = msk(MON, 15, 45)


def test_parse_a_cbr_update() -> None:
    step = parse_fx_update({"rate": "92.75", "rate_date": "2026-11-24"}, now=NOW)
    assert step == FxStep(92.75, msk(MON, 17), "cbr:2026-11-24", published_at=NOW)
    late = parse_fx_update(
        {"rate": 92.75, "rate_date": "2026-11-24", "published_at": "2026-11-23T17:20:00+03:00"},
        now=msk(MON, 17, 21),
    )
    assert late.effective_from == msk(MON, 17, 20)


def test_parse_an_explicit_or_immediate_update() -> None:
    timed = parse_fx_update(
        {"rate": 90.0, "time": "2024-06-11T07:00:00Z", "source": "exchange:USD000UTSTOM"}, now=NOW
    )
    assert timed.effective_from == datetime(2024, 6, 11, 7, tzinfo=UTC)
    assert timed.source == "exchange:USD000UTSTOM" and timed.published_at is None
    immediate = parse_fx_update({"rate": 90}, now=NOW)
    assert immediate == FxStep(90.0, NOW, "api")


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ([1, 2], "fx", "must be a JSON object"),
        ({}, "rate", "missing"),
        ({"rate": None}, "rate", "missing"),
        ({"rate": "abc"}, "rate", "must be a number"),
        ({"rate": -3}, "rate", "positive"),
        ({"rate": True}, "rate", "must be a number"),
        ({"rate": "nan"}, "rate", "positive finite"),
        ({"rate": 90, "rate_date": "24.11.2026"}, "rate_date", "YYYY-MM-DD"),
        ({"rate": 90, "rate_date": 20261124}, "rate_date", "YYYY-MM-DD"),
        ({"rate": 90, "published_at": "yesterday"}, "published_at", "ISO 8601"),
        ({"rate": 90, "published_at": "2026-11-23T13:00:00Z"}, "published_at", "future"),
        ({"rate": 90, "time": []}, "time", "ISO 8601"),
        ({"rate": 90, "rate_date": "2026-11-24", "time": 0}, "time", "not both"),
        ({"rate": 90, "rate_dat": "2026-11-24"}, "rate_dat", "unknown field"),
        ({"rate": 90, "rate_date": "2026-11-24", "source": "cbr:x"}, "source", "cbr:2026-11-24"),
        ({"rate": 90, "source": "not a token"}, "source", "plain token"),
        ({"rate": 90, "rate_date": "2027-01-24"}, "rate_date", "more than 10"),
    ],
)
def test_parse_errors_name_the_field(raw: object, field: str, reason: str) -> None:
    with pytest.raises(FxRejected) as caught:
        parse_fx_update(raw, now=NOW)
    assert caught.value.field == field
    assert reason in caught.value.reason
    # The API's existing handling of refused ticks covers FX updates too.
    assert isinstance(caught.value, TickRejected) and isinstance(caught.value, IndexTickerError)


# --- configuration ------------------------------------------------------------------------


def test_rule_is_chosen_by_name() -> None:
    default = parse_fx_settings({})
    assert isinstance(default.rule, CbrRule) and default.rule.switch_time == time(17, 0)
    assert default.limits == FxLimits()
    cbr = parse_fx_settings(
        {
            "rule": "cbr",
            "switch_time": "17:30",
            "utc_offset_hours": 3,
            "holidays": ["2026-11-23"],
            "cbr_max_age_hours": 120,
            "history": 4,
        }
    )
    assert isinstance(cbr.rule, CbrRule) and cbr.rule.switch_time == time(17, 30)
    assert cbr.rule.holidays == frozenset({MON})
    assert cbr.limits.cbr == timedelta(hours=120)
    assert cbr.new_schedule().history == 4
    live = parse_fx_settings({"rule": "live", "live_max_age_seconds": 60, "ignore_invalid": False})
    assert isinstance(live.rule, LiveRule) and not live.rule.ignore_invalid
    assert live.limits.exchange == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("table", "key", "reason"),
    [
        ({"rule": "ecb"}, "fx.rule", "must be one of"),
        ({"rule": "cbr", "instrument": "X"}, "fx.instrument", "only for rule 'live'"),
        ({"rule": "live", "switch_time": "17:00"}, "fx.switch_time", "only for rule 'cbr'"),
        ({"swich_time": "17:00"}, "fx.swich_time", "unknown key"),
        ({"switch_time": "5pm"}, "fx.switch_time", "HH:MM"),
        ({"utc_offset_hours": "3"}, "fx.utc_offset_hours", "number"),
        ({"holidays": ["2026-13-01"]}, "fx.holidays", "YYYY-MM-DD"),
        ({"cbr_max_age_hours": 0}, "fx.cbr_max_age_hours", "positive"),
        ({"history": -2}, "fx.history", "0..10000"),
        ({"max_lead_days": "ten"}, "fx.max_lead_days", "1..366"),
    ],
)
def test_bad_settings_name_the_key(table: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fx_settings(table, source="service.toml")
    assert caught.value.key == key and reason in caught.value.reason
    assert caught.value.source == "service.toml"


# --- properties ---------------------------------------------------------------------------

BASE = datetime(2026, 11, 23, 9, tzinfo=UTC)
offsets = st.integers(min_value=0, max_value=200)
rates = st.floats(min_value=1.0, max_value=200.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    adds=st.lists(st.tuples(offsets, rates, st.sampled_from(["api", "config", "exchange:X"]))),
    probes=st.lists(st.integers(min_value=-5, max_value=205), min_size=1, max_size=20),
)
def test_rate_at_is_the_latest_step_not_after_the_moment(
    adds: list[tuple[int, float, str]], probes: list[int]
) -> None:
    schedule = FxSchedule(history=10_000)
    added: list[FxStep] = []
    for offset, rate, source in adds:
        step = FxStep(rate, BASE + timedelta(seconds=offset), source)
        schedule.add(step)
        added.append(step)
    for probe in probes:
        moment = BASE + timedelta(seconds=probe)
        candidates = [s for s in added if s.effective_from <= moment]
        if not candidates:
            assert schedule.rate_at(moment) is None
            continue
        latest = max(s.effective_from for s in candidates)
        # Among steps at the same moment, the one added last.
        expected = [s for s in candidates if s.effective_from == latest][-1]
        assert schedule.rate_at(moment) == expected


@settings(max_examples=200, deadline=None)
@given(
    adds=st.lists(st.tuples(offsets, rates, st.sampled_from(["api", "exchange:X"])), max_size=60),
    clock_steps=st.lists(st.integers(min_value=0, max_value=30), min_size=60, max_size=60),
    history=st.integers(min_value=0, max_value=4),
    max_future=st.integers(min_value=0, max_value=3),
)
def test_bounded_schedule_agrees_with_the_unbounded_one_after_its_horizon(
    adds: list[tuple[int, float, str]], clock_steps: list[int], history: int, max_future: int
) -> None:
    bounded = FxSchedule(history=history, max_future=max_future)
    accepted: list[FxStep] = []
    clock = 0
    for (offset, rate, source), forward in zip(adds, clock_steps, strict=False):
        clock += forward
        step = FxStep(rate, BASE + timedelta(seconds=offset), source)
        outcome = bounded.add(step, now=BASE + timedelta(seconds=clock))
        if outcome in (AddOutcome.ADDED, AddOutcome.REPLACED):
            accepted.append(step)
        assert len(bounded) <= history + 1 + max_future
    reference = FxSchedule(history=10_000)
    for step in accepted:
        reference.add(step)
    start = bounded.horizon or BASE - timedelta(seconds=1)
    for second in range(-1, 260):
        moment = BASE + timedelta(seconds=second)
        if moment >= start:
            assert bounded.rate_at(moment) == reference.rate_at(moment)


cbr_publications = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=6),  # rate date: days after MON
        st.sampled_from([91.0, 92.0]),
        st.integers(min_value=0, max_value=7 * 24 * 4),  # arrival, quarter-hours after MON 00:00
    ),
    max_size=6,
    unique_by=lambda item: (item[0], item[1]),
)


@settings(max_examples=200, deadline=None)
@given(publications=cbr_publications, data=st.data())
def test_cbr_steps_end_the_same_whatever_the_arrival_order(
    publications: list[tuple[int, float, int]], data: st.DataObject
) -> None:
    rule = CbrRule(max_lead_days=366)
    steps = []
    for days, rate, quarters in publications:
        arrival = msk(MON, 0) + timedelta(minutes=15 * quarters)
        steps.append(rule.step_for_publication(rate, MON + timedelta(days=days), arrival))
    # Two publications landing on the same moment would be a correction race: out of scope here.
    if len({s.effective_from for s in steps}) < len(steps):
        return
    order = data.draw(st.permutations(steps))
    forward, shuffled = FxSchedule(), FxSchedule()
    for step in steps:
        forward.add(step)
    for step in order:
        shuffled.add(step)
    assert forward.steps == shuffled.steps
    # Along time, CBR rate dates never go back.
    dates = [s.source for s in forward.steps]
    assert dates == sorted(dates)
    for before, after in itertools.pairwise(forward.steps):
        assert before.effective_from < after.effective_from
