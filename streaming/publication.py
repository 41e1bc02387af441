"""A published index value, and the engine state saved with it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import orjson

from streaming.methodology.schedule import iso_utc
from streaming.ticks import parse_time

PUBLISHED_DECIMALS = 2


@dataclass(frozen=True, slots=True)
class Publication:
    """One index value at one grid instant. Values keep full precision; messages round them."""

    code: str
    currency: str
    value: float  # index points, full precision
    time: datetime  # the grid instant, UTC
    seq: int  # per index, never goes back
    previous_close: float  # index points, full precision
    capitalization: float  # roubles
    divisor: float
    fx_rate: float | None  # roubles per dollar, for USD indices
    kind: str = "intraday"  # intraday | indicative (auction, not tradable) | close (official)
    fx_source: str | None = None  # where the FX rate came from, e.g. "cbr:2026-11-21"
    fx_effective: str | None = None  # ISO 8601 UTC moment the FX rate took effect
    fx_stale: bool = False  # the FX rate is older than its configured maximum age
    status: str = "live"  # live | paused (auction, close, outside session) | stale (feed silent)
    stale_lines: tuple[str, ...] = ()  # lines of this index with no recent trade
    # Index points moved by the largest movers: {"since_previous": [[secid, points], ...],
    # "since_close": [...]}; USD indices add {"fx_part": {"since_previous", "since_close"}}.
    contributions: dict[str, Any] | None = None

    @property
    def change(self) -> float:
        return self.value - self.previous_close

    @property
    def change_percent(self) -> float:
        return 100.0 * self.change / self.previous_close if self.previous_close else 0.0

    def message(self, kind: str = "update", contributions: bool = False) -> dict[str, Any]:
        """The client-facing form: values rounded to the published 2 decimals; the largest
        contributions only when asked for."""
        message = {
            "type": kind,
            "code": self.code,
            "value": round(self.value, PUBLISHED_DECIMALS),
            "currency": self.currency,
            "time": iso_utc(self.time),
            "seq": self.seq,
            "previous_close": round(self.previous_close, PUBLISHED_DECIMALS),
            "change": round(self.change, PUBLISHED_DECIMALS),
            "change_percent": round(self.change_percent, 4),
            "precise_value": self.value,
            "capitalization": self.capitalization,
            "divisor": self.divisor,
            "fx_rate": self.fx_rate,
            "fx_source": self.fx_source,
            "fx_effective": self.fx_effective,
            "fx_stale": self.fx_stale,
            "kind": self.kind,
            "close": self.kind == "close",
            "status": self.status,
            "stale_lines": list(self.stale_lines),
        }
        if contributions:
            message["contributions"] = self.contributions
        return message

    def record(self) -> str:
        """The stored form: every field at full precision, JSON."""
        data = {name: getattr(self, name) for name in _PUBLICATION_ORDER}
        data["time"] = iso_utc(self.time)
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    @classmethod
    def from_record(cls, text: str | bytes) -> Publication:
        data = orjson.loads(text)
        data["time"] = parse_time(data["time"])
        data["stale_lines"] = tuple(data.get("stale_lines", ()))
        return cls(**{key: value for key, value in data.items() if key in _PUBLICATION_FIELDS})


@dataclass(slots=True)
class EngineState:
    """What the engine needs to carry on after a restart with no jump: saved at each publication."""

    trading_day: str  # ISO date in exchange local time
    prices: dict[str, float]  # roubles per line
    reference_prices: dict[str, float]  # previous close per line
    tick_times: dict[str, float]  # epoch seconds of each line's last tick (lines with one)
    seq: dict[str, int]  # last sequence number per index
    previous_close: dict[str, float]  # per index, index points
    divisors: dict[str, float]
    fx_rate: float | None
    last_grid: float  # epoch seconds of the last publication
    extra: dict[str, Any] = field(default_factory=dict)
    # Non-main profiles: {"extended": {"prices": {...}, "reference": {...}, "tick_times": {...}}}
    profiles: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # The base in force per definition: {"name": {"label", "effective", "lines": [[secid, issuer,
    # index_shares, reference_price], ...]}}; empty when the definition files' bases are in force.
    bases: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Base changes applied (newest last, bounded) and scheduled, as plain dictionaries.
    base_changes: list[dict[str, Any]] = field(default_factory=list)
    scheduled: list[dict[str, Any]] = field(default_factory=list)

    def dumps(self) -> str:
        # Shallow on purpose: orjson walks the nested dicts itself (asdict deep-copies them all).
        state = {name: getattr(self, name) for name in _STATE_ORDER}
        return orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    @classmethod
    def loads(cls, text: str | bytes) -> EngineState:
        data = orjson.loads(text)
        return cls(**{key: value for key, value in data.items() if key in _STATE_FIELDS})


_PUBLICATION_ORDER = tuple(f.name for f in fields(Publication))
_PUBLICATION_FIELDS = frozenset(_PUBLICATION_ORDER)
_STATE_ORDER = tuple(f.name for f in fields(EngineState))
_STATE_FIELDS = frozenset(_STATE_ORDER)
