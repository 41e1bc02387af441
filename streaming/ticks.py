"""The Tick type and its validation: a raw mapping in, a Tick or a TickRejected out."""

from __future__ import annotations

import math
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import orjson

from streaming.errors import TickRejected
from streaming.methodology.phases import Phase, parse_phase

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
PhaseArray = npt.NDArray[np.int8]

# Phase codes in columnar batches: a position in PHASES, NO_PHASE when the feed gave none.
PHASES: tuple[Phase, ...] = tuple(Phase)
NO_PHASE = -1
_PHASE_CODE = {phase: code for code, phase in enumerate(PHASES)}

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


class TickColumns(Sequence[Tick]):
    """A batch of validated ticks as columns: the same trades as a list of Tick, without one
    object per trade. Secids are codes into `names`; prices in roubles; epochs in UTC seconds
    (whole microseconds, as a Tick's time); volumes NaN where none; phases codes into PHASES."""

    __slots__ = ("codes", "epochs", "names", "phases", "prices", "volumes")

    def __init__(
        self,
        names: Sequence[str],
        codes: IntArray,
        prices: FloatArray,
        epochs: FloatArray,
        volumes: FloatArray | None = None,
        phases: PhaseArray | None = None,
    ) -> None:
        n = len(codes)
        self.names = tuple(names)
        self.codes = np.asarray(codes, dtype=np.intp)
        self.prices = np.asarray(prices, dtype=np.float64)
        self.epochs = np.asarray(epochs, dtype=np.float64)
        self.volumes = (
            np.full(n, np.nan) if volumes is None else np.asarray(volumes, dtype=np.float64)
        )
        self.phases = (
            np.full(n, NO_PHASE, dtype=np.int8)
            if phases is None
            else np.asarray(phases, dtype=np.int8)
        )
        if not (len(self.prices) == len(self.epochs) == len(self.volumes) == len(self.phases) == n):
            raise ValueError("tick columns must all have the same length")

    @classmethod
    def of(cls, ticks: Sequence[Tick]) -> TickColumns:
        """The columns of a list of ticks (a TickColumns is returned as it is)."""
        if isinstance(ticks, TickColumns):
            return ticks
        names: dict[str, int] = {}
        codes = [names.setdefault(t.secid, len(names)) for t in ticks]
        return cls(
            list(names),
            np.array(codes, dtype=np.intp),
            np.array([t.price for t in ticks], dtype=np.float64),
            np.array([t.time.timestamp() for t in ticks], dtype=np.float64),
            np.array([math.nan if t.volume is None else t.volume for t in ticks]),
            np.array(
                [NO_PHASE if t.phase is None else _PHASE_CODE[t.phase] for t in ticks],
                dtype=np.int8,
            ),
        )

    @classmethod
    def concat(cls, batches: Sequence[TickColumns]) -> TickColumns:
        """One batch holding several, in order."""
        if len(batches) == 1:
            return batches[0]
        names: dict[str, int] = {}
        codes = []
        for batch in batches:
            remap = np.array(
                [names.setdefault(name, len(names)) for name in batch.names], dtype=np.intp
            )
            codes.append(remap[batch.codes] if len(batch.codes) else batch.codes)
        return cls(
            list(names),
            np.concatenate(codes) if codes else np.empty(0, dtype=np.intp),
            np.concatenate([b.prices for b in batches]) if batches else np.empty(0),
            np.concatenate([b.epochs for b in batches]) if batches else np.empty(0),
            np.concatenate([b.volumes for b in batches]) if batches else np.empty(0),
            np.concatenate([b.phases for b in batches]) if batches else np.empty(0, dtype=np.int8),
        )

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, index: int) -> Tick: ...

    @overload
    def __getitem__(self, index: slice) -> TickColumns: ...

    def __getitem__(self, index: int | slice) -> Tick | TickColumns:
        if isinstance(index, slice):
            return TickColumns(
                self.names,
                self.codes[index],
                self.prices[index],
                self.epochs[index],
                self.volumes[index],
                self.phases[index],
            )
        return self.tick(index)

    def __iter__(self) -> Iterator[Tick]:
        return (self.tick(i) for i in range(len(self)))

    def take(self, positions: IntArray) -> TickColumns:
        """The trades at some positions, in the order given."""
        return TickColumns(
            self.names,
            self.codes[positions],
            self.prices[positions],
            self.epochs[positions],
            self.volumes[positions],
            self.phases[positions],
        )

    def tick(self, i: int) -> Tick:
        """The i-th trade as a Tick."""
        volume = float(self.volumes[i])
        phase = int(self.phases[i])
        return Tick(
            secid=self.names[int(self.codes[i])],
            price=float(self.prices[i]),
            time=datetime.fromtimestamp(float(self.epochs[i]), tz=UTC),
            volume=None if volume != volume else volume,
            phase=None if phase == NO_PHASE else PHASES[phase],
        )

    def secids(self) -> list[str]:
        """The secid of every trade, in order."""
        names = self.names
        return [names[c] for c in self.codes.tolist()]


def encode_ticks(ticks: Sequence[Tick]) -> bytes:
    """Validated ticks as compact columnar JSON for the durable ingest stream: an object of
    equal-length arrays (secid, price, time in epoch seconds, volume, phase; null for none)."""
    batch = TickColumns.of(ticks)
    volumes = batch.volumes.tolist()
    phases = batch.phases.tolist()
    document: dict[str, Any] = {
        "secid": batch.secids(),
        "price": batch.prices.tolist(),
        "time": batch.epochs.tolist(),
    }
    if not np.isnan(batch.volumes).all():
        document["volume"] = [None if v != v else v for v in volumes]
    if (batch.phases != NO_PHASE).any():
        document["phase"] = [None if p == NO_PHASE else PHASES[p].value for p in phases]
    return orjson.dumps(document)


def decode_columns(text: str | bytes) -> TickColumns:
    """The inverse of encode_ticks, straight into columns (the ticks were validated before they
    were written). Entries written as a list of [secid, price, time, volume, phase] rows are
    read too."""
    return columns_of(orjson.loads(text))


def columns_of(data: Any) -> TickColumns:
    """decode_columns of a parsed document: columns, or a list of rows."""
    if isinstance(data, list):
        rows = data
        data = {
            "secid": [row[0] for row in rows],
            "price": [row[1] for row in rows],
            "time": [row[2] for row in rows],
            "volume": [row[3] for row in rows],
            "phase": [row[4] for row in rows],
        }
    if not isinstance(data, dict):
        raise ValueError(f"a tick stream entry must be an object, got {type(data).__name__}")
    secids = data["secid"]
    n = len(secids)
    names: dict[str, int] = {}
    codes = np.fromiter((names.setdefault(s, len(names)) for s in secids), np.intp, n)
    volumes = data.get("volume")
    phases = data.get("phase")
    batch = TickColumns(
        list(names),
        codes,
        np.array(data["price"], dtype=np.float64),
        np.array(data["time"], dtype=np.float64),
        None if volumes is None else np.array(volumes, dtype=np.float64),
        None
        if phases is None
        else np.array(
            [NO_PHASE if p is None else _PHASE_CODE[Phase(p)] for p in phases], dtype=np.int8
        ),
    )
    return batch


def decode_ticks(text: str | bytes) -> list[Tick]:
    """The inverse of encode_ticks, as Tick objects."""
    return list(decode_columns(text))
