"""The engine under the exchange timetable, the price guard, base changes and FX steps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from factories import small_definition

from streaming.engine import Engine
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.calculator import IndexSpec
from streaming.methodology.definition import Family, IndexDefinition
from streaming.methodology.fx import FxStep
from streaming.methodology.guard import PriceGuard
from streaming.methodology.phases import AuctionPolicy, Phase
from streaming.methodology.review import BaseChange, DivisorPolicy
from streaming.methodology.timetable import ExchangeTimetable
from streaming.store.memory import MemoryStore
from streaming.ticks import Tick

FRIDAY = date(2026, 11, 20)


def msk(hour: int, minute: int = 0, second: int = 0, day: date = FRIDAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC) - timedelta(
        hours=3
    )


def extended_definition() -> IndexDefinition:
    """IMOEX2-like: line A only, every session, MC / 1."""
    return dataclasses.replace(
        small_definition(),
        name="all-sessions",
        base=IndexBase((Constituent("A", "A", 500.0, reference_price=10.0),)),
        indices=(IndexSpec("IMOEX2", "RUB", 1.0),),
        profile="extended",
    )


def engine_at(
    moment: datetime,
    *definitions: IndexDefinition,
    policy: AuctionPolicy = AuctionPolicy.PAUSE,
    cadence: int = 15,
    store: MemoryStore | None = None,
) -> tuple[Engine, list[datetime]]:
    clock = [moment]
    family = Family("test", definitions or (small_definition(),), cadence, 90.0)
    engine = Engine(
        family,
        store or MemoryStore(),
        cadence=cadence,
        timetable=ExchangeTimetable(auction_policy=policy),
        clock=lambda: clock[0].timestamp(),
    )
    return engine, clock


async def test_a_trading_day_publishes_intraday_pauses_in_the_auction_and_closes_once() -> None:
    engine, clock = engine_at(msk(9, 0))
    kinds: dict[str, list[str]] = {}
    moment = msk(9, 0)
    while moment <= msk(19, 30):
        clock[0] = moment
        for p in await engine.publish(moment.timestamp()):
            if p.code == "IMOEX":
                kinds.setdefault(p.kind, []).append(p.time.strftime("%H:%M:%S"))
        moment += timedelta(seconds=15)
    # The opening auction (09:50-10:00) pauses like the closing one: the first value is at 10:00.
    assert kinds["intraday"][0] == "07:00:00"
    assert kinds["intraday"][-1] == "15:39:45"  # 18:39:45, the last before the auction
    assert kinds["close"] == ["15:50:00"]  # 18:50:00 Moscow, once
    assert "indicative" not in kinds


async def test_indicative_policy_flags_auction_values() -> None:
    engine, _ = engine_at(msk(18, 45), policy=AuctionPolicy.INDICATIVE)
    published = await engine.publish(msk(18, 45).timestamp())
    assert {p.kind for p in published} == {"indicative"}
    assert published[0].message()["close"] is False


async def test_nothing_on_a_weekend_or_a_holiday() -> None:
    saturday = msk(12, 0, day=date(2026, 11, 21))
    engine, _ = engine_at(saturday)
    assert await engine.publish(saturday.timestamp()) == []
    new_year = msk(12, 0, day=date(2027, 1, 5))
    engine, _ = engine_at(new_year)
    assert await engine.publish(new_year.timestamp()) == []


async def test_after_hours_trades_move_only_the_extended_index() -> None:
    engine, clock = engine_at(msk(19, 30), small_definition(), extended_definition())
    engine.submit([Tick("A", 12.0, msk(19, 30))])  # evening session
    clock[0] = msk(19, 30)
    values = engine.values()
    assert values["IMOEX"] == pytest.approx(3000.0)  # unmoved: 9000 / 3
    assert values["IMOEX2"] == pytest.approx(6000.0)  # 12 · 500 / 1
    # An auction trade stamped late but flagged by the feed still counts for the close.
    engine.submit([Tick("A", 11.0, msk(18, 50, 2), phase=Phase.CLOSING_AUCTION)])
    assert engine.values()["IMOEX"] == pytest.approx((11 * 500 + 2000 + 2000) / 3)


async def test_close_is_computed_from_auction_prices_and_becomes_tomorrows_previous_close() -> None:
    engine, clock = engine_at(msk(18, 39))
    engine.submit([Tick("A", 11.0, msk(18, 39))])  # last continuous trade
    engine.submit([Tick("A", 11.5, msk(18, 49, 59))])  # the closing auction's price
    engine.submit([Tick("A", 13.0, msk(19, 10))])  # evening trade: not in the main index
    clock[0] = msk(18, 50)
    close = {p.code: p for p in await engine.publish(msk(18, 50).timestamp())}
    assert close["IMOEX"].kind == "close"
    assert close["IMOEX"].value == pytest.approx((11.5 * 500 + 2000 + 2000) / 3)
    monday = msk(10, 0, day=date(2026, 11, 23))
    clock[0] = monday
    opening = {p.code: p for p in await engine.publish(monday.timestamp())}
    assert opening["IMOEX"].previous_close == pytest.approx(close["IMOEX"].value)
    assert opening["RTSI"].previous_close == pytest.approx(close["RTSI"].value)


async def test_guard_holds_a_fat_finger_and_releases_a_confirmed_gap() -> None:
    engine, _ = engine_at(msk(12, 0))
    engine.guard = PriceGuard(threshold=0.2)
    report = engine.submit_report(
        [Tick("A", 10.1, msk(12, 0)), Tick("A", 100.0, msk(12, 0)), Tick("B", 20.2, msk(12, 0))]
    )
    assert report.applied == 2 and [h[:2] for h in report.held] == [(1, "A")]
    assert engine.values()["IMOEX"] == pytest.approx((10.1 * 500 + 20.2 * 100 + 2000) / 3)
    back = engine.submit_report([Tick("A", 10.2, msk(12, 0, 1))])  # back near the last price
    # The discarded tick came in an earlier batch: it has no position in this one.
    assert back.applied == 1 and [d[:2] for d in back.discarded] == [(-1, "A")]
    gap = engine.submit_report([Tick("A", 13.0, msk(12, 1)), Tick("A", 13.1, msk(12, 1))])
    assert gap.applied == 2 and gap.released == 1 and gap.held[0][:2] == (0, "A")
    assert engine.values()["IMOEX"] == pytest.approx((13.1 * 500 + 20.2 * 100 + 2000) / 3)


def new_base() -> IndexBase:
    # B leaves, D (reference 8.0) joins, A's shares change.
    return IndexBase(
        (
            Constituent("A", "A", 400.0, reference_price=10.0),
            Constituent("C", "C", 20.0, reference_price=100.0),
            Constituent("D", "D", 50.0, reference_price=8.0),
        ),
        source="review",
    )


async def test_base_change_with_continuity_does_not_jump_and_survives_a_restart() -> None:
    store = MemoryStore()
    engine, clock = engine_at(msk(12, 0), store=store)
    engine.submit([Tick("A", 12.0, msk(12, 0))])
    before = {p.code: p for p in await engine.publish(msk(12, 0).timestamp())}
    change = BaseChange("small", new_base(), msk(12, 0, 10), "extraordinary: shares issued")
    engine.schedule_base_change(change, DivisorPolicy.CONTINUITY)
    assert engine.bases_view()["scheduled"][0]["definition"] == "small"
    clock[0] = msk(12, 0, 15)
    after = {p.code: p for p in await engine.publish(msk(12, 0, 15).timestamp())}
    for code in ("IMOEX", "RTSI"):
        assert after[code].value == pytest.approx(before[code].value, rel=1e-12)
    # old MC 12·500 + 20·100 + 100·20 = 10000; new MC 12·400 + 100·20 + 8·50 = 7200
    assert engine.divisors["IMOEX"] == pytest.approx(3.0 * 7200 / 10000)
    applied = engine.bases_view()["applied"][0]
    assert applied["decisions"]["IMOEX"]["computed_divisor"] == pytest.approx(2.16)
    engine.submit([Tick("D", 9.0, msk(12, 1))])
    moved = engine.values()["IMOEX"]
    assert moved == pytest.approx((12 * 400 + 2000 + 9 * 50) / 2.16)

    again, _ = engine_at(msk(12, 2), store=store)
    again.restore(await store.load_state() or pytest.fail("no state"))
    assert again.divisors["IMOEX"] == pytest.approx(2.16)
    assert again.calculator.groups[0].base.secids == ("A", "C", "D")
    assert again.bases_view()["current"]["small"]["label"] == "extraordinary: shares issued"


async def test_official_divisor_is_adopted_and_its_difference_reported() -> None:
    engine, _ = engine_at(msk(12, 0))
    change = BaseChange("small", new_base(), msk(12, 0), official_divisors={"IMOEX": 2.2})
    engine.schedule_base_change(change)
    await engine.publish(msk(12, 0).timestamp())
    decision = engine.bases_view()["applied"][0]["decisions"]["IMOEX"]
    assert engine.divisors["IMOEX"] == 2.2
    # old MC at reference prices 9000, new MC 10·400 + 100·20 + 8·50 = 6400: computed 3 · 6400/9000
    computed = 3.0 * 6400 / 9000
    assert decision["official_divisor"] == 2.2
    assert decision["computed_divisor"] == pytest.approx(computed)
    assert decision["difference_ppm"] == pytest.approx((2.2 / computed - 1) * 1e6)
    assert decision["jump"] != 0  # the official divisor moves the index: reported, not hidden


async def test_bad_base_changes_are_refused_before_they_take_effect() -> None:
    engine, _ = engine_at(msk(12, 0))
    unpriced = IndexBase((Constituent("Z", "Z", 1.0),), source="x")
    with pytest.raises(Exception, match="Z"):
        engine.schedule_base_change(BaseChange("small", unpriced, msk(13, 0)))
    with pytest.raises(Exception, match="nosuch"):
        engine.schedule_base_change(BaseChange("nosuch", new_base(), msk(13, 0)))
    with pytest.raises(Exception, match="SOLO"):
        engine.schedule_base_change(
            BaseChange("small", new_base(), msk(13, 0), official_divisors={"SOLO": 1.0})
        )
    assert engine.bases_view()["scheduled"] == []


async def test_rtsi_uses_the_fx_step_in_force_and_says_which() -> None:
    engine, clock = engine_at(msk(12, 0))
    engine.add_fx(FxStep(100.0, msk(17, 0), "cbr:2026-11-21", published_at=msk(11, 30)))
    at_noon = {p.code: p for p in await engine.publish(msk(12, 0).timestamp())}
    assert at_noon["RTSI"].fx_rate == 90.0 and at_noon["RTSI"].fx_source == "config"
    clock[0] = msk(17, 0)
    at_five = {p.code: p for p in await engine.publish(msk(17, 0).timestamp())}
    assert at_five["RTSI"].fx_rate == 100.0 and at_five["RTSI"].fx_source == "cbr:2026-11-21"
    assert at_five["RTSI"].value == pytest.approx(9000 / (100 * 0.5))
    assert at_five["RTSI"].fx_effective == "2026-11-20T14:00:00.000Z"


async def test_no_fx_means_no_dollar_value() -> None:
    clock = [msk(12, 0)]
    family = Family("test", (small_definition(),), 15, None)
    engine = Engine(
        family, MemoryStore(), timetable=ExchangeTimetable(), clock=lambda: clock[0].timestamp()
    )
    published = await engine.publish(msk(12, 0).timestamp())
    assert [p.code for p in published] == ["IMOEX"]
    assert engine.fx_status().missing


async def test_equal_weight_rebalancing_keeps_the_value_and_restores_equal_weights() -> None:
    from streaming.methodology.definition import load_family

    clock = [msk(12, 0)]
    engine = Engine(load_family(), MemoryStore(), clock=lambda: clock[0].timestamp())
    calc = engine.calculator
    group = calc.group_index("MOEX10")
    members = calc.groups[group].base.secids
    engine.submit(
        [
            Tick(s, float(calc.prices[0, calc.position[s]]) * (1 + 0.02 * n), msk(12, 0))
            for n, s in enumerate(members)
        ]
    )
    drifted = calc.weights(group)
    assert drifted.max() - drifted.min() > 1.0  # no longer equal
    before = {p.code: p.value for p in await engine.publish(msk(12, 0).timestamp())}
    engine.rebalance("MOEX10")
    clock[0] = msk(12, 0, 15)
    after = {p.code: p.value for p in await engine.publish(msk(12, 0, 15).timestamp())}
    assert after["MOEX10"] == pytest.approx(before["MOEX10"], rel=1e-12)
    assert calc.weights(group).tolist() == pytest.approx([10.0] * 10)
    with pytest.raises(Exception, match="base file"):
        engine.rebalance("IMOEX")


async def test_a_definition_file_changed_between_runs_is_a_reported_base_change() -> None:
    store = MemoryStore()
    engine, _ = engine_at(msk(12, 0), store=store)
    engine.submit([Tick("A", 12.0, msk(12, 0))])
    before = {p.code: p for p in await engine.publish(msk(12, 0).timestamp())}
    # Next run: the file has the new base and a new (official) IMOEX divisor; RTSI's is unchanged.
    edited = dataclasses.replace(
        small_definition(),
        base=new_base(),
        indices=(IndexSpec("IMOEX", "RUB", 2.2), IndexSpec("RTSI", "USD", 0.5)),
    )
    clock = [msk(12, 1)]
    again = Engine(
        Family("test", (edited,), 15, 90.0),
        store,
        timetable=ExchangeTimetable(),
        clock=lambda: clock[0].timestamp(),
        divisor_policy=DivisorPolicy.CONTINUITY,
    )
    again.restore(await store.load_state() or pytest.fail("no state"), await store.latest())
    applied = again.bases_view()["applied"][-1]
    assert applied["change"]["reason"] == "definition file changed"
    imoex = applied["decisions"]["IMOEX"]
    # old MC 10000 at the saved prices, new 12·400 + 100·20 + 8·50 = 7200
    assert imoex["computed_divisor"] == pytest.approx(3.0 * 0.72)
    assert imoex["official_divisor"] == 2.2
    assert applied["decisions"]["RTSI"]["official_divisor"] is None
    after = {p.code: p for p in await again.publish(msk(12, 1).timestamp())}
    for code in ("IMOEX", "RTSI"):  # continuity policy: no jump
        assert after[code].value == pytest.approx(before[code].value, rel=1e-12)
    # The next run with the same file sees nothing new.
    third = Engine(
        Family("test", (edited,), 15, 90.0),
        store,
        timetable=ExchangeTimetable(),
        clock=lambda: clock[0].timestamp(),
    )
    third.restore(await store.load_state() or pytest.fail("no state"), await store.latest())
    assert len(third.bases_view()["applied"]) == 1
