"""Base changes: divisor continuity worked by hand, official against computed divisors, USD
indices, missing prices, and the schedule of pending changes."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.errors import ConfigError
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.review import (
    BaseChange,
    BaseChangeError,
    BaseSchedule,
    DivisorPolicy,
    apply_base_change,
    continuity_divisor,
    effective_moment,
    parse_policy,
)

# Old base: three lines of 1 000 roubles of capitalization each at these prices.
OLD = IndexBase(
    (
        Constituent("AAAA", "AAAA", 100.0, reference_price=10.0),
        Constituent("BBBB", "BBBB", 200.0, reference_price=5.0),
        Constituent("CCCC", "CCCC", 50.0, reference_price=20.0),
    ),
    source="old.csv",
)
# New base: CCCC replaced by DDDD, 80 shares at 25 roubles = 2 000 roubles.
NEW = IndexBase(
    (
        Constituent("AAAA", "AAAA", 100.0),
        Constituent("BBBB", "BBBB", 200.0),
        Constituent("DDDD", "DDDD", 80.0, reference_price=24.0),
    ),
    source="new.csv",
)
PRICES = {"AAAA": 10.0, "BBBB": 5.0, "CCCC": 20.0, "DDDD": 25.0}
OLD_MC = 3000.0  # 100·10 + 200·5 + 50·20
NEW_MC = 4000.0  # 100·10 + 200·5 + 80·25
IMOEX = IndexSpec("IMOEX", "RUB", 30.0)  # 3 000 / 30 = 100 points
RTSI = IndexSpec("RTSI", "USD", 0.5)  # 3 000 / (80 · 0.5) = 75 points
FX = 80.0
REVIEW = datetime(2023, 3, 16, 21, 0, tzinfo=UTC)  # 2023-03-17 00:00 Moscow time


def change(
    official: dict[str, float] | None = None,
    *,
    base: IndexBase = NEW,
    effective: datetime = REVIEW,
    definition: str = "IMOEX",
    reason: str = "quarterly review",
) -> BaseChange:
    return BaseChange(definition, base, effective, reason, official or {})


def test_continuity_divisor_by_hand() -> None:
    assert continuity_divisor(30.0, OLD_MC, NEW_MC) == 40.0
    assert continuity_divisor(4.0e9, 2.0e12, 1.0e12) == 2.0e9


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_continuity_divisor_rejects_non_positive_inputs(bad: float) -> None:
    for arguments, key in (
        ((bad, OLD_MC, NEW_MC), "old_divisor"),
        ((30.0, bad, NEW_MC), "old_capitalization"),
        ((30.0, OLD_MC, bad), "new_capitalization"),
    ):
        with pytest.raises(ConfigError) as caught:
            continuity_divisor(*arguments)
        assert caught.value.key == key


def test_replacing_a_line_rescales_the_divisor_so_the_value_is_unchanged() -> None:
    outcome = apply_base_change(change(), PRICES, OLD_MC, [IMOEX], policy="continuity")
    assert outcome.old_capitalization == OLD_MC
    assert outcome.new_capitalization == NEW_MC
    assert dict(outcome.prices) == {"AAAA": 10.0, "BBBB": 5.0, "DDDD": 25.0}
    assert outcome.from_reference == ()
    decision = outcome.decisions["IMOEX"]
    assert decision.computed == pytest.approx(40.0, rel=1e-15)
    assert decision.adopted == decision.computed
    assert decision.official is None and decision.difference_ppm is None
    assert decision.value_before == 100.0
    assert decision.value_after == pytest.approx(100.0, rel=1e-12)
    assert abs(decision.jump) <= 1e-12 * 100.0


def test_official_divisor_is_adopted_and_its_difference_shown() -> None:
    official = 40.0004  # 10 ppm above the continuity divisor of 40
    outcome = apply_base_change(change({"IMOEX": official}), PRICES, OLD_MC, [IMOEX])
    decision = outcome.decisions["IMOEX"]
    assert decision.policy is DivisorPolicy.OFFICIAL
    assert decision.computed == pytest.approx(40.0, rel=1e-15)
    assert decision.official == official and decision.adopted == official
    assert decision.difference_ppm == pytest.approx(10.0, rel=1e-9)
    # 4 000 / 40.0004 = 99.99900001: the index steps down by the difference.
    assert decision.value_after == pytest.approx(99.99900001, rel=1e-12)
    assert decision.jump == pytest.approx(-0.00099999, rel=1e-6)
    assert decision.as_dict()["difference_ppm"] == decision.difference_ppm


def test_continuity_policy_keeps_the_computed_divisor_and_still_reports_the_official() -> None:
    outcome = apply_base_change(
        change({"IMOEX": 40.0004}), PRICES, OLD_MC, [IMOEX], policy=DivisorPolicy.CONTINUITY
    )
    decision = outcome.decisions["IMOEX"]
    assert decision.adopted == decision.computed
    assert decision.official == 40.0004
    assert decision.difference_ppm == pytest.approx(10.0, rel=1e-9)
    assert decision.jump == pytest.approx(0.0, abs=1e-12)


def test_usd_index_takes_the_same_ratio() -> None:
    outcome = apply_base_change(change(), PRICES, OLD_MC, [IMOEX, RTSI], fx_rate=FX)
    rtsi = outcome.decisions["RTSI"]
    imoex = outcome.decisions["IMOEX"]
    assert rtsi.currency == "USD"
    assert rtsi.computed == pytest.approx(0.5 * 4.0 / 3.0, rel=1e-15)
    assert rtsi.computed / rtsi.old_divisor == pytest.approx(
        imoex.computed / imoex.old_divisor, rel=1e-15
    )
    assert rtsi.value_before == 75.0
    assert rtsi.value_after == pytest.approx(75.0, rel=1e-12)


def test_usd_index_needs_a_rate_for_its_values() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_base_change(change(), PRICES, OLD_MC, [IMOEX, RTSI])
    assert caught.value.key == "fx_rate"


def test_new_line_without_price_takes_its_reference_price() -> None:
    prices = {"AAAA": 10.0, "BBBB": 5.0}  # DDDD has not traded yet
    outcome = apply_base_change(change(), prices, OLD_MC, [IMOEX])
    assert outcome.from_reference == ("DDDD",)
    assert outcome.prices["DDDD"] == 24.0
    assert outcome.new_capitalization == 1000.0 + 1000.0 + 80.0 * 24.0
    assert outcome.decisions["IMOEX"].computed == pytest.approx(30.0 * 3920.0 / 3000.0)


def test_new_line_without_any_price_is_an_error_naming_it() -> None:
    base = IndexBase((*NEW.constituents, Constituent("NEWW", "NEWW", 10.0)), source="new.csv")
    with pytest.raises(BaseChangeError) as caught:
        apply_base_change(change(base=base), PRICES, OLD_MC, [IMOEX])
    assert (caught.value.field, caught.value.value) == ("secid", "NEWW")
    assert "NEWW" in str(caught.value) and "waprice" in str(caught.value)


@pytest.mark.parametrize("bad", [0.0, -3.0, math.nan])
def test_a_bad_price_of_a_new_line_is_an_error_naming_it(bad: float) -> None:
    with pytest.raises(BaseChangeError) as caught:
        apply_base_change(change(), {**PRICES, "BBBB": bad}, OLD_MC, [IMOEX])
    assert caught.value.value == "BBBB"


def test_official_divisor_of_an_index_not_calculated_is_an_error() -> None:
    with pytest.raises(BaseChangeError) as caught:
        apply_base_change(change({"MOEXBC": 1.0}), PRICES, OLD_MC, [IMOEX])
    assert (caught.value.field, caught.value.value) == ("official_divisors", "MOEXBC")


def test_policy_names() -> None:
    assert parse_policy("official") is DivisorPolicy.OFFICIAL
    assert parse_policy("continuity") is DivisorPolicy.CONTINUITY
    with pytest.raises(ConfigError) as caught:
        parse_policy("latest", "review.divisor_policy")
    assert caught.value.key == "review.divisor_policy" and "continuity" in caught.value.reason
    with pytest.raises(ConfigError):
        apply_base_change(change(), PRICES, OLD_MC, [IMOEX], policy="both")


def test_effective_moment_is_the_start_of_the_exchange_day_in_utc() -> None:
    assert effective_moment(date(2023, 3, 17)) == REVIEW
    assert effective_moment(date(2023, 3, 17)).tzinfo is UTC
    assert effective_moment(date(2023, 3, 17), timedelta(hours=5), time(7, 0)) == datetime(
        2023, 3, 17, 2, 0, tzinfo=UTC
    )


def test_base_change_validates_and_stores_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    moved = change(effective=datetime(2023, 3, 17, 0, 0, tzinfo=moscow))
    assert moved.effective == REVIEW and moved.effective.tzinfo is UTC
    assert moved.as_dict()["effective"] == "2023-03-16T21:00:00.000Z"
    assert moved.as_dict()["effective_local"] == "2023-03-17T00:00:00+03:00"
    with pytest.raises(ConfigError) as caught:
        change(effective=datetime(2023, 3, 17))
    assert caught.value.key == "effective" and caught.value.source == "new.csv"
    with pytest.raises(ConfigError) as caught:
        change({"IMOEX": -1.0})
    assert caught.value.key == "official_divisors.IMOEX"
    with pytest.raises(ConfigError) as caught:
        change(reason=" ")
    assert caught.value.key == "reason"
    with pytest.raises(ConfigError) as caught:
        change(base=IndexBase(()))
    assert caught.value.key == "base"


def test_official_divisors_cannot_be_changed_afterwards() -> None:
    given_divisors = {"IMOEX": 40.0}
    scheduled = change(given_divisors)
    given_divisors["IMOEX"] = 1.0
    assert scheduled.official_divisors["IMOEX"] == 40.0
    with pytest.raises(TypeError):
        scheduled.official_divisors["IMOEX"] = 2.0  # type: ignore[index]


def test_schedule_orders_changes_and_reports_what_is_due() -> None:
    june = change(effective=effective_moment(date(2023, 6, 16)), reason="quarterly review")
    march = change(effective=REVIEW)
    shares_issued = change(
        effective=effective_moment(date(2023, 4, 5)), reason="extraordinary: shares issued"
    )
    schedule = BaseSchedule([june, march])
    schedule.add(shares_issued)
    assert schedule.pending == (march, shares_issued, june)
    assert schedule.next_change() is march
    assert schedule.due(REVIEW - timedelta(seconds=1)) == []
    assert schedule.due(REVIEW) == [march]
    assert schedule.due(datetime(2023, 5, 1, tzinfo=UTC)) == [march, shares_issued]
    assert len(schedule) == 3  # due() only looks

    assert schedule.pop_due(datetime(2023, 5, 1, tzinfo=UTC)) == [march, shares_issued]
    assert list(schedule.pending) == [june]
    view = schedule.as_dict()
    assert view["current"]["IMOEX"]["reason"] == "extraordinary: shares issued"
    assert [c["effective"] for c in view["scheduled"]] == ["2023-06-15T21:00:00.000Z"]
    assert view["scheduled"][0]["base"] == {
        "source": "new.csv",
        "lines": 3,
        "secids": ["AAAA", "BBBB", "DDDD"],
    }


def test_a_change_in_the_past_is_due_at_once() -> None:
    schedule = BaseSchedule()
    schedule.add(change(effective=datetime(2001, 1, 1, tzinfo=UTC)))
    assert len(schedule.due(datetime(2023, 1, 1, tzinfo=UTC))) == 1


def test_two_changes_at_one_moment_for_one_definition_are_an_error() -> None:
    schedule = BaseSchedule([change()])
    with pytest.raises(ConfigError) as caught:
        schedule.add(change(reason="extraordinary: free float"))
    assert caught.value.key == "effective" and "2023-03-16T21:00:00.000Z" in caught.value.reason
    family = change(definition="MOEXBC")
    schedule.add(family)  # another definition may change at the same moment
    assert schedule.due(REVIEW) == [schedule.pending[0], family]
    assert schedule.next_change("MOEXBC") is family
    assert schedule.next_change("MOEX10") is None


def test_due_needs_an_aware_moment() -> None:
    with pytest.raises(ConfigError):
        BaseSchedule([change()]).due(datetime(2023, 3, 17))


prices_strategy = st.floats(min_value=0.01, max_value=1e5, allow_nan=False)
shares_strategy = st.floats(min_value=1.0, max_value=1e10, allow_nan=False)


@given(
    old_shares=st.lists(shares_strategy, min_size=1, max_size=8),
    new_shares=st.lists(shares_strategy, min_size=1, max_size=8),
    prices=st.lists(prices_strategy, min_size=8, max_size=8),
    divisor=st.floats(min_value=1.0, max_value=1e10),
)
def test_continuity_holds_for_any_base_and_prices(
    old_shares: list[float], new_shares: list[float], prices: list[float], divisor: float
) -> None:
    secids = [f"L{i:03d}" for i in range(8)]
    current = dict(zip(secids, prices, strict=True))
    old_mc = math.fsum(current[s] * k for s, k in zip(secids, old_shares, strict=False))
    base = IndexBase(tuple(Constituent(s, s, k) for s, k in zip(secids, new_shares, strict=False)))
    outcome = apply_base_change(
        change(base=base), current, old_mc, [IndexSpec("IMOEX", "RUB", divisor)]
    )
    decision = outcome.decisions["IMOEX"]
    assert decision.value_after == pytest.approx(decision.value_before, rel=1e-12)
