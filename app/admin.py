"""Base changes: POST /v1/admin/bases (admin token) schedules one; GET /v1/bases shows them."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.auth import check_admin
from app.errors import ApiError
from app.ingest import load_json, read_body
from app.models import BaseChangeRequest, error_responses
from app.services import Services, leading_engine, request_services
from streaming.engine import Engine
from streaming.errors import BaseLoadError, ConfigError, TickRejected
from streaming.methodology.base import IndexBase, parse_base_csv
from streaming.methodology.definition import Family, IndexDefinition
from streaming.methodology.review import (
    BaseChange,
    BaseChangeError,
    DivisorPolicy,
    effective_moment,
    parse_policy,
)
from streaming.publication import EngineState
from streaming.ticks import parse_time

router = APIRouter(tags=["bases"])

ServicesDep = Annotated[Services, Depends(request_services)]

# Declared for the OpenAPI document only; check_admin reads the header itself.
_bearer = HTTPBearer(auto_error=False, description="the admin token")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": BaseChangeRequest.model_json_schema(),
                "example": {
                    "definition": "IMOEX",
                    "base_csv": "secids,issuer,issue_size_index,waprice\n"
                    "SBER,Sberbank,10735468331.5,301.25\n",
                    "effective": "2026-12-18",
                    "reason": "quarterly review",
                    "official_divisors": {"IMOEX": 3416313660.29},
                    "divisor_policy": "official",
                },
            }
        },
    }
}


def decode_request(body: bytes) -> BaseChangeRequest:
    """The body as a base change request, or a 422 naming the field at fault."""
    data = load_json(body, "a JSON object")
    if not isinstance(data, dict):
        raise ApiError(422, f"body: must be a JSON object, got {type(data).__name__}", field="body")
    try:
        return BaseChangeRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ApiError(422, f"{field}: {first.get('msg', 'invalid')}", field=field) from None


def find_definition(family: Family, name: str) -> IndexDefinition:
    """The definition of this name, or a 404 naming it and the known ones."""
    for definition in family.definitions:
        if definition.name == name:
            return definition
    known = [definition.name for definition in family.definitions]
    raise ApiError(
        404,
        f"unknown index definition {name!r}; known: {', '.join(known)}",
        field="definition",
        definition=name,
        known=known,
    )


def parse_effective(text: str, family: Family) -> datetime:
    """A date is the start of that day in exchange local time; a moment is taken as given (UTC)."""
    value = text.strip()
    if _DATE.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ApiError(
                422, f"effective: not a calendar date: {text!r}", field="effective"
            ) from None
        try:
            return effective_moment(day, family.session.utc_offset)
        except OverflowError:  # the first or the last day there is, less the offset
            raise ApiError(422, f"effective: out of range: {text!r}", field="effective") from None
    try:
        return parse_time(value, "effective")
    except TickRejected as error:
        raise ApiError(
            422,
            f"effective: {error.reason}; expected YYYY-MM-DD or an ISO 8601 moment",
            field="effective",
        ) from None


def parse_base(text: str, definition: str) -> IndexBase:
    """The CSV text as a base; a 422 naming the row, the column and the reason otherwise."""
    try:
        return parse_base_csv(text, f"base_csv of {definition}")
    except BaseLoadError as error:
        where = []
        if error.row is not None:
            where.append(f"row {error.row}")
        if error.column is not None:
            where.append(f"column {error.column!r}")
        prefix = f"base_csv, {', '.join(where)}" if where else "base_csv"
        raise ApiError(
            422,
            f"{prefix}: {error.reason}",
            field="base_csv",
            row=error.row,
            column=error.column,
            reason=error.reason,
        ) from None


def _config_error(error: ConfigError) -> ApiError:
    return ApiError(422, f"{error.key}: {error.reason}", field=error.key, reason=error.reason)


def build_change(
    request: BaseChangeRequest, family: Family
) -> tuple[BaseChange, DivisorPolicy | None]:
    """The base change and policy a request asks for; every fault is a 404 or 422 naming it."""
    definition = find_definition(family, request.definition)
    base = parse_base(request.base_csv, definition.name)
    effective = parse_effective(request.effective, family)
    try:
        policy = None if request.divisor_policy is None else parse_policy(request.divisor_policy)
        change = BaseChange(
            definition=definition.name,
            base=base,
            effective=effective,
            reason=request.reason,
            official_divisors=dict(request.official_divisors or {}),
        )
    except ConfigError as error:
        raise _config_error(error) from None
    return change, policy


def _read_change(body: bytes, family: Family) -> tuple[BaseChange, DivisorPolicy | None]:
    return build_change(decode_request(body), family)


@router.post(
    "/v1/admin/bases",
    status_code=202,
    dependencies=[Depends(_bearer)],
    openapi_extra=_OPENAPI_BODY,
    responses=error_responses(
        (401, "missing or malformed Authorization header"),
        (403, "wrong token (the ingest token is not an admin token)"),
        (404, "unknown index definition"),
        (413, "body too large"),
        (422, "bad base CSV (row, column, reason) or a field the engine refuses"),
        (503, "admin API disabled, or this process runs no engine"),
    ),
)
async def schedule_base(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Schedule a new base for one definition; it takes effect at the first grid step at or
    after `effective` (at once, at the next step, when that moment has passed)."""
    engine = _engine_for_admin(services, authorization)
    body = await read_body(request, services.max_body_bytes)
    # A large CSV takes a while to parse; keep the event loop free for the WebSocket fan-out.
    change, policy = await run_in_threadpool(_read_change, body, engine.family)
    try:
        scheduled = engine.schedule_base_change(change, policy)
    except ConfigError as error:
        raise _config_error(error) from None
    except BaseChangeError as error:
        raise ApiError(
            422,
            f"{error.field}: {error.value!r}: {error.reason}",
            field=error.field,
            value=error.value,
            reason=error.reason,
        ) from None
    return scheduled


def _engine_for_admin(services: Services, authorization: str | None) -> Engine:
    check_admin(authorization, services.admin_token)
    return leading_engine(services)


@router.delete(
    "/v1/admin/bases/{definition}/{effective}",
    dependencies=[Depends(_bearer)],
    responses=error_responses(
        (401, "missing or malformed Authorization header"),
        (403, "wrong token"),
        (404, "unknown definition or no change scheduled at that moment"),
        (503, "admin API disabled, or this process runs no engine"),
    ),
)
async def cancel_base(
    definition: str,
    effective: str,
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Cancel a scheduled base change (effective: the ISO 8601 UTC moment it was scheduled at)."""
    engine = _engine_for_admin(services, authorization)
    name = find_definition(engine.family, definition).name
    moment = parse_effective(effective, engine.family)
    try:
        return {"cancelled": engine.cancel_base_change(name, moment)}
    except ConfigError as error:
        raise ApiError(404, str(error), field=error.key) from None


@router.post(
    "/v1/admin/rebalance/{definition}",
    status_code=202,
    dependencies=[Depends(_bearer)],
    responses=error_responses(
        (401, "missing or malformed Authorization header"),
        (403, "wrong token"),
        (404, "unknown definition"),
        (422, "the definition takes its weights from its base file"),
        (503, "admin API disabled, or this process runs no engine"),
    ),
)
async def rebalance(
    definition: str,
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Recompute a capped or equal-weight index's shares at the current prices; the new base
    takes effect at the next grid step with a continuity divisor (the value does not jump)."""
    engine = _engine_for_admin(services, authorization)
    name = find_definition(engine.family, definition).name
    try:
        return engine.rebalance(name)
    except ConfigError as error:
        raise _config_error(error) from None


def view_from_state(family: Family, state: EngineState | None) -> dict[str, Any]:
    """The bases view of a process without an engine, from the state the engine saved: the
    same shape as Engine.bases_view()."""
    current: dict[str, Any] = {}
    for definition in family.definitions:
        saved = state.bases.get(definition.name) if state is not None else None
        divisors = {
            spec.code: (
                spec.divisor if state is None else state.divisors.get(spec.code, spec.divisor)
            )
            for spec in definition.indices
        }
        if saved:
            secids = [str(line[0]) for line in saved.get("lines", [])]
            current[definition.name] = {
                "source": saved.get("source"),
                "lines": len(secids),
                "secids": secids,
                "effective": saved.get("effective"),
                "label": saved.get("label"),
                "divisors": divisors,
            }
        else:
            effective = definition.effective_date
            current[definition.name] = {
                "source": definition.base.source,
                "lines": len(definition.base),
                "secids": list(definition.base.secids),
                "effective": None if effective is None else effective.isoformat(),
                "label": "definition file",
                "divisors": divisors,
            }
    # Saved scheduled records carry their whole base for a restart; the view names the lines.
    scheduled = [
        {key: value for key, value in record.items() if key != "lines"}
        for record in (state.scheduled if state is not None else [])
    ]
    return {
        "current": current,
        "scheduled": scheduled,
        "applied": list(state.base_changes) if state is not None else [],
    }


async def bases_view(services: Services) -> dict[str, Any]:
    """The engine's view when this process runs one, else the saved state's."""
    engine: Engine | None = services.engine
    if engine is not None:
        return engine.bases_view()
    return view_from_state(services.family, await services.store.load_state())


@router.get("/v1/bases")
async def get_bases(services: ServicesDep) -> dict[str, Any]:
    """The base in force per definition, the changes scheduled and those applied (with the
    computed and official divisors and their difference in ppm)."""
    return await bases_view(services)
