"""The tick stream's message format: entries of the Redis stream `{namespace}:ticks` into
validated ticks, with every refused tick named by entry, position, field and reason.

An entry is either
  - one trade, as fields: `secid`, `price` (roubles), `time` (ISO 8601, naive = UTC, or epoch
    seconds; absent = when the engine reads it), optional `volume` and `phase`; or
  - a batch, as the single field `ticks` holding JSON: an array of tick objects (the body of
    POST /v1/ticks), an array of `[secid, price, time, volume, phase]` rows, or an object of
    equal-length arrays `secid`, `price`, `time` (epoch seconds), optional `volume`, `phase`
    (what `index-ticker api` writes).
Every tick is validated as POST /v1/ticks validates it, whoever wrote it: a bad tick is refused
alone and the good ones beside it go on.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from streaming.errors import TickRejected
from streaming.ticks import (
    MAX_SECID_LENGTH,
    Tick,
    TickColumns,
    columns_of,
    parse_tick,
    parse_time,
)

BATCH_FIELD = "ticks"
TICK_FIELDS = ("secid", "price", "time", "volume", "phase")
MAX_EPOCH = 32503680000.0  # year 3000, as parse_time's limit

Fields = Mapping[bytes | str, bytes | str]


@dataclass(frozen=True, slots=True)
class StreamReject:
    """A refused tick: the entry, its position within a batch entry (None: a one-trade entry
    or the whole entry), the field and the reason."""

    entry: str
    position: int | None
    field: str
    reason: str

    def as_fields(self) -> dict[str, str]:
        """The reject as the fields of an entry of the rejects stream."""
        fields = {"entry": self.entry, "field": self.field, "reason": self.reason}
        if self.position is not None:
            fields["position"] = str(self.position)
        return fields


@dataclass(slots=True)
class Decoded:
    """The good ticks of some entries, in entry order, and the refused ones."""

    batches: list[TickColumns] = field(default_factory=list)
    rejects: list[StreamReject] = field(default_factory=list)

    def ticks(self) -> TickColumns:
        """Every good tick as one batch, in the order they were written."""
        return TickColumns.concat(self.batches) if self.batches else TickColumns.of([])


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _plain(fields: Fields) -> dict[str, str]:
    return {_text(key): _text(value) for key, value in fields.items()}


def _scalar(text: str) -> object:
    """A field's text as a number when it spells one (an ISO time never does), else the
    text."""
    try:
        number = float(text)
    except ValueError:
        return text
    return number


def decode_entries(
    entries: Sequence[tuple[str, Fields]], known: Container[str], now: datetime
) -> Decoded:
    """Validate stream entries (oldest first) against the known secids; ticks without a time
    get `now` (UTC)."""
    decoded = Decoded()
    trades: list[tuple[str, Fields]] = []  # consecutive one-trade entries, decoded together

    def flush() -> None:
        if trades:
            batch = _decode_trades(trades, known, now, decoded.rejects)
            if len(batch):
                decoded.batches.append(batch)
            trades.clear()

    for entry_id, raw in entries:
        if BATCH_FIELD in raw or BATCH_FIELD.encode() in raw:
            flush()
            batch = _decode_batch(entry_id, raw, known, now, decoded.rejects)
            if len(batch):
                decoded.batches.append(batch)
        else:
            trades.append((entry_id, raw))
    flush()
    return decoded


def _decode_trades(
    entries: list[tuple[str, Fields]],
    known: Container[str],
    now: datetime,
    rejects: list[StreamReject],
) -> TickColumns:
    """One-trade entries: in bulk when every one is plain and valid, else one by one."""
    bulk = _plain_trades(entries, known, now)
    if bulk is not None:
        return bulk
    ticks: list[Tick] = []
    for entry_id, raw in entries:
        fields = _plain(raw)
        unknown = sorted(set(fields) - set(TICK_FIELDS))
        if unknown:
            rejects.append(
                StreamReject(entry_id, None, unknown[0], f"unknown field; expected {TICK_FIELDS}")
            )
            continue
        values: dict[str, object] = dict(fields)
        for name in ("price", "volume", "time"):
            if name in values:
                values[name] = _scalar(fields[name])
        try:
            ticks.append(parse_tick(values, known, now))
        except TickRejected as error:
            rejects.append(StreamReject(entry_id, None, error.field, error.reason))
    return TickColumns.of(ticks)


def _plain_trades(
    entries: list[tuple[str, Fields]], known: Container[str], now: datetime
) -> TickColumns | None:
    """Entries of `secid` and `price` (and all or none with a `time`), each valid, as columns
    with numpy; None for anything else, which the one-by-one path then judges and names."""
    secids: list[bytes | str] = []
    prices: list[bytes | str] = []
    times: list[bytes | str] = []
    for _, raw in entries:
        if len(raw) == 2:
            secid, price = raw.get(b"secid"), raw.get(b"price")
        elif len(raw) == 3:
            secid, price, moment = raw.get(b"secid"), raw.get(b"price"), raw.get(b"time")
            if moment is None:
                return None
            times.append(moment)
        else:
            return None
        if secid is None or price is None:
            return None
        secids.append(secid)
        prices.append(price)
    if times and len(times) != len(entries):
        return None
    names: dict[bytes | str, int] = {}
    codes = np.fromiter((names.setdefault(s, len(names)) for s in secids), np.intp, len(secids))
    texts = [_text(name) for name in names]
    if not all(0 < len(t) <= MAX_SECID_LENGTH and t == t.strip() and t in known for t in texts):
        return None
    try:
        values = np.array(prices, dtype=np.bytes_).astype(np.float64)
        epochs = (
            np.array([_epoch(_text(t)) for t in times], dtype=np.float64)
            if times
            else np.full(len(entries), now.timestamp())
        )
    except (ValueError, TickRejected):
        return None
    if not (np.isfinite(values).all() and (values > 0).all()):
        return None
    return TickColumns(texts, codes, values, epochs)


def _epoch(text: str) -> float:
    """A `time` field as epoch seconds, exactly as the one-by-one path reads it."""
    return parse_time(_scalar(text)).timestamp()


def _decode_batch(
    entry_id: str,
    fields: Fields,
    known: Container[str],
    now: datetime,
    rejects: list[StreamReject],
) -> TickColumns:
    names = {_text(name): value for name, value in fields.items()}  # the JSON stays bytes
    extra = sorted(set(names) - {BATCH_FIELD})
    if extra:
        rejects.append(StreamReject(entry_id, None, extra[0], "a batch entry has only 'ticks'"))
        return TickColumns.of([])
    try:
        data = orjson.loads(names[BATCH_FIELD])
    except orjson.JSONDecodeError as error:
        rejects.append(StreamReject(entry_id, None, BATCH_FIELD, f"not JSON: {error}"))
        return TickColumns.of([])
    if not (isinstance(data, list) and all(isinstance(item, Mapping) for item in data)):
        try:
            batch = columns_of(data)
        except (ValueError, TypeError, KeyError, IndexError):
            batch = None  # some row is wrong: the rows say which
        if batch is not None and _all_good(batch, known):
            return batch
        try:
            data = _rows(data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            rejects.append(
                StreamReject(
                    entry_id,
                    None,
                    BATCH_FIELD,
                    "must be an array of ticks, an array of [secid, price, time, volume, phase] "
                    "rows or an object of equal-length arrays secid, price, time",
                )
            )
            return TickColumns.of([])
    return _decode_objects(entry_id, data, known, now, rejects)


def _decode_objects(
    entry_id: str,
    data: list[Any],
    known: Container[str],
    now: datetime,
    rejects: list[StreamReject],
) -> TickColumns:
    ticks: list[Tick] = []
    for position, item in enumerate(data):
        try:
            ticks.append(parse_tick(item, known, now))
        except TickRejected as error:
            rejects.append(StreamReject(entry_id, position, error.field, error.reason))
    return TickColumns.of(ticks)


def _all_good(batch: TickColumns, known: Container[str]) -> bool:
    """Whether every row of a columnar batch passes validation (vectorised; the usual case)."""
    if not all(
        isinstance(name, str) and 0 < len(name) <= MAX_SECID_LENGTH and name in known
        for name in batch.names
    ):
        return False
    volumes = batch.volumes
    return bool(
        (
            np.isfinite(batch.prices)
            & (batch.prices > 0)
            & np.isfinite(batch.epochs)
            & (batch.epochs >= 0)
            & (batch.epochs < MAX_EPOCH)
            & (np.isnan(volumes) | (np.isfinite(volumes) & (volumes >= 0)))
        ).all()
    )


def _rows(data: Any) -> list[object]:
    """A row-array or columnar batch as tick objects, for parse_tick to judge one by one."""
    if isinstance(data, list):
        return [
            dict(zip(TICK_FIELDS, row, strict=False)) if isinstance(row, list) else row
            for row in data
        ]
    count = len(data["secid"])
    if any(isinstance(data.get(name), list) and len(data[name]) != count for name in TICK_FIELDS):
        raise ValueError("columns of different lengths")
    return [
        {name: data[name][i] for name in TICK_FIELDS if data.get(name) is not None}
        for i in range(count)
    ]


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id `ms-seq` as numbers, for ordering; (0, 0) when it is not one."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


@dataclass(frozen=True, slots=True)
class StreamLag:
    """Where the engines' consumer group stands in the tick stream."""

    length: int  # entries the stream keeps
    last_entry: str  # the newest entry id ("0-0": none yet)
    delivered: str  # the last entry handed to a reader of the group
    pending: int  # entries handed out and not yet acknowledged
    undelivered: int | None  # entries not handed out yet (None: Redis cannot tell after a trim)
    readers: int  # consumers known to the group

    def seconds_behind(self, applied: str) -> float:
        """Seconds between the newest entry and the last one applied, from the ids' millisecond
        stamps (ids Redis made; 0 when nothing waits)."""
        newest, done = entry_key(self.last_entry)[0], entry_key(applied)[0]
        return max(0.0, (newest - done) / 1000) if self.last_entry != applied else 0.0

    def as_dict(self, applied: str) -> dict[str, object]:
        """For status and metrics."""
        return {
            "length": self.length,
            "last_entry": self.last_entry,
            "applied": applied,
            "delivered": self.delivered,
            "pending": self.pending,
            "undelivered": self.undelivered,
            "seconds_behind": round(self.seconds_behind(applied), 3),
            "readers": self.readers,
        }
