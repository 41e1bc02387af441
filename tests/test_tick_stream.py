"""The tick stream's message format: every documented entry shape decodes into the same ticks,
and every bad tick is refused alone, naming its entry, position, field and reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.methodology.phases import Phase
from streaming.tick_stream import StreamLag, decode_entries, entry_key
from streaming.ticks import Tick, encode_ticks

KNOWN = frozenset({"SBER", "GAZP", "LKOH"})
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 20, 7, 0, 1, tzinfo=UTC)
EPOCH1 = T1.timestamp()


def trades(decoded: object) -> list[tuple[str, float, float]]:
    ticks = decoded.ticks()  # type: ignore[attr-defined]
    return [(t.secid, t.price, t.time.timestamp()) for t in ticks]


def test_one_trade_entries_as_fields_with_iso_or_epoch_times() -> None:
    entries = [
        ("1-0", {b"secid": b"SBER", b"price": b"250.5", b"time": b"2026-11-20T07:00:01Z"}),
        ("2-0", {"secid": "GAZP", "price": "150", "time": str(EPOCH1), "volume": "10"}),
        ("3-0", {"secid": "LKOH", "price": "7000.25", "phase": "continuous"}),  # no time: now
    ]
    decoded = decode_entries(entries, KNOWN, NOW)
    assert decoded.rejects == []
    assert trades(decoded) == [
        ("SBER", 250.5, EPOCH1),
        ("GAZP", 150.0, EPOCH1),
        ("LKOH", 7000.25, NOW.timestamp()),
    ]
    ticks = list(decoded.ticks())
    assert ticks[1].volume == 10.0
    assert ticks[2].phase is Phase("continuous")


def test_batch_entries_in_every_documented_shape_give_the_same_ticks() -> None:
    objects = [
        {"secid": "SBER", "price": 250.5, "time": "2026-11-20T07:00:01Z"},
        {"secid": "GAZP", "price": 150.0, "time": EPOCH1, "volume": 3},
    ]
    rows = [["SBER", 250.5, EPOCH1, None, None], ["GAZP", 150.0, EPOCH1, 3, None]]
    columns = encode_ticks(
        [Tick("SBER", 250.5, T1), Tick("GAZP", 150.0, T1, volume=3.0)]
    )  # what an API process writes
    expected = [("SBER", 250.5, EPOCH1), ("GAZP", 150.0, EPOCH1)]
    for body in (orjson.dumps(objects), orjson.dumps(rows), columns):
        decoded = decode_entries([("5-0", {b"ticks": body})], KNOWN, NOW)
        assert decoded.rejects == [], body
        assert trades(decoded) == expected, body
        assert [t.volume for t in decoded.ticks()] == [None, 3.0]


def test_a_bad_tick_is_refused_alone_in_every_shape() -> None:
    objects = [
        {"secid": "SBER", "price": 250.5, "time": EPOCH1},
        {"secid": "SBER", "price": -1, "time": EPOCH1},
        {"secid": "NOPE", "price": 1.0, "time": EPOCH1},
        {"secid": "GAZP", "price": 150.0, "time": EPOCH1},
    ]
    rows = [[o["secid"], o["price"], o["time"], None, None] for o in objects]
    columns = {
        "secid": [o["secid"] for o in objects],
        "price": [o["price"] for o in objects],
        "time": [o["time"] for o in objects],
    }
    for body in (objects, rows, columns):
        decoded = decode_entries([("7-1", {"ticks": orjson.dumps(body)})], KNOWN, NOW)
        assert trades(decoded) == [("SBER", 250.5, EPOCH1), ("GAZP", 150.0, EPOCH1)], body
        assert [(r.entry, r.position, r.field) for r in decoded.rejects] == [
            ("7-1", 1, "price"),
            ("7-1", 2, "secid"),
        ], body
        assert "must be positive" in decoded.rejects[0].reason
        assert "unknown secid 'NOPE'" in decoded.rejects[1].reason


def test_a_non_number_in_a_column_refuses_only_its_row() -> None:
    body = {"secid": ["SBER", "GAZP"], "price": ["abc", 150.0], "time": [EPOCH1, EPOCH1]}
    decoded = decode_entries([("8-0", {"ticks": orjson.dumps(body)})], KNOWN, NOW)
    assert trades(decoded) == [("GAZP", 150.0, EPOCH1)]
    assert [(r.position, r.field) for r in decoded.rejects] == [(0, "price")]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"secid": "SBER", "price": "abc"}, "price", "must be a number"),
        ({"secid": "SBER", "price": "nan"}, "price", "must be finite"),
        ({"secid": "SBER", "price": "0"}, "price", "must be positive"),
        ({"secid": "SBER"}, "price", "missing"),
        ({"price": "1"}, "secid", "missing"),
        ({"secid": "SBER", "price": "1", "time": "yesterday"}, "time", "not an ISO 8601 time"),
        ({"secid": "SBER", "price": "1", "time": "-5"}, "time", "out of range"),
        ({"secid": "SBER", "price": "1", "volume": "-2"}, "volume", "must not be negative"),
        ({"secid": "SBER", "price": "1", "phase": "lunch"}, "phase", ""),
        ({"secid": "SBER", "price": "1", "colour": "red"}, "colour", "unknown field"),
        ({"ticks": "[1, 2"}, "ticks", "not JSON"),
        ({"ticks": "42"}, "ticks", "must be an array of ticks"),
        ({"ticks": '{"secid": ["SBER"], "price": [1, 2], "time": [1]}'}, "ticks", "must be"),
        ({"ticks": "[]", "secid": "SBER"}, "secid", "a batch entry has only 'ticks'"),
    ],
)
def test_bad_entries_name_field_and_reason(fields: dict[str, str], field: str, reason: str) -> None:
    good = ("1-0", {"secid": "GAZP", "price": "150", "time": str(EPOCH1)})
    decoded = decode_entries([good, ("2-0", fields), good], KNOWN, NOW)
    assert len(decoded.rejects) == 1
    reject = decoded.rejects[0]
    assert (reject.entry, reject.field) == ("2-0", field)
    assert reason in reject.reason
    assert trades(decoded) == [("GAZP", 150.0, EPOCH1)] * 2  # the neighbours go on


def test_entry_order_is_kept_across_shapes() -> None:
    entries = [
        ("1-0", {"secid": "SBER", "price": "1", "time": "1"}),
        ("2-0", {"ticks": orjson.dumps([{"secid": "SBER", "price": 2, "time": 2}])}),
        ("3-0", {"secid": "SBER", "price": "3", "time": "3"}),
        ("4-0", {"secid": "SBER", "price": "4", "time": "4"}),
    ]
    assert [p for _, p, _ in trades(decode_entries(entries, KNOWN, NOW))] == [1, 2, 3, 4]


def test_entry_ids_order_numerically_and_lag_in_seconds() -> None:
    assert entry_key("1700000000123-5") == (1700000000123, 5)
    assert entry_key("9-0") < entry_key("10-0")  # not as text
    lag = StreamLag(
        length=10,
        last_entry="1700000005000-0",
        delivered="1700000004000-0",
        pending=2,
        undelivered=3,
        readers=1,
    )
    assert lag.seconds_behind("1700000002500-7") == 2.5
    assert lag.seconds_behind("1700000005000-0") == 0.0
    assert lag.as_dict("1700000002500-7")["seconds_behind"] == 2.5


PRICES = st.sampled_from(
    ["250.5", "1e3", " 7.25 ", "1_000", "0", "-1", "nan", "inf", "abc", "", "3", "0.0001"]
)
TIMES = st.sampled_from(
    [None, "2026-11-20T07:00:01Z", "2026-11-20T10:00:01.5+03:00", "2026-11-20 07:00:01",
     "1795165201.25", "1795165201", "-5", "yesterday", ""]
)  # fmt: skip
SECIDS = st.sampled_from(["SBER", "GAZP", " SBER", "NOPE", "", "LKOH"])


@given(
    st.lists(
        st.tuples(SECIDS, PRICES, TIMES, st.sampled_from([None, "10", "-1"])),
        min_size=1,
        max_size=12,
    )
)
def test_one_trade_entries_in_bulk_equal_the_one_by_one_reading(
    rows: list[tuple[str, str, str | None, str | None]],
) -> None:
    """Redis hands fields over as bytes (the bulk path takes those); the same entries with text
    keys go one by one: the ticks and the refusals are the same."""
    as_bytes: list[tuple[str, Any]] = []
    as_text: list[tuple[str, Any]] = []
    for n, (secid, price, moment, volume) in enumerate(rows):
        fields = {"secid": secid, "price": price}
        if moment is not None:
            fields["time"] = moment
        if volume is not None:
            fields["volume"] = volume
        as_bytes.append((f"{n}-0", {k.encode(): v.encode() for k, v in fields.items()}))
        as_text.append((f"{n}-0", fields))
    bulk, one_by_one = decode_entries(as_bytes, KNOWN, NOW), decode_entries(as_text, KNOWN, NOW)
    assert bulk.rejects == one_by_one.rejects
    a, b = bulk.ticks(), one_by_one.ticks()
    assert a.secids() == b.secids()
    assert a.prices.tolist() == b.prices.tolist()
    assert a.epochs.tolist() == b.epochs.tolist()
    assert [t.volume for t in a] == [t.volume for t in b]


def test_plain_one_trade_entries_take_the_bulk_path() -> None:
    from streaming.tick_stream import _plain_trades

    entries: list[tuple[str, Any]] = [
        (f"{n}-0", {b"secid": b"SBER", b"price": f"{250 + n}.5".encode(), b"time": b"1795165201"})
        for n in range(3)
    ]
    bulk = _plain_trades(entries, KNOWN, NOW)
    assert bulk is not None and bulk.prices.tolist() == [250.5, 251.5, 252.5]
    entries[1][1][b"price"] = b"-1"
    assert _plain_trades(entries, KNOWN, NOW) is None  # one bad: judged one by one
