"""Response and message shapes of the public API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streaming.methodology.calculator import IndexSpec
from streaming.publication import Publication


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


class Constituent(BaseModel):
    """One share line of an index as of the last publication."""

    secid: str
    issuer: str
    price: float | None = Field(description="roubles")
    weight: float | None = Field(description="percent of the index capitalization, unrounded")
    index_shares: float = Field(description="Q·FF·W, shares that count in the index")
    last_tick_time: str | None = Field(description="ISO 8601 UTC of the last tick, null if none")


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

    accepted: int = Field(description="ticks applied to the index state")
    rejected: list[dict[str, Any]] = Field(
        description="one {index, field, reason} per refused tick, index = position in the batch"
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
