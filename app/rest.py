"""Read-only REST endpoints: current values, constituents, history.

The three endpoints read at every refresh of a desk or a dashboard answer bytes made once per
publication (app.models.ResponseBodies) through a ReadyRoute: the endpoint takes the request and
its path parameters and returns the Response itself, so no dependency is solved and no response
is validated again per request; the OpenAPI document is made from the same signature and
response_model as for any route.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from app.errors import ApiError
from app.models import Constituents, History, IndexValue, error_responses
from app.services import Services, request_services, services_of
from streaming.errors import TickRejected
from streaming.methodology.base import Constituent, IndexBase
from streaming.methodology.definition import IndexDefinition
from streaming.methodology.schedule import iso_utc, utc_from_epoch
from streaming.publication import EngineState
from streaming.ticks import parse_time

MAX_HISTORY_LIMIT = 10_000
DEFAULT_HISTORY_LIMIT = 1_000

router = APIRouter(prefix="/v1/indices", tags=["indices"])

ServicesDep = Annotated[Services, Depends(request_services)]

_NOT_FOUND = (404, "unknown index code")
JSON = "application/json"


class ReadyRoute(APIRoute):
    """A GET route whose endpoint is called as endpoint(request, **path_params) and returns its
    Response: documented like any APIRoute, handled without dependency solving or response
    validation. Errors it raises go to the application's handlers, in the one error shape."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in (self.methods or ()):
            await super().handle(scope, receive, send)  # the usual 405
            return
        endpoint: Callable[..., Awaitable[Response]] = self.endpoint
        response = await endpoint(Request(scope, receive, send), **scope["path_params"])
        await response(scope, receive, send)


_READY: list[tuple[str, Callable[..., Awaitable[Response]], dict[str, Any]]] = []


def _ready_get(
    path: str, **options: Any
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """Declare a ReadyRoute under the router's prefix; install() adds it to an application."""

    def declare(
        endpoint: Callable[..., Awaitable[Response]],
    ) -> Callable[..., Awaitable[Response]]:
        _READY.append((path, endpoint, options))
        return endpoint

    return declare


def install(app: FastAPI) -> None:
    """Add the endpoints of this module to an application, in the order they are documented.

    The ReadyRoutes go on the application's own router: a route there is matched once per
    request, one in an included router twice."""
    for path, endpoint, options in _READY:
        app.router.add_api_route(
            router.prefix + path,
            endpoint,
            methods=["GET"],
            tags=list(router.tags),
            route_class_override=ReadyRoute,
            **options,
        )
    app.include_router(router)


@_ready_get("", response_model=list[IndexValue])
async def list_indices(request: Request) -> Response:
    """The latest value of every index, in definition order (value null if not published yet)."""
    services = services_of(request)
    latest = await services.latest_values.read()
    return Response(services.bodies.listing(services.family.indices, latest), media_type=JSON)


@_ready_get(
    "/{code}",
    response_model=IndexValue,
    responses=error_responses(
        _NOT_FOUND, (503, "the index has not been published yet (Retry-After given)")
    ),
)
async def get_index(request: Request, code: str) -> Response:
    """The latest published value of one index."""
    services = services_of(request)
    if code not in services.family.codes:
        services.spec(code)  # the 404 naming the known codes
    publication = (await services.latest_values.read()).get(code)
    if publication is None:
        retry = str(services.family.cadence_seconds)
        raise ApiError(
            503,
            f"{code} has not been published yet; the first value comes at the next grid instant"
            " of an open session",
            headers={"Retry-After": retry},
            code=code,
        )
    return Response(services.bodies.value(publication), media_type=JSON)


def _tick_time(times: dict[str, float], secid: str) -> str | None:
    epoch = times.get(secid)
    if epoch is None or not math.isfinite(epoch):
        return None
    return iso_utc(utc_from_epoch(epoch))


def _stale(times: dict[str, float], secid: str, after_seconds: float, now: float) -> bool:
    epoch = times.get(secid)
    if epoch is None or not math.isfinite(epoch):
        return True
    return now - epoch > after_seconds


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


@_ready_get(
    "/{code}/constituents", response_model=Constituents, responses=error_responses(_NOT_FOUND)
)
async def get_constituents(request: Request, code: str) -> Response:
    """Prices and weights of the share lines as saved with the last publication."""
    services = services_of(request)
    services.spec(code)
    state = await services.store.load_state()
    definition = services.family.definition_of(code)
    after = services.stale_after_seconds

    def build(now: float) -> tuple[dict[str, Any], float | None]:
        return constituents_message(code, definition, state, after, now)

    body = services.bodies.constituents(code, state, time.time(), after, build)
    return Response(body, media_type=JSON)


def constituents_message(
    code: str,
    definition: IndexDefinition,
    state: EngineState | None,
    stale_after_seconds: float,
    now: float,
) -> tuple[dict[str, Any], float | None]:
    """The constituents answer of an index from a saved state at `now` (epoch seconds), and
    the oldest last-tick time among the lines not stale yet (None if every line is)."""
    prices, reference, times = profile_tables(definition, state)
    lines = []
    for line in current_base(definition, state).constituents:
        price = prices.get(line.secid, reference.get(line.secid, line.reference_price))
        lines.append((line, price))
    priced = [price * line.index_shares for line, price in lines if price is not None]
    complete = len(priced) == len(lines)
    total = math.fsum(priced) if complete else None
    fresh = [
        epoch
        for epoch in (times.get(line.secid) for line, _ in lines)
        if epoch is not None and math.isfinite(epoch) and not now - epoch > stale_after_seconds
    ]
    message = {
        "code": code,
        "as_of": iso_utc(utc_from_epoch(state.last_grid)) if state is not None else None,
        "seq": state.seq.get(code) if state is not None else None,
        "capitalization": total,
        "constituents": [
            {
                "secid": line.secid,
                "issuer": line.issuer,
                "price": price,
                "reference_price": reference.get(line.secid, line.reference_price),
                "weight": (
                    100.0 * price * line.index_shares / total
                    if total and price is not None
                    else None
                ),
                "index_shares": line.index_shares,
                "last_tick_time": _tick_time(times, line.secid),
                "stale": _stale(times, line.secid, stale_after_seconds, now),
            }
            for line, price in lines
        ],
    }
    return message, min(fresh, default=None)


def query_time(value: str | None, name: str) -> datetime | None:
    """A time query parameter (ISO 8601), or a 422 naming it."""
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
    start = query_time(since, "since")
    end = query_time(until, "until")
    if start is not None and end is not None and start > end:
        raise ApiError(422, "since: must not be after until", field="since")
    publications = await services.store.history(code, start, end, limit)
    values = [publication.message("value") for publication in publications]
    return {"code": code, "count": len(values), "values": values}
