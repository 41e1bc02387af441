"""The vectorised batch path gives exactly what the per-tick path gives: prices, tick times,
capitalizations, guard counters and held ticks, and the same report of applied, held, released
and discarded ticks with their positions, on random batches with guard triggers, FX instrument
ticks, lines no index holds, explicit phases and trades on phase boundaries."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.engine import Engine
from streaming.methodology.definition import load_family
from streaming.methodology.fx import FxSettings, LiveRule
from streaming.methodology.guard import PriceGuard
from streaming.methodology.phases import PHASES_OF_TICKS, SessionSpec
from streaming.methodology.timetable import AroundTheClock, ExchangeTimetable, Timetable
from streaming.store.memory import MemoryStore
from streaming.ticks import Tick, TickColumns, decode_columns, decode_ticks, encode_ticks

FAMILY = load_family()
FX_INSTRUMENT = "USD000UTSTOM"
LINES = ["SBER", "GAZP", "LKOH", "SNGSP", "VTBR", "AFKS"]
SECIDS = [*LINES, FX_INSTRUMENT, "NOTALINE"]
# A trading Friday and the Saturday after it (no trading): every phase and the closed day.
FRIDAY = date(2023, 3, 17)
SPEC = SessionSpec()
BOUNDARIES = [
    time(0, 0),
    time(7, 0),
    time(9, 50),
    time(10, 0),
    time(18, 40),
    time(18, 50),
    time(19, 5),
    time(23, 50),
]
# Price moves against a line's last price: small steps, the 20 % threshold exactly, jumps that
# are held, a confirmation within 10 % of the candidate and a fall back.
FACTORS = [1.0, 1.001, 0.999, 1.05, 0.95, 1.2, 0.8, 1.25, 1.3, 0.7, 1.28, 2.0, 0.5]


def moment_of(day: int, clock: time, offset_us: int) -> float:
    """Epoch seconds (whole microseconds) near a local clock time of FRIDAY + day."""
    local = datetime.combine(FRIDAY + timedelta(days=day), clock, tzinfo=UTC)
    at = local - SPEC.utc_offset + timedelta(microseconds=offset_us)
    return at.timestamp()


raw_tick = st.tuples(
    st.sampled_from(SECIDS),
    st.sampled_from(FACTORS),
    st.integers(0, 1),
    st.sampled_from(BOUNDARIES),
    st.one_of(
        st.integers(-3, 3),
        st.integers(-2_000_000, 2_000_000),
        st.integers(-3 * 3600 * 10**6, 3 * 3600 * 10**6),
    ),
    st.one_of(st.none(), st.sampled_from(PHASES_OF_TICKS)),
)


def build_batch(raws: list[tuple[object, ...]], last: dict[str, float]) -> list[Tick]:
    ticks = []
    for secid, factor, day, clock, offset, phase in raws:
        assert isinstance(secid, str) and isinstance(factor, float)
        assert isinstance(day, int) and isinstance(clock, time) and isinstance(offset, int)
        price = round(last.get(secid, 100.0) * factor, 6)
        last[secid] = price
        moment = datetime.fromtimestamp(moment_of(day, clock, offset), tz=UTC)
        ticks.append(Tick(secid, price, moment, None, phase))  # type: ignore[arg-type]
    return ticks


def engine(timetable: Timetable, confirmations: int) -> Engine:
    return Engine(
        FAMILY,
        MemoryStore(),
        timetable=timetable,
        clock=lambda: moment_of(0, time(12, 0), 0),
        fx_settings=FxSettings(rule=LiveRule(FX_INSTRUMENT)),
        guard=PriceGuard(threshold=0.2, confirmations=confirmations),
        grid=False,
        live_interval=None,
    )


def assert_same(each: Engine, batched: Engine) -> None:
    a, b = each.calculator, batched.calculator
    assert np.array_equal(a.prices, b.prices)
    assert np.array_equal(a.tick_times, b.tick_times, equal_nan=True)
    assert np.allclose(a.capitalization, b.capitalization, rtol=1e-12, atol=0)
    assert np.array_equal(a.resum(), b.resum())
    assert each.guard.counters == batched.guard.counters
    held_each = {s: [(g.price, g.item) for g in held] for s, held in each.guard.held().items()}
    held_batch = {s: [(g.price, g.item) for g in held] for s, held in batched.guard.held().items()}
    assert held_each == held_batch
    assert each.stats.ticks_applied == batched.stats.ticks_applied
    assert each.fx.as_dict() == batched.fx.as_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(raw_tick, max_size=60), min_size=1, max_size=6),
    exchange=st.booleans(),
    confirmations=st.integers(1, 2),
)
def test_batch_path_equals_tick_by_tick(
    batches: list[list[tuple[object, ...]]], exchange: bool, confirmations: int
) -> None:
    timetable: Timetable = ExchangeTimetable() if exchange else AroundTheClock()
    each, batched = engine(timetable, confirmations), engine(timetable, confirmations)
    last: dict[str, float] = {}
    for raws in batches:
        ticks = build_batch(raws, last)
        expected = each.submit_each(ticks)
        got = batched.submit_columns(TickColumns.of(ticks))
        assert got == expected
        assert_same(each, batched)


def test_batch_path_reports_a_held_jump_and_its_release_with_positions() -> None:
    each, batched = engine(AroundTheClock(), 1), engine(AroundTheClock(), 1)
    noon = datetime.fromtimestamp(moment_of(0, time(12, 0), 0), tz=UTC)
    sber = float(each.calculator.prices[-1, each.calculator.position["SBER"]])
    ticks = [Tick("GAZP", 150.0, noon)] * 20 + [
        Tick("SBER", sber * 1.5, noon),  # held: 50 % away
        Tick("GAZP", 151.0, noon),
        Tick("SBER", sber * 1.52, noon),  # confirms: both applied
        Tick("NOTALINE", 1.0, noon),
    ]
    expected = each.submit_each(ticks)
    got = batched.submit_report(ticks)  # large enough for the batch path
    assert got == expected
    assert got.held == [(20, "SBER", expected.held[0][2])]
    assert got.released == 1
    assert got.discarded == [(23, "NOTALINE", "unknown secid 'NOTALINE'")]
    assert got.applied == 23
    assert batched.calculator.prices[-1, batched.calculator.position["SBER"]] == sber * 1.52
    assert_same(each, batched)


def test_exchange_profiles_match_tick_profiles_on_every_boundary() -> None:
    timetable = ExchangeTimetable()
    epochs = np.array(
        [
            moment_of(day, clock, offset)
            for day in (0, 1)
            for clock in BOUNDARIES
            for offset in (-1001, -1000, -999, -1, 0, 1, 999, 1000, 1001, 500_000)
        ]
    )
    phases = np.full(len(epochs), -1, dtype=np.int8)
    mask = timetable.profile_mask(epochs, phases)
    for i, epoch in enumerate(epochs.tolist()):
        moved = timetable.tick_profiles(datetime.fromtimestamp(epoch, tz=UTC), None)
        assert tuple(np.flatnonzero(mask[:, i]).tolist()) == moved, epoch


def test_stream_entries_round_trip_as_columns() -> None:
    noon = datetime.fromtimestamp(moment_of(0, time(12, 0), 123_456), tz=UTC)
    ticks = [
        Tick("SBER", 250.5, noon, 10.0, None),
        Tick("GAZP", 160.25, noon + timedelta(microseconds=1), None, PHASES_OF_TICKS[0]),
    ]
    assert decode_ticks(encode_ticks(ticks)) == ticks
    columns = decode_columns(encode_ticks(ticks))
    assert columns.secids() == ["SBER", "GAZP"]
    assert list(columns) == ticks
    # Entries written by earlier versions: one row per tick.
    rows = b'[["SBER",250.5,%r,10.0,null]]' % noon.timestamp()
    assert decode_ticks(rows) == ticks[:1]
    assert math.isnan(float(decode_columns(encode_ticks(ticks[1:])).volumes[0]))
