"""Response and message shapes of the public API, for validation and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, TypeAdapter

from streaming.methodology.calculator import IndexSpec
from streaming.publication import EngineState, Publication


class IndexValue(BaseModel):
    """One published index value (null fields for an index not published yet)."""

    type: str = Field(description="'value' over REST, 'snapshot' or 'update' over WebSocket")
    code: str = Field(examples=["IMOEX"])
    value: float | None = Field(description="index points, rounded to 2 decimals")
    currency: str = Field(examples=["RUB"])
    time: str | None = Field(description="the grid instant, ISO 8601 UTC")
    seq: int | None = Field(description="publication number of this index, never goes back")
    previous_close: float | None = Field(description="index points, 2 decimals")
    change: float | None = Field(description="value - previous_close, 2 decimals")
    change_percent: float | None = Field(description="percent, 4 decimals")
    precise_value: float | None = Field(description="index points, full precision")
    capitalization: float | None = Field(description="roubles")
    divisor: float | None
    fx_rate: float | None = Field(description="roubles per dollar, USD indices only")
    fx_source: str | None = Field(
        None, description="where the FX rate came from, e.g. 'cbr:2026-11-21', 'api', 'config'"
    )
    fx_effective: str | None = Field(
        None, description="ISO 8601 UTC moment the FX rate took effect"
    )
    fx_stale: bool = Field(False, description="the FX rate is older than its maximum age")
    kind: str | None = Field(
        None, description="intraday, indicative (auction, not tradable) or close (official)"
    )
    close: bool | None = Field(None, description="true for the official close")
    status: str | None = Field(
        None, description="live, paused (auction, close, outside session) or stale (feed quiet)"
    )
    stale_lines: list[str] | None = Field(None, description="lines with no recent trade")


class Constituent(BaseModel):
    """One share line of an index as of the last publication."""

    secid: str
    issuer: str
    price: float | None = Field(description="roubles")
    reference_price: float | None = Field(
        None, description="roubles: the line's price at the previous close, its change's base"
    )
    weight: float | None = Field(description="percent of the index capitalization, unrounded")
    index_shares: float = Field(description="Q·FF·W, shares that count in the index")
    last_tick_time: str | None = Field(description="ISO 8601 UTC of the last tick, null if none")
    stale: bool = Field(
        description="no trade for stale_after_seconds (or none yet): a suspended or quiet line"
        " keeps its last price and shows here"
    )


class Constituents(BaseModel):
    """The constituent lines of an index and the moment they are taken at."""

    code: str
    as_of: str | None = Field(description="time of the last publication (UTC); null: base prices")
    seq: int | None = Field(description="seq of the publication the state was saved with")
    capitalization: float | None = Field(description="roubles, Σ price·index_shares")
    constituents: list[Constituent]


class History(BaseModel):
    """Published values of one index in ascending time order."""

    code: str
    count: int
    values: list[IndexValue]


class IngestResult(BaseModel):
    """What happened to a batch of ticks."""

    queued: bool = Field(
        False,
        description="true when the ticks went to the durable ingest stream: the engine applies"
        " them within moments, and its guard reports held ticks in its log",
    )
    accepted: int = Field(description="ticks applied to the index state (FX ticks included)")
    rejected: list[dict[str, Any]] = Field(
        description="one {index, field, reason} per refused tick, index = position in the batch"
    )
    held: list[dict[str, Any]] = Field(
        default_factory=list,
        description="one {index, secid, reason} per tick the price guard keeps back until a"
        " further tick confirms it",
    )
    discarded: list[dict[str, Any]] = Field(
        default_factory=list,
        description="one {index, secid, reason} per tick of this batch dropped by the price guard",
    )


class BaseChangeRequest(BaseModel):
    """A new base for one index definition and the moment it takes effect."""

    model_config = ConfigDict(extra="forbid")

    definition: str = Field(description="name of the index definition", examples=["IMOEX"])
    base_csv: str = Field(
        description="the new base as CSV text in the ISS analytics layout (secids, issuer,"
        " issue_size_total, ff_factor, w_factor or issue_size_index, waprice)"
    )
    effective: str = Field(
        description="YYYY-MM-DD: the start of that day in exchange local time; or an ISO 8601"
        " moment (no offset = UTC) for an extraordinary change",
        examples=["2026-12-18", "2026-12-17T10:30:00+03:00"],
    )
    reason: str = Field("quarterly review", description="why the base changes")
    official_divisors: dict[str, StrictFloat] | None = Field(
        None, description="divisors published by the exchange for the new base, per index code"
    )
    divisor_policy: str | None = Field(
        None,
        description="'official' adopts a published divisor, 'continuity' always the computed"
        " one; default: the engine's",
        examples=["continuity"],
    )


class FxResult(BaseModel):
    """What happened to a batch of FX updates."""

    accepted: list[dict[str, Any]] = Field(
        description="one step per update the schedule holds: rate (roubles per dollar),"
        " effective_from, source, published_at (UTC), outcome and the index in the batch"
    )
    rejected: list[dict[str, Any]] = Field(
        description="one {index, field, reason} per update refused, by validation or by the"
        " schedule (then with its outcome)"
    )


class ErrorBody(BaseModel):
    """Every error: a human reason, plus fields such as 'field' or 'code' where they apply."""

    model_config = ConfigDict(extra="allow")

    detail: str = Field(examples=["since: not an ISO 8601 time: 'yesterday'"])
    field: str | None = Field(None, description="the parameter or message field at fault")


def error_responses(*pairs: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, all in the one error shape."""
    return {status: {"model": ErrorBody, "description": text} for status, text in pairs}


def value_message(publication: Publication | None, spec: IndexSpec, kind: str) -> dict[str, Any]:
    """The client message for an index: the publication's, or nulls if none was made yet."""
    if publication is not None:
        return publication.message(kind)
    return {
        "type": kind,
        "code": spec.code,
        "value": None,
        "currency": spec.currency,
        "time": None,
        "seq": None,
        "previous_close": None,
        "change": None,
        "change_percent": None,
        "precise_value": None,
        "capitalization": None,
        "divisor": spec.divisor,
        "fx_rate": None,
    }


_INDEX_VALUE = TypeAdapter(IndexValue)
_CONSTITUENTS = TypeAdapter(Constituents)


def index_value_body(message: dict[str, Any]) -> bytes:
    """An IndexValue message as the API answers it: validated by the model, compact JSON (the
    bytes FastAPI would make of it as a response_model)."""
    return _INDEX_VALUE.dump_json(_INDEX_VALUE.validate_python(message))


def constituents_body(message: dict[str, Any]) -> bytes:
    """A Constituents message as the API answers it, like index_value_body."""
    return _CONSTITUENTS.dump_json(_CONSTITUENTS.validate_python(message))


def _same(a: object, b: object) -> bool:
    # Identity first: the memory store hands out the very objects it keeps.
    return a is b or (a is not None and a == b)


class ResponseBodies:
    """The JSON bodies of the latest values, each made once and shared by every request.

    Each body is kept with what it was made from (a publication, the list of latest values,
    the saved engine state) and reused only while the request reads an equal one from the
    store, so an answer is always the body of what the store holds at that moment.
    """

    __slots__ = ("_constituents", "_listing", "_values")

    def __init__(self) -> None:
        self._values: dict[str, tuple[Publication, bytes]] = {}
        self._listing: tuple[tuple[Publication | None, ...], bytes] | None = None
        # code -> (state, moment made (epoch s), first tick time that turns stale, body)
        self._constituents: dict[
            str, tuple[EngineState | None, float, float | None, float, bytes]
        ] = {}

    def value(self, publication: Publication) -> bytes:
        """GET /v1/indices/{code}: the body of one publication."""
        cached = self._values.get(publication.code)
        if cached is not None and _same(cached[0], publication):
            if cached[0] is not publication:  # found by identity from now on
                self._values[publication.code] = (publication, cached[1])
            return cached[1]
        body = index_value_body(publication.message("value"))
        self._values[publication.code] = (publication, body)
        return body

    def listing(self, indices: tuple[IndexSpec, ...], latest: Mapping[str, Publication]) -> bytes:
        """GET /v1/indices: the latest value of every index, in definition order."""
        current = tuple(latest.get(spec.code) for spec in indices)
        cached = self._listing
        if (
            cached is not None
            and len(cached[0]) == len(current)
            and all(map(_same, cached[0], current))
        ):
            self._listing = (current, cached[1])  # found by identity from now on
            return cached[1]
        parts = [
            self.value(publication)
            if publication is not None
            else index_value_body(value_message(None, spec, "value"))
            for spec, publication in zip(indices, current, strict=True)
        ]
        body = b"[" + b",".join(parts) + b"]"
        self._listing = (current, body)
        return body

    def constituents(
        self,
        code: str,
        state: EngineState | None,
        now: float,
        stale_after_seconds: float,
        build: Callable[[float], tuple[dict[str, Any], float | None]],
    ) -> bytes:
        """GET /v1/indices/{code}/constituents from a saved state at `now` (epoch seconds).

        `build(now)` makes the message and names the oldest tick time among lines not yet
        stale: the body holds until that line turns stale (or the clock goes back)."""
        cached = self._constituents.get(code)
        if cached is not None:
            saved, made, turns_stale, after, body = cached
            if (
                after == stale_after_seconds
                and made <= now
                and (turns_stale is None or not now - turns_stale > stale_after_seconds)
                and _same(saved, state)
            ):
                self._constituents[code] = (state, made, turns_stale, after, body)
                return body
        message, turns_stale = build(now)
        body = constituents_body(message)
        self._constituents[code] = (state, now, turns_stale, stale_after_seconds, body)
        return body
