"""The price-deviation guard: fat fingers are dropped, genuine gaps go through once confirmed,
and every tick is accounted for."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.errors import ConfigError
from streaming.methodology.guard import GuardCounters, GuardDecision, PriceGuard, Verdict


@dataclass
class Line:
    """One share line run through a guard the way an engine would: the reference is the last
    applied price, applied ticks are recorded with the decision that applied them."""

    guard: PriceGuard[int]
    reference: float = 100.0
    applied: list[tuple[float, int, int]] = field(default_factory=list)  # price, tick no., group
    discarded: list[int] = field(default_factory=list)
    groups: dict[int, Verdict] = field(default_factory=dict)
    seen: int = 0

    def feed(self, price: float, secid: str = "SBER") -> GuardDecision[int]:
        decision = self.guard.check(secid, price, self.reference, self.seen)
        group = len(self.groups)
        self.groups[group] = decision.verdict
        for tick in decision.applied:
            assert tick.item is not None
            self.applied.append((tick.price, tick.item, group))
            self.reference = tick.price
        self.discarded.extend(t.item for t in decision.discarded if t.item is not None)
        self.seen += 1
        return decision


def prices(decision: GuardDecision[int]) -> list[float]:
    return [tick.price for tick in decision.applied]


def test_a_fat_finger_is_held_then_discarded() -> None:
    line = Line(PriceGuard())
    assert line.feed(100.5).verdict is Verdict.ACCEPT
    held = line.feed(1005.0)
    assert held.verdict is Verdict.HOLD
    assert held.applied == () and "held" in held.reason
    assert [t.price for t in line.guard.held()["SBER"]] == [1005.0]
    back = line.feed(100.7)
    assert back.verdict is Verdict.DISCARD
    assert prices(back) == [100.7]
    assert [t.price for t in back.discarded] == [1005.0]
    assert back.discarded[0].deviation == pytest.approx(1005.0 / 100.5 - 1)
    assert "not confirmed" in back.reason
    assert line.guard.held() == {}
    assert [p for p, _, _ in line.applied] == [100.5, 100.7]
    assert line.guard.counters == GuardCounters(accepted=2, held=1, released=0, discarded=1)


def test_a_genuine_gap_is_confirmed_and_released_in_order() -> None:
    line = Line(PriceGuard())
    assert line.feed(88.0).verdict is Verdict.HOLD  # -12 %: a gap down on news
    released = line.feed(87.6)
    assert released.verdict is Verdict.RELEASE
    assert prices(released) == [88.0, 87.6]
    assert [t.item for t in released.applied] == [0, 1]
    assert line.reference == 87.6
    assert line.feed(87.9).verdict is Verdict.ACCEPT  # the new level is the reference now
    assert line.guard.counters == GuardCounters(accepted=1, held=2, released=2, discarded=0)


def test_several_confirmations_are_waited_for() -> None:
    line = Line(PriceGuard(threshold=0.10, confirmations=3))
    assert line.feed(115.0).verdict is Verdict.HOLD
    second = line.feed(114.0)
    assert second.verdict is Verdict.HOLD and "confirmation 1 of 3" in second.reason
    assert line.feed(116.0).verdict is Verdict.HOLD
    assert [t.price for t in line.guard.held()["SBER"]] == [115.0, 114.0, 116.0]
    last = line.feed(115.5)
    assert last.verdict is Verdict.RELEASE
    assert prices(last) == [115.0, 114.0, 116.0, 115.5]


def test_confirmations_interrupted_by_a_return_discard_them_all() -> None:
    line = Line(PriceGuard(threshold=0.10, confirmations=2))
    line.feed(120.0)
    line.feed(119.0)
    back = line.feed(100.2)
    assert back.verdict is Verdict.DISCARD
    assert [t.price for t in back.discarded] == [120.0, 119.0]
    assert prices(back) == [100.2]


def test_a_second_different_outlier_supersedes_the_first() -> None:
    line = Line(PriceGuard())
    line.feed(150.0)
    other = line.feed(60.0)  # far from both 100 and 150
    assert other.verdict is Verdict.HOLD
    assert [t.price for t in other.discarded] == [150.0]
    assert "superseding" in other.reason
    assert prices(line.feed(60.5)) == [60.0, 60.5]
    assert line.discarded == [0]


def test_exactly_the_threshold_is_within_it() -> None:
    guard: PriceGuard[None] = PriceGuard(threshold=0.10)
    assert guard.check("SBER", 110.0, 100.0).verdict is Verdict.ACCEPT
    assert guard.check("SBER", 90.0, 100.0).verdict is Verdict.ACCEPT
    assert guard.check("SBER", 110.01, 100.0).verdict is Verdict.HOLD


def test_lines_are_guarded_independently() -> None:
    guard: PriceGuard[str] = PriceGuard()
    assert guard.check("SBER", 200.0, 100.0, "a").verdict is Verdict.HOLD
    assert guard.check("GAZP", 101.0, 100.0, "b").verdict is Verdict.ACCEPT
    assert guard.check("GAZP", 50.0, 100.0, "c").verdict is Verdict.HOLD
    assert set(guard.held()) == {"SBER", "GAZP"}
    released = guard.check("SBER", 199.0, 100.0, "d")
    assert [t.item for t in released.applied] == ["a", "d"]
    assert set(guard.held()) == {"GAZP"}


@pytest.mark.parametrize("threshold", [0, 0.0, None])
def test_threshold_zero_or_none_turns_the_guard_off(threshold: float | None) -> None:
    guard: PriceGuard[None] = PriceGuard(threshold=threshold)
    assert not guard.enabled
    for price in (1000.0, 1.0, 100.0):
        assert guard.check("SBER", price, 100.0).verdict is Verdict.ACCEPT
    assert guard.counters.accepted == 3


def test_no_reference_price_accepts_the_first_trade() -> None:
    guard: PriceGuard[None] = PriceGuard()
    assert guard.check("SBER", 123.0, None).verdict is Verdict.ACCEPT
    guard.check("SBER", 500.0, 123.0)
    dropped = guard.check("SBER", 480.0, None)
    assert dropped.verdict is Verdict.DISCARD
    assert [t.price for t in dropped.discarded] == [500.0]


def test_held_ticks_can_be_discarded_at_the_end_of_the_day() -> None:
    guard: PriceGuard[None] = PriceGuard()
    guard.check("SBER", 500.0, 100.0)
    guard.check("GAZP", 10.0, 100.0)
    snapshot = guard.held()
    with pytest.raises(TypeError):
        snapshot["LKOH"] = ()  # type: ignore[index]
    assert [t.price for t in guard.discard_held("SBER")] == [500.0]
    assert [t.secid for t in guard.discard_held()] == ["GAZP"]
    assert guard.discard_held() == ()
    assert guard.counters == GuardCounters(accepted=0, held=2, released=0, discarded=2)


@pytest.mark.parametrize(
    ("kwargs", "key", "reason"),
    [
        ({"threshold": -0.1}, "guard.threshold", "from 0"),
        ({"threshold": 10}, "guard.threshold", "below 1"),
        ({"threshold": float("nan")}, "guard.threshold", "finite"),
        ({"threshold": True}, "guard.threshold", "finite number"),
        ({"confirmations": 0}, "guard.confirmations", "at least 1"),
        ({"confirmations": 1.5}, "guard.confirmations", "whole"),
        ({"confirm_tolerance": 0.095}, "guard.confirm_tolerance", "cannot confirm"),
        ({"confirm_tolerance": 0}, "guard.confirm_tolerance", "above 0"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        PriceGuard(**kwargs, source="settings.toml")  # type: ignore[arg-type]
    assert caught.value.key == key
    assert caught.value.source == "settings.toml"


def test_from_mapping() -> None:
    guard: PriceGuard[None] = PriceGuard.from_mapping(
        {"threshold": 0.2, "confirmations": 2, "confirm_tolerance": 0.05}, "settings.toml"
    )
    assert (guard.threshold, guard.confirmations, guard.confirm_tolerance) == (0.2, 2, 0.05)
    assert PriceGuard.from_mapping({}).threshold == 0.10
    assert PriceGuard.from_mapping({}).confirm_tolerance == 0.05
    assert not PriceGuard.from_mapping({"threshold": False}).enabled
    with pytest.raises(ConfigError) as caught:
        PriceGuard.from_mapping({"limit": 0.1}, "settings.toml")
    assert caught.value.key == "guard.limit"


# A stream: mostly small moves, some fat fingers (one-off prices), some lasting level changes.
steps = st.lists(
    st.tuples(
        st.sampled_from(["walk", "walk", "walk", "fat", "level"]),
        st.floats(min_value=-0.03, max_value=0.03),
        st.floats(min_value=0.2, max_value=5.0),
    ),
    max_size=120,
)


def stream(raw: list[tuple[str, float, float]]) -> list[float]:
    level, out = 100.0, []
    for kind, move, factor in raw:
        if kind == "fat":
            out.append(level * factor)
            continue
        level *= factor if kind == "level" else 1 + move
        out.append(level)
    return out


def check_applied(line: Line, threshold: float, tolerance: float, confirmations: int) -> None:
    """Every jump beyond the threshold in the applied prices heads a release of
    `confirmations` + 1 ticks that all sit within the tolerance of it."""
    previous = 100.0
    for n, (price, _, group) in enumerate(line.applied):
        if abs(price / previous - 1) > threshold + 1e-12:
            assert line.groups[group] is Verdict.RELEASE
            members = [p for p, _, g in line.applied if g == group]
            assert len(members) == confirmations + 1
            head = members[0]
            assert all(abs(p / head - 1) <= tolerance + 1e-12 for p in members)
            if tolerance * 2 / (1 - tolerance) < threshold:
                # Tight tolerance: only a head can jump, and what follows stays at its level.
                assert price == head
                assert abs(line.applied[n + 1][0] / price - 1) <= tolerance + 1e-12
        previous = price


def check_accounted(line: Line) -> None:
    """Each tick is applied, discarded or still held, exactly once, and in arrival order."""
    applied = [item for _, item, _ in line.applied]
    assert applied == sorted(applied)
    held = [t.item for ticks in line.guard.held().values() for t in ticks if t.item is not None]
    assert sorted(applied + line.discarded + held) == list(range(line.seen))
    counts = line.guard.counters
    assert counts.accepted + counts.held == line.seen
    assert counts.held == counts.released + counts.discarded + len(held)


@settings(max_examples=300, deadline=None)
@given(
    raw=steps,
    confirmations=st.integers(min_value=1, max_value=3),
    tolerance=st.sampled_from([None, 0.02, 0.08]),
)
def test_no_isolated_outlier_is_ever_applied(
    raw: list[tuple[str, float, float]], confirmations: int, tolerance: float | None
) -> None:
    line = Line(
        PriceGuard(threshold=0.10, confirmations=confirmations, confirm_tolerance=tolerance)
    )
    for price in stream(raw):
        line.feed(price)
    check_applied(line, 0.10, line.guard.confirm_tolerance, confirmations)
    check_accounted(line)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=10_000.0), max_size=80))
def test_arbitrary_prices_keep_the_guarantee(raw: list[float]) -> None:
    line = Line(PriceGuard())
    for price in raw:
        line.feed(price)
    check_applied(line, 0.10, 0.05, 1)
    check_accounted(line)


def test_a_single_spike_never_reaches_the_index() -> None:
    line = Line(PriceGuard())
    for price in [100.0, 100.2, 140.0, 100.1, 100.3, 60.0, 100.2]:
        line.feed(price)
    assert [p for p, _, _ in line.applied] == [100.0, 100.2, 100.1, 100.3, 100.2]
    assert line.discarded == [2, 5]
