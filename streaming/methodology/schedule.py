"""The publication grid and the trading session, in UTC internally and Moscow time for people."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta, timezone

from streaming.errors import ConfigError

MOSCOW = timezone(timedelta(hours=3), "MSK")
SECONDS_PER_HOUR = 3600


def validate_cadence(seconds: float) -> int:
    """A cadence is whole seconds from 1 to 3600 that divides an hour, so the grid hits :00."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
    ):
        raise ConfigError("cadence", f"must be whole seconds, got {seconds!r}")
    if seconds != int(seconds) or not 1 <= seconds <= SECONDS_PER_HOUR:
        raise ConfigError("cadence", f"must be whole seconds from 1 to 3600, got {seconds!r}")
    whole = int(seconds)
    if SECONDS_PER_HOUR % whole:
        raise ConfigError(
            "cadence", f"must divide 3600 so the grid is aligned to the clock, got {whole}"
        )
    return whole


def next_grid_instant(now_epoch: float, cadence: int) -> float:
    """The first grid instant strictly after now, epoch seconds (UTC)."""
    return (math.floor(now_epoch / cadence) + 1) * cadence


def grid_instant_at_or_before(now_epoch: float, cadence: int) -> float:
    """The latest grid instant not after now, epoch seconds (UTC)."""
    return math.floor(now_epoch / cadence) * cadence


def utc_from_epoch(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, millisecond precision."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def parse_clock(text: str, key: str) -> time:
    """'HH:MM' or 'HH:MM:SS' into a time, with an error naming the key."""
    try:
        return time.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be HH:MM, got {text!r}") from None
