"""Read-only REST endpoints: current values, constituents, history."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from app.errors import ApiError
from app.models import Constituents, History, IndexValue, error_responses, value_message
from app.services import Services, services_of
from streaming.errors import TickRejected
from streaming.methodology.schedule import iso_utc, utc_from_epoch
from streaming.publication import EngineState
from streaming.ticks import parse_time

MAX_HISTORY_LIMIT = 10_000
DEFAULT_HISTORY_LIMIT = 1_000

router = APIRouter(prefix="/v1/indices", tags=["indices"])

ServicesDep = Annotated[Services, Depends(services_of)]

_NOT_FOUND = (404, "unknown index code")


@router.get("", response_model=list[IndexValue])
async def list_indices(services: ServicesDep) -> list[dict[str, Any]]:
    """The latest value of every index, in definition order (value null if not published yet)."""
    latest = await services.store.latest()
    return [
        value_message(latest.get(spec.code), spec, "value") for spec in services.definition.indices
    ]


@router.get(
    "/{code}",
    response_model=IndexValue,
    responses=error_responses(
        _NOT_FOUND, (503, "the index has not been published yet (Retry-After given)")
    ),
)
async def get_index(code: str, services: ServicesDep) -> dict[str, Any]:
    """The latest published value of one index."""
    services.spec(code)
    publication = (await services.store.latest()).get(code)
    if publication is None:
        retry = str(services.definition.cadence_seconds)
        raise ApiError(
            503,
            f"{code} has not been published yet; the first value comes at the next grid instant"
            " of an open session",
            headers={"Retry-After": retry},
            code=code,
        )
    return publication.message("value")


def _tick_time(state: EngineState | None, secid: str) -> str | None:
    if state is None:
        return None
    epoch = state.tick_times.get(secid)
    if epoch is None or not math.isfinite(epoch):
        return None
    return iso_utc(utc_from_epoch(epoch))


@router.get(
    "/{code}/constituents", response_model=Constituents, responses=error_responses(_NOT_FOUND)
)
async def get_constituents(code: str, services: ServicesDep) -> dict[str, Any]:
    """Prices and weights of the share lines as saved with the last publication."""
    services.spec(code)
    state = await services.store.load_state()
    lines = []
    for line in services.definition.base.constituents:
        price: float | None = line.reference_price
        if state is not None:
            fallback = state.reference_prices.get(line.secid, price)
            price = state.prices.get(line.secid, fallback)
        lines.append((line, price))
    priced = [price * line.index_shares for line, price in lines if price is not None]
    complete = len(priced) == len(lines)
    total = math.fsum(priced) if complete else None
    return {
        "code": code,
        "as_of": iso_utc(utc_from_epoch(state.last_grid)) if state is not None else None,
        "seq": state.seq.get(code) if state is not None else None,
        "capitalization": total,
        "constituents": [
            {
                "secid": line.secid,
                "issuer": line.issuer,
                "price": price,
                "weight": (
                    100.0 * price * line.index_shares / total
                    if total and price is not None
                    else None
                ),
                "index_shares": line.index_shares,
                "last_tick_time": _tick_time(state, line.secid),
            }
            for line, price in lines
        ],
    }


def _query_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except TickRejected as error:
        raise ApiError(422, f"{name}: {error.reason}", field=name) from None


@router.get(
    "/{code}/history",
    response_model=History,
    responses=error_responses(_NOT_FOUND, (422, "a bad since, until or limit")),
)
async def get_history(
    code: str,
    services: ServicesDep,
    since: Annotated[
        str | None, Query(description="ISO 8601; naive means UTC", examples=["2024-05-06T07:00Z"])
    ] = None,
    until: Annotated[str | None, Query(description="ISO 8601; naive means UTC")] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_HISTORY_LIMIT, description="at most this many, the latest ones"),
    ] = DEFAULT_HISTORY_LIMIT,
) -> dict[str, Any]:
    """Published values of one index in ascending time order, since <= time <= until."""
    services.spec(code)
    start = _query_time(since, "since")
    end = _query_time(until, "until")
    if start is not None and end is not None and start > end:
        raise ApiError(422, "since: must not be after until", field="since")
    publications = await services.store.history(code, start, end, limit)
    values = [publication.message("value") for publication in publications]
    return {"code": code, "count": len(values), "values": values}
