"""Candles of published values: buckets on the Moscow clock, indicative values out, the close in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.candles import (
    Candle,
    CandleError,
    Interval,
    bucket_end,
    bucket_start,
    candles,
)
from streaming.publication import Publication

# 2024-05-06 is a Monday; 07:00 UTC is 10:00 Moscow time, 21:00 UTC is Moscow midnight.
TEN_MSK = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
MIDNIGHT_MSK = datetime(2024, 5, 6, 21, 0, tzinfo=UTC)  # 2024-05-07 00:00 Moscow
SECOND = timedelta(seconds=1)


def pub(time: datetime, value: float, seq: int, kind: str = "intraday") -> Publication:
    """An IMOEX value at a grid instant."""
    return Publication(
        code="IMOEX",
        currency="RUB",
        value=value,
        time=time,
        seq=seq,
        previous_close=3000.0,
        capitalization=value * 1e9,
        divisor=1e9,
        fx_rate=None,
        kind=kind,
    )


def ohlc(candle: Candle) -> tuple[float, float, float, float]:
    """(open, high, low, close) of a candle."""
    return candle.open, candle.high, candle.low, candle.close


def test_intervals_parse_and_name_the_field_when_wrong() -> None:
    assert [Interval.parse(text) for text in ("1m", "10m", "1h", " 1d ")] == [
        Interval.MINUTE,
        Interval.TEN_MINUTES,
        Interval.HOUR,
        Interval.DAY,
    ]
    assert Interval.HOUR.width == timedelta(hours=1)
    for bad in ("5m", "1D", "", "60s"):
        with pytest.raises(CandleError) as caught:
            Interval.parse(bad)
        assert caught.value.field == "interval"
        assert str(caught.value) == f"interval: must be one of 1m, 10m, 1h, 1d, got {bad!r}"


def test_ten_oclock_moscow_opens_a_new_bucket_of_every_intraday_width() -> None:
    before, edge = TEN_MSK - SECOND, TEN_MSK
    for interval in (Interval.MINUTE, Interval.TEN_MINUTES, Interval.HOUR):
        assert bucket_start(edge, interval) == TEN_MSK
        assert bucket_end(before, interval) == TEN_MSK
        assert bucket_start(before, interval) == TEN_MSK - interval.width
    made = candles([pub(before, 100.0, 1), pub(edge, 101.0, 2)], Interval.TEN_MINUTES)
    assert [(c.start, c.end, c.open, c.close, c.count) for c in made] == [
        (TEN_MSK - timedelta(minutes=10), TEN_MSK, 100.0, 100.0, 1),
        (TEN_MSK, TEN_MSK + timedelta(minutes=10), 101.0, 101.0, 1),
    ]


def test_a_day_is_a_moscow_calendar_day_from_21_utc() -> None:
    last_of_day = MIDNIGHT_MSK - timedelta(seconds=15)  # 23:59:45 Moscow, 6 May
    made = candles(
        [
            pub(TEN_MSK, 100.0, 1),
            pub(last_of_day, 104.0, 2),
            pub(MIDNIGHT_MSK, 90.0, 3),  # 00:00 Moscow, 7 May: the next day
        ],
        Interval.DAY,
    )
    assert [(c.start, c.end, c.open, c.close, c.count) for c in made] == [
        (MIDNIGHT_MSK - timedelta(days=1), MIDNIGHT_MSK, 100.0, 104.0, 2),
        (MIDNIGHT_MSK, MIDNIGHT_MSK + timedelta(days=1), 90.0, 90.0, 1),
    ]
    # 02:00 UTC on 7 May is 05:00 Moscow on 7 May: the day that began at 21:00 UTC.
    assert bucket_start(datetime(2024, 5, 7, 2, 0, tzinfo=UTC), Interval.DAY) == MIDNIGHT_MSK


def test_open_high_low_close_count_and_sequence_numbers_by_hand() -> None:
    values = [2800.125, 2803.5, 2799.75, 2801.0]
    series = [pub(TEN_MSK + i * timedelta(seconds=15), v, 10 + i) for i, v in enumerate(values)]
    [candle] = candles(series, Interval.MINUTE)
    assert ohlc(candle) == (2800.125, 2803.5, 2799.75, 2801.0)
    assert (candle.count, candle.first_seq, candle.last_seq) == (4, 10, 13)
    assert candle.first_time == TEN_MSK
    assert candle.last_time == TEN_MSK + timedelta(seconds=45)
    assert candle.official_close is False


def test_full_precision_is_kept() -> None:
    [candle] = candles([pub(TEN_MSK, 2892.441974023443, 1)], Interval.HOUR)
    assert candle.open == candle.close == 2892.441974023443


def test_indicative_values_are_left_out_and_a_bucket_of_them_alone_gives_no_candle() -> None:
    auction = TEN_MSK + timedelta(hours=8, minutes=40)  # 18:40 Moscow, closing auction
    made = candles(
        [
            pub(auction - timedelta(seconds=30), 100.0, 1),
            pub(auction - timedelta(seconds=15), 101.0, 2),
            pub(auction, 150.0, 3, "indicative"),  # same hour, far off: must not count
            pub(auction + timedelta(seconds=15), 50.0, 4, "indicative"),
        ],
        Interval.HOUR,
    )
    [hour] = made
    assert ohlc(hour) == (100.0, 101.0, 100.0, 101.0)
    assert hour.count == 2
    assert hour.last_seq == 2
    only_auction = candles([pub(auction, 150.0, 3, "indicative")], Interval.MINUTE)
    assert only_auction == []


def test_the_official_close_sets_the_close_of_the_day() -> None:
    close_time = TEN_MSK + timedelta(hours=8, minutes=50)  # 18:50 Moscow
    made = candles(
        [
            pub(TEN_MSK, 100.0, 1),
            pub(TEN_MSK + timedelta(hours=1), 105.0, 2),
            pub(close_time - timedelta(minutes=5), 103.0, 3, "indicative"),
            pub(close_time, 102.0, 4, "close"),
            # A value after the close in the same day (none is published so, but a store may
            # hold one): it counts in the range, the close stays the official one.
            pub(close_time + timedelta(minutes=1), 99.0, 5),
        ],
        Interval.DAY,
    )
    [day] = made
    assert ohlc(day) == (100.0, 105.0, 99.0, 102.0)
    assert day.count == 4
    assert day.official_close is True
    assert day.closed is True  # the close makes it final without a clock


def test_a_close_on_a_bucket_edge_closes_the_bucket_that_ends_there() -> None:
    # An hourly grid rounds a 23:50 close up to 00:00 Moscow: it is the close of the day before.
    made = candles(
        [
            pub(MIDNIGHT_MSK - timedelta(hours=1), 100.0, 1),
            pub(MIDNIGHT_MSK, 101.0, 2, "close"),
            pub(MIDNIGHT_MSK + timedelta(hours=10), 102.0, 3),
        ],
        Interval.DAY,
    )
    assert [(c.start, c.close, c.count, c.official_close) for c in made] == [
        (MIDNIGHT_MSK - timedelta(days=1), 101.0, 2, True),
        (MIDNIGHT_MSK, 102.0, 1, False),
    ]
    # An intraday value at the same instant opens the next bucket instead.
    [later] = candles([pub(MIDNIGHT_MSK, 101.0, 2)], Interval.DAY)
    assert later.start == MIDNIGHT_MSK


def test_empty_buckets_are_omitted() -> None:
    made = candles(
        [
            pub(TEN_MSK, 100.0, 1),
            pub(TEN_MSK + timedelta(minutes=3, seconds=15), 101.0, 2),
            pub(TEN_MSK + timedelta(minutes=3, seconds=30), 99.0, 3),
        ],
        Interval.MINUTE,
    )
    assert [c.start for c in made] == [TEN_MSK, TEN_MSK + timedelta(minutes=3)]
    assert [(c.open, c.low, c.close) for c in made] == [(100.0, 100.0, 100.0), (101.0, 99.0, 99.0)]
    assert candles([], Interval.DAY) == []


def test_a_candle_is_closed_once_now_reaches_its_end() -> None:
    series = [pub(TEN_MSK, 100.0, 1)]
    end = TEN_MSK + timedelta(minutes=1)
    assert candles(series, Interval.MINUTE)[0].closed is False  # no clock, no close: not known
    assert candles(series, Interval.MINUTE, now=end - SECOND)[0].closed is False
    assert candles(series, Interval.MINUTE, now=end)[0].closed is True


def test_buckets_follow_the_given_offset() -> None:
    moment = datetime(2024, 5, 6, 7, 40, tzinfo=UTC)
    assert bucket_start(moment, Interval.DAY, timedelta(0)) == datetime(2024, 5, 6, tzinfo=UTC)
    # UTC+05:30: local hours start at half past the UTC hour.
    half = timedelta(hours=5, minutes=30)
    assert bucket_start(moment, Interval.HOUR, half) == datetime(2024, 5, 6, 7, 30, tzinfo=UTC)
    assert bucket_start(moment, Interval.DAY, half) == datetime(2024, 5, 5, 18, 30, tzinfo=UTC)


def test_unordered_input_is_put_in_time_order_and_one_index_is_required() -> None:
    series = [pub(TEN_MSK + timedelta(seconds=30), 3.0, 3), pub(TEN_MSK, 1.0, 1)]
    [candle] = candles(series, Interval.MINUTE)
    assert (candle.open, candle.close, candle.first_seq, candle.last_seq) == (1.0, 3.0, 1, 3)
    other = Publication(
        code="RTSI",
        currency="USD",
        value=1.0,
        time=TEN_MSK,
        seq=1,
        previous_close=1.0,
        capitalization=1.0,
        divisor=1.0,
        fx_rate=90.0,
    )
    with pytest.raises(ValueError, match="one index"):
        candles([*series, other], Interval.MINUTE)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3 * 24 * 3600 // 15),  # grid steps of 15 s
            st.floats(min_value=1.0, max_value=10_000.0, allow_nan=False),
            st.sampled_from(["intraday", "intraday", "indicative", "close"]),
        ),
        max_size=60,
        unique_by=lambda item: item[0],
    ),
    st.sampled_from(list(Interval)),
)
def test_every_value_lands_in_one_candle_that_spans_it(
    items: list[tuple[int, float, str]], interval: Interval
) -> None:
    series = [
        pub(TEN_MSK + step * timedelta(seconds=15), value, seq, kind)
        for seq, (step, value, kind) in enumerate(sorted(items), start=1)
    ]
    made = candles(series, interval)
    counted = [p for p in series if p.kind != "indicative"]
    assert sum(c.count for c in made) == len(counted)
    assert [c.start for c in made] == sorted({c.start for c in made})
    for candle in made:
        assert candle.end - candle.start == interval.width
        # A close on an edge belongs to the bucket ending there; any other value to the one
        # starting there.
        inside = [
            p
            for p in counted
            if (
                candle.start < p.time <= candle.end
                if p.kind == "close"
                else candle.start <= p.time < candle.end
            )
        ]
        assert len(inside) == candle.count
        assert candle.low == min(p.value for p in inside)
        assert candle.high == max(p.value for p in inside)
        assert candle.low <= candle.open <= candle.high
        assert candle.low <= candle.close <= candle.high
