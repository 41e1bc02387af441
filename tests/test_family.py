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


def test_the_shipped_family() -> None:
    shipped = load_family()
    assert shipped.codes == (
        "IMOEX",
        "RTSI",
        "IMOEX2",
        "MOEXBC",
        "MOEX10",
        "MOEXOG",
        "BANKS",
        "BANKSUSD",
    )
    engine = Engine(shipped, MemoryStore())
    calc = engine.calculator
    values = engine.values()
    # Each index with a base_value is worth exactly that at the reference prices.
    for code, level in [("MOEXBC", 1e4), ("MOEX10", 1e3), ("MOEXOG", 1e4), ("BANKS", 1e3)]:
        assert values[code] == pytest.approx(level, rel=1e-12)
    assert values["BANKSUSD"] == pytest.approx(1e3, rel=1e-12)
    # Capped: no issuer above its cap at the reference prices; equal: 10 % each.
    for name, cap in [("MOEXBC", 0.20), ("MOEXOG", 0.15), ("BANKS", 0.40)]:
        group = calc.group_index(name)
        base = calc.groups[group].base
        per_issuer: dict[str, float] = {}
        for line, weight in zip(base.constituents, calc.weights(group).tolist(), strict=True):
            per_issuer[line.issuer] = per_issuer.get(line.issuer, 0.0) + weight
        assert max(per_issuer.values()) <= 100 * cap * (1 + 1e-6)
        assert max(per_issuer.values()) == pytest.approx(100 * cap, rel=1e-5)  # the cap binds
    assert calc.weights(calc.group_index("MOEX10")).tolist() == pytest.approx([10.0] * 10)
    # One tick updates every index holding the line, and only those.
    sber = float(calc.prices[0, calc.position["SBER"]])
    engine.submit([Tick("SBER", sber * 1.01, datetime.now(UTC))])
    moved = {code for code, value in engine.values().items() if value != values[code]}
    assert moved == {"IMOEX", "RTSI", "IMOEX2", "MOEXBC", "MOEX10", "BANKS", "BANKSUSD"}


def test_equal_weight_formula_is_moex10s() -> None:
    shipped = load_family()
    engine = Engine(shipped, MemoryStore())
    calc = engine.calculator
    members = shipped.definition_of("MOEX10").base.secids
    start = {s: float(calc.prices[0, calc.position[s]]) for s in members}
    rng = np.random.default_rng(5)
    moves = {s: float(rng.uniform(0.9, 1.1)) for s in members}
    engine.submit([Tick(s, start[s] * moves[s], datetime.now(UTC)) for s in members])
    # I = (k/10) · Σ P_i / P_i0 with k/10 = 1000/10 at the start: 100 · Σ moves
    assert engine.values()["MOEX10"] == pytest.approx(100 * sum(moves.values()), rel=1e-12)


def test_definition_errors_for_lines_weighting_and_base_value(tmp_path: Path) -> None:
    (tmp_path / "base.csv").write_text("secids,issue_size_index,waprice\nA,500,10\nB,100,20\n")
    cases = [
        ('lines = ["A", "Z"]\n', "lines"),
        ('weighting = "random"\n', "weighting"),
        ('[[index]]\ncode = "X"\n', "index[0].divisor"),
        ('[[index]]\ncode = "X"\nbase_value = -1\n', "index[0].base_value"),
    ]
    for extra, key in cases:
        index = "" if "[[index]]" in extra else '[[index]]\ncode = "X"\ndivisor = 1.0\n'
        path = tmp_path / "d.toml"
        path.write_text(f'name = "d"\nbase = "base.csv"\n{extra}{index}')
        with pytest.raises(ConfigError) as caught:
            load_family(path)
        assert caught.value.key == key, extra


def test_a_batch_equals_the_same_ticks_one_by_one() -> None:
    rng = np.random.default_rng(11)
    one, batch = family(), family()
    lines = rng.integers(0, 3, 5000)
    prices = rng.uniform(5, 150, 5000)
    epochs = np.arange(5000, dtype=np.float64)
    for i, price, epoch in zip(lines.tolist(), prices.tolist(), epochs.tolist(), strict=True):
        one.apply(one.secids[i], price, epoch, profiles=(MAIN, EXTENDED))
    batch.apply_batch(lines, prices, epochs, profiles=(MAIN, EXTENDED))
    assert batch.prices.tolist() == one.prices.tolist()
    assert np.array_equal(batch.tick_times, one.tick_times)
    assert batch.capitalization == pytest.approx(one.capitalization, rel=1e-12)
    assert batch.capitalization == pytest.approx(batch.resum(), rel=1e-12)
    batch.apply_batch(np.array([0]), np.array([50.0]), profiles=(EXTENDED,))
    assert batch.group_prices(0)[0] == one.group_prices(0)[0]  # main profile untouched
    assert batch.group_prices(1)[0] == 50.0
