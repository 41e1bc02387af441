"""Tick validation: each bad field gets a reason naming it; good ticks beside bad ones survive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.errors import TickRejected
from streaming.ticks import parse_batch, parse_tick, parse_time

KNOWN = frozenset({"SBER", "GAZP"})
NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def test_good_tick_defaults_time_to_now() -> None:
    tick = parse_tick({"secid": "SBER", "price": "250.5", "volume": 10}, KNOWN, NOW)
    assert (tick.secid, tick.price, tick.time, tick.volume) == ("SBER", 250.5, NOW, 10.0)


def test_time_forms() -> None:
    msk = timezone(timedelta(hours=3))
    assert parse_time("2026-11-20T10:00:00+03:00") == datetime(2026, 11, 20, 10, tzinfo=msk)
    assert parse_time("2026-11-20T07:00:00Z") == NOW
    assert parse_time("2026-11-20T07:00:00") == NOW  # naive is UTC
    assert parse_time(NOW.timestamp()) == NOW


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"price": 1}, "secid", "missing"),
        ({"secid": "", "price": 1}, "secid", "empty"),
        ({"secid": 5, "price": 1}, "secid", "string"),
        ({"secid": "XXXX", "price": 1}, "secid", "unknown"),
        ({"secid": "SBER"}, "price", "missing"),
        ({"secid": "SBER", "price": 0}, "price", "positive"),
        ({"secid": "SBER", "price": -2.5}, "price", "positive"),
        ({"secid": "SBER", "price": "NaN"}, "price", "finite"),
        ({"secid": "SBER", "price": "inf"}, "price", "finite"),
        ({"secid": "SBER", "price": "abc"}, "price", "number"),
        ({"secid": "SBER", "price": True}, "price", "number"),
        ({"secid": "SBER", "price": [1]}, "price", "number"),
        ({"secid": "SBER", "price": 1, "time": "yesterday"}, "time", "ISO 8601"),
        ({"secid": "SBER", "price": 1, "time": -5}, "time", "range"),
        ({"secid": "SBER", "price": 1, "volume": -1}, "volume", "negative"),
        ("SBER,1", "tick", "object"),
    ],
)
def test_bad_ticks_name_their_field(raw: object, field: str, words: str) -> None:
    with pytest.raises(TickRejected) as caught:
        parse_tick(raw, KNOWN, NOW)
    assert caught.value.field == field
    assert words in caught.value.reason


def test_batch_keeps_good_ticks_beside_bad_ones() -> None:
    raws: list[object] = [
        {"secid": "SBER", "price": 1},
        {"secid": "SBER", "price": -1},
        {"secid": "GAZP", "price": 2},
        None,
    ]
    ticks, rejected = parse_batch(raws, KNOWN, NOW)
    assert [t.secid for t in ticks] == ["SBER", "GAZP"]
    assert [(r.index, r.field) for r in rejected] == [(1, "price"), (3, "tick")]
    assert rejected[0].as_dict()["reason"].startswith("price:")


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=8,
    )
)
def test_any_json_value_is_a_tick_or_a_rejection(raw: object) -> None:
    try:
        tick = parse_tick(raw, KNOWN, NOW)
    except TickRejected as error:
        assert error.field and error.reason
    else:
        assert tick.secid in KNOWN and tick.price > 0


@given(
    price=st.one_of(st.floats(), st.integers(), st.text(max_size=12)),
    time=st.one_of(st.none(), st.floats(), st.text(max_size=30), st.integers()),
)
def test_price_and_time_fuzz(price: object, time: object) -> None:
    try:
        tick = parse_tick({"secid": "GAZP", "price": price, "time": time}, KNOWN, NOW)
    except TickRejected as error:
        assert error.field in ("price", "time")
    else:
        assert tick.price > 0 and tick.price != float("inf") and tick.time.tzinfo is not None
