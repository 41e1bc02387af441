"""The Tick type and its validation: a raw mapping in, a Tick or a TickRejected out."""

from __future__ import annotations

import json
import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from streaming.errors import TickRejected
from streaming.methodology.phases import Phase, parse_phase

MAX_SECID_LENGTH = 32


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade of a share line: price in roubles, time in UTC."""

    secid: str
    price: float
    time: datetime
    volume: float | None = None
    phase: Phase | None = None  # as the feed says; None: known from the tick's time


def _number(value: object, field: str) -> float:
    # bool is an int subclass in Python; a JSON true is never a price.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TickRejected(field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise TickRejected(field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise TickRejected(field, f"must be finite, got {value!r}")
    return number


def parse_time(value: object, field: str = "time") -> datetime:
    """Parse an ISO 8601 string (naive means UTC) or epoch seconds into an aware UTC datetime."""
    if isinstance(value, bool):
        raise TickRejected(field, "must be an ISO 8601 string or epoch seconds, got bool")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not 0 <= value < 32503680000:
            raise TickRejected(field, f"epoch seconds out of range: {value!r}")
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str):
        raise TickRejected(
            field, f"must be an ISO 8601 string or epoch seconds, got {type(value).__name__}"
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TickRejected(field, f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # an offset that carries the moment past year 1 or 9999
        raise TickRejected(field, f"out of range: {value!r}") from None


def parse_tick(raw: object, known_secids: Container[str], now: datetime) -> Tick:
    """Validate one raw tick mapping; raise TickRejected naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise TickRejected("tick", f"must be a JSON object, got {type(raw).__name__}")
    if "secid" not in raw:
        raise TickRejected("secid", "missing")
    secid = raw["secid"]
    if not isinstance(secid, str):
        raise TickRejected("secid", f"must be a string, got {type(secid).__name__}")
    secid = secid.strip()
    if not secid:
        raise TickRejected("secid", "empty")
    if len(secid) > MAX_SECID_LENGTH:
        raise TickRejected("secid", f"longer than {MAX_SECID_LENGTH} characters")
    if secid not in known_secids:
        raise TickRejected("secid", f"unknown secid {secid!r}: not a constituent")
    if "price" not in raw:
        raise TickRejected("price", "missing")
    price = _number(raw["price"], "price")
    if price <= 0:
        raise TickRejected("price", f"must be positive, got {raw['price']!r}")
    time = now if raw.get("time") is None else parse_time(raw["time"])
    volume: float | None = None
    if raw.get("volume") is not None:
        volume = _number(raw["volume"], "volume")
        if volume < 0:
            raise TickRejected("volume", f"must not be negative, got {raw['volume']!r}")
    phase = None if raw.get("phase") is None else parse_phase(raw["phase"])
    return Tick(secid=secid, price=price, time=time, volume=volume, phase=phase)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused tick: its position in the batch and why."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "field": self.field, "reason": f"{self.field}: {self.reason}"}


def parse_batch(
    raws: list[object], known_secids: Container[str], now: datetime
) -> tuple[list[Tick], list[Rejection]]:
    """Validate a batch: good ticks are kept whatever their neighbours are."""
    ticks: list[Tick] = []
    rejections: list[Rejection] = []
    for position, raw in enumerate(raws):
        try:
            ticks.append(parse_tick(raw, known_secids, now))
        except TickRejected as error:
            rejections.append(Rejection(position, error.field, error.reason))
    return ticks, rejections


def encode_ticks(ticks: Sequence[Tick]) -> str:
    """Validated ticks as compact JSON for the durable ingest stream."""
    return json.dumps(
        [
            [
                t.secid,
                t.price,
                t.time.timestamp(),
                t.volume,
                None if t.phase is None else t.phase.value,
            ]
            for t in ticks
        ],
        separators=(",", ":"),
    )


def decode_ticks(text: str | bytes) -> list[Tick]:
    """The inverse of encode_ticks (the ticks were validated before they were written)."""
    return [
        Tick(
            secid=secid,
            price=float(price),
            time=datetime.fromtimestamp(epoch, tz=UTC),
            volume=volume,
            phase=None if phase is None else Phase(phase),
        )
        for secid, price, epoch, volume, phase in json.loads(text)
    ]
