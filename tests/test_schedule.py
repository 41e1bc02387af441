"""The grid and the session, in UTC and Moscow time."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from streaming.errors import ConfigError
from streaming.methodology.schedule import (
    AlwaysOpen,
    SessionHours,
    grid_instant_at_or_before,
    iso_utc,
    next_grid_instant,
    validate_cadence,
)


def test_grid_is_aligned_to_the_clock() -> None:
    ten_msk = datetime(2026, 11, 20, 7, 0, tzinfo=UTC).timestamp()  # 10:00:00 Moscow
    assert next_grid_instant(ten_msk, 15) == ten_msk + 15
    assert next_grid_instant(ten_msk - 0.001, 15) == ten_msk
    assert next_grid_instant(ten_msk + 7.2, 15) == ten_msk + 15
    assert grid_instant_at_or_before(ten_msk + 14.99, 15) == ten_msk
    assert next_grid_instant(ten_msk + 0.5, 1) == ten_msk + 1


@pytest.mark.parametrize("bad", [0, -15, 7, 3601, 1.5, float("nan"), True])
def test_bad_cadence(bad: float) -> None:
    with pytest.raises(ConfigError, match="cadence"):
        validate_cadence(bad)


def test_good_cadences() -> None:
    assert [validate_cadence(c) for c in (1, 5, 15, 60, 15.0)] == [1, 5, 15, 60, 15]


def test_moex_session_hours_in_moscow_time() -> None:
    session = SessionHours()
    friday = datetime(2026, 11, 20, tzinfo=UTC)
    assert not session.is_open(friday.replace(hour=6, minute=59, second=59))  # 09:59:59 MSK
    assert session.is_open(friday.replace(hour=7))  # 10:00:00 MSK
    assert session.is_open(friday.replace(hour=15, minute=50))  # 18:50:00 MSK, the close
    assert not session.is_open(friday.replace(hour=15, minute=50, second=15))
    saturday = datetime(2026, 11, 21, 9, tzinfo=UTC)
    assert not session.is_open(saturday)
    assert session.trading_day(datetime(2026, 11, 20, 22, tzinfo=UTC)).isoformat() == "2026-11-21"
    assert AlwaysOpen().is_open(saturday)


def test_session_hours_are_configuration() -> None:
    later = SessionHours(close=time(19, 0))
    assert later.is_open(datetime(2026, 11, 20, 15, 55, tzinfo=UTC))
    with pytest.raises(ConfigError, match="close"):
        SessionHours(open=time(19, 0), close=time(10, 0))


def test_iso_utc() -> None:
    assert iso_utc(datetime(2026, 11, 20, 7, 0, 15, tzinfo=UTC)) == "2026-11-20T07:00:15.000Z"
