"""The grid and the session, in UTC and Moscow time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streaming.errors import ConfigError
from streaming.methodology.schedule import (
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


def test_iso_utc() -> None:
    assert iso_utc(datetime(2026, 11, 20, 7, 0, 15, tzinfo=UTC)) == "2026-11-20T07:00:15.000Z"
