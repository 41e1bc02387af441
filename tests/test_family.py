"""Several indices over one tick stream: shared lines, profiles, base swaps, family files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from factories import SMALL_BASE, small_definition

from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.definition import Family, load_family
from streaming.methodology.family import FamilyCalculator, Group
from streaming.store.memory import MemoryStore
from streaming.ticks import Tick

# Group "big": A 500, B 100 (MC at reference 10·500 + 20·100 = 7000).
# Group "wide" (extended profile): B 10, C 1 (MC 20·10 + 100·1 = 300).
BIG = IndexBase(
    (
        Constituent("A", "A", 500.0, reference_price=10.0),
        Constituent("B", "B", 100.0, reference_price=20.0),
    )
)
WIDE = IndexBase(
    (
        Constituent("B", "B", 10.0, reference_price=20.0),
        Constituent("C", "C", 1.0, reference_price=100.0),
    )
)
MAIN, EXTENDED = 0, 1


def family() -> FamilyCalculator:
    return FamilyCalculator([Group("big", BIG), Group("wide", WIDE, "extended")])


def test_one_tick_moves_every_group_holding_the_line() -> None:
    calc = family()
    assert calc.capitalization.tolist() == [7000.0, 300.0]
    calc.apply("B", 25.0)  # both profiles: big += 5·100, wide += 5·10
    assert calc.capitalization.tolist() == [7500.0, 350.0]
    calc.apply("A", 11.0)  # only big holds A
    assert calc.capitalization.tolist() == [8000.0, 350.0]
    assert calc.secids == ["A", "B", "C"]


def test_a_tick_moves_only_the_profiles_it_counts_in() -> None:
    calc = family()
    calc.apply("B", 30.0, profiles=(EXTENDED,))  # an after-hours trade
    assert calc.capitalization.tolist() == [7000.0, 400.0]
    assert calc.group_prices(0)[1] == 20.0 and calc.group_prices(1)[1] == 30.0


def test_incremental_equals_full_sum_over_random_ticks() -> None:
    calc = family()
    rng = np.random.default_rng(3)
    for _ in range(20_000):
        secid = ["A", "B", "C"][int(rng.integers(3))]
        profiles = (MAIN, EXTENDED) if rng.random() < 0.8 else (EXTENDED,)
        i = calc.position[secid]
        calc.apply(secid, float(calc.prices[1, i] * np.exp(rng.normal(0, 0.01))), profiles=profiles)
    incremental = calc.capitalization.copy()
    full = calc.resum()
    assert np.all(np.abs(incremental - full) / full < 1e-9)


def test_replace_base_adds_lines_and_reports_both_capitalizations() -> None:
    calc = family()
    calc.apply("A", 12.0)
    new = IndexBase(
        (Constituent("A", "A", 400.0), Constituent("D", "D", 50.0, reference_price=8.0))
    )
    old_mc, new_mc = calc.replace_base(0, new)
    assert old_mc == 12.0 * 500 + 20.0 * 100
    assert new_mc == 12.0 * 400 + 8.0 * 50
    assert calc.secids == ["A", "B", "C", "D"]
    calc.apply("D", 9.0)
    assert calc.capitalization[0] == pytest.approx(12.0 * 400 + 9.0 * 50)
    with pytest.raises(ConfigError, match="E"):
        calc.replace_base(0, IndexBase((Constituent("E", "E", 1.0),)))
    assert calc.secids == ["A", "B", "C", "D"]  # nothing changed by the refused swap


def test_snapshot_restore_round_trip() -> None:
    calc = family()
    calc.apply("B", 21.0, 1.0e9)
    calc.apply("C", 99.0, 1.0e9 + 1, profiles=(EXTENDED,))
    again = family()
    again.restore(*calc.snapshot())
    assert again.prices.tolist() == calc.prices.tolist()
    assert again.capitalization.tolist() == calc.capitalization.tolist()
    assert np.array_equal(again.tick_times, calc.tick_times, equal_nan=True)


async def test_engine_publishes_every_index_of_a_family() -> None:
    first = small_definition()
    second = small_definition().__class__(
        name="second",
        base=IndexBase((Constituent("A", "A", 1.0, reference_price=10.0),)),
        indices=(first.indices[0].__class__("SOLO", "RUB", 0.01),),
        fx_rate=None,
        cadence_seconds=1,
        session=first.session,
    )
    grid = datetime(2026, 11, 20, 7, tzinfo=UTC).timestamp()
    engine = Engine(Family("two", (first, second), 1, 90.0), MemoryStore(), clock=lambda: grid)
    engine.submit([Tick("A", 12.0, datetime.fromtimestamp(grid, UTC))])
    published = {p.code: p for p in await engine.publish(grid)}
    assert set(published) == {"IMOEX", "RTSI", "SOLO"}
    assert published["SOLO"].value == pytest.approx(1200.0)  # 12 · 1 / 0.01
    assert published["IMOEX"].value == pytest.approx((12 * 500 + 20 * 100 + 100 * 20) / 3)
    assert published["SOLO"].previous_close == pytest.approx(1000.0)


def test_family_file(tmp_path: Path) -> None:
    (tmp_path / "base.csv").write_text("secids,issue_size_index,waprice\nA,500,10\nB,100,20\n")
    (tmp_path / "one.toml").write_text(
        'name = "one"\nbase = "base.csv"\n[[index]]\ncode = "ONE"\ndivisor = 1.0\n'
    )
    (tmp_path / "two.toml").write_text(
        'name = "two"\nbase = "base.csv"\nprofile = "extended"\n[capping]\nissuer_cap = 0.2\n'
        '[[index]]\ncode = "TWO"\ndivisor = 2.0\n'
    )
    (tmp_path / "family.toml").write_text('name = "fam"\ndefinitions = ["one.toml", "two.toml"]\n')
    loaded = load_family(tmp_path / "family.toml")
    assert loaded.codes == ("ONE", "TWO")
    assert loaded.definition_of("TWO").profile == "extended"
    assert loaded.definition_of("TWO").capping == {"issuer_cap": 0.2}
    assert loaded.universe().secids == ("A", "B")
    (tmp_path / "dup.toml").write_text('definitions = ["one.toml", "one.toml"]\n')
    with pytest.raises(ConfigError, match="unique"):
        load_family(tmp_path / "dup.toml")
    single = load_family(tmp_path / "one.toml")
    assert single.codes == ("ONE",) and len(single.definitions) == 1


def test_small_base_family_of_one_matches_factories() -> None:
    assert Family.of(small_definition()).universe().constituents == SMALL_BASE.constituents
