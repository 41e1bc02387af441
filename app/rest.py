"""Read-only REST endpoints: current values, constituents, history."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from app.errors import ApiError
from app.models import Constituents, History, IndexValue, error_responses, value_message
from app.services import Services, services_of
from streaming.errors import TickRejected
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.definition import IndexDefinition
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
    return [value_message(latest.get(spec.code), spec, "value") for spec in services.family.indices]


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
        retry = str(services.family.cadence_seconds)
        raise ApiError(
            503,
            f"{code} has not been published yet; the first value comes at the next grid instant"
            " of an open session",
            headers={"Retry-After": retry},
            code=code,
        )
    return publication.message("value")


def _tick_time(times: dict[str, float], secid: str) -> str | None:
    epoch = times.get(secid)
    if epoch is None or not math.isfinite(epoch):
        return None
    return iso_utc(utc_from_epoch(epoch))


def _stale(times: dict[str, float], secid: str, after_seconds: int) -> bool:
    epoch = times.get(secid)
    if epoch is None or not math.isfinite(epoch):
        return True
    return time.time() - epoch > after_seconds


def current_base(definition: IndexDefinition, state: EngineState | None) -> IndexBase:
    """The base in force: the one a base change saved in the state, else the definition's."""
    saved = state.bases.get(definition.name) if state is not None else None
    if not saved:
        return definition.base
    return IndexBase(
        tuple(
            Constituent(secid, issuer, shares, reference_price=reference)
            for secid, issuer, shares, reference in saved["lines"]
        ),
        source=str(saved.get("label", definition.source)),
    )


def profile_tables(
    definition: IndexDefinition, state: EngineState | None
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(prices, reference prices, tick times) of the profile the definition follows."""
    if state is None:
        return {}, {}, {}
    if definition.profile == "main":
        return state.prices, state.reference_prices, state.tick_times
    table = state.profiles.get(definition.profile, {})
    return table.get("prices", {}), table.get("reference", {}), table.get("tick_times", {})


@router.get(
    "/{code}/constituents", response_model=Constituents, responses=error_responses(_NOT_FOUND)
)
async def get_constituents(code: str, services: ServicesDep) -> dict[str, Any]:
    """Prices and weights of the share lines as saved with the last publication."""
    services.spec(code)
    state = await services.store.load_state()
    definition = services.family.definition_of(code)
    prices, reference, times = profile_tables(definition, state)
    lines = []
    for line in current_base(definition, state).constituents:
        price = prices.get(line.secid, reference.get(line.secid, line.reference_price))
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
                "last_tick_time": _tick_time(times, line.secid),
                "stale": _stale(times, line.secid, services.stale_after_seconds),
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
