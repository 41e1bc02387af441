"""FX updates: POST /v1/fx (ingest token) feeds USD/RUB rates; GET /v1/fx shows the rate in
force and the schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.security import HTTPBearer

from app.auth import check_bearer
from app.errors import ApiError
from app.ingest import json_items, read_body
from app.models import FxResult, error_responses
from app.services import Services, leading_engine, request_services
from streaming.engine import Engine
from streaming.errors import IndexTickerError
from streaming.methodology.fx import (
    AddOutcome,
    CbrRule,
    FxLimits,
    FxRejected,
    FxSchedule,
    parse_fx_update,
)
from streaming.methodology.schedule import utc_from_epoch

router = APIRouter(tags=["fx"])

ServicesDep = Annotated[Services, Depends(request_services)]

_bearer = HTTPBearer(auto_error=False, description="the ingest token")

MAX_FX_UPDATES = 1_000  # per request: FX comes a few times a day, not in bulk

# Outcomes that leave the step out of the schedule, and the field a client should look at.
_REFUSED = {
    AddOutcome.SUPERSEDED: (
        "rate_date",
        "a CBR rate dated later is already in force or scheduled; this one is refused",
    ),
    AddOutcome.TOO_OLD: ("time", "takes effect before the retained FX history; refused"),
    AddOutcome.FULL: ("fx", "the schedule already holds its maximum of future steps; refused"),
}

_UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["rate"],
    "properties": {
        "rate": {"type": ["number", "string"], "description": "roubles per US dollar"},
        "rate_date": {
            "type": "string",
            "description": "YYYY-MM-DD: a CBR rate for that date, in force by the CBR rule",
        },
        "published_at": {
            "type": "string",
            "description": "ISO 8601 moment the rate was published; default: receipt",
        },
        "time": {"type": "string", "description": "ISO 8601 moment it takes effect (no rate_date)"},
        "source": {"type": "string", "description": "a plain token, default 'api'"},
    },
}

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_UPDATE_SCHEMA, {"type": "array", "items": _UPDATE_SCHEMA}]},
                "example": {
                    "rate": 81.2345,
                    "rate_date": "2026-11-22",
                    "published_at": "2026-11-21T11:30:00Z",
                },
            }
        },
    }
}


def decode_updates(body: bytes, limit: int) -> list[object]:
    """The body as a list of raw FX updates (one object or an array of them), or a 413/422."""
    return json_items(
        body, "an FX update object or an array of them", "FX updates", limit, single=True
    )


def take_updates(engine: Engine, raws: list[object]) -> dict[str, Any]:
    """Validate each update and hand the good ones to the engine's FX schedule, in order."""
    rule = engine.fx_settings.rule
    cbr = rule if isinstance(rule, CbrRule) else CbrRule()
    now = utc_from_epoch(engine.clock())
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        try:
            step = parse_fx_update(raw, now=now, rule=cbr)
        except FxRejected as error:
            rejected.append(
                {"index": index, "field": error.field, "reason": f"{error.field}: {error.reason}"}
            )
            continue
        outcome = engine.add_fx(step)
        refusal = _REFUSED.get(outcome)
        if refusal is None:
            accepted.append({"index": index, **step.as_dict(), "outcome": outcome.value})
        else:
            field, reason = refusal
            rejected.append(
                {
                    "index": index,
                    "field": field,
                    "reason": f"{field}: {reason}",
                    "outcome": outcome.value,
                    "step": step.as_dict(),
                }
            )
    return {"accepted": accepted, "rejected": rejected}


@router.post(
    "/v1/fx",
    response_model=FxResult,
    dependencies=[Depends(_bearer)],
    openapi_extra=_OPENAPI_BODY,
    responses=error_responses(
        (401, "missing or malformed Authorization header"),
        (403, "wrong token (the admin token is not an ingest token)"),
        (413, "body or batch too large"),
        (422, "body is not an object or an array"),
        (429, "over the rate limit of the token: retry after Retry-After seconds"),
        (503, "this process runs no engine"),
    ),
)
async def post_fx(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Feed USD/RUB rates: a CBR rate (rate_date) switches in by the CBR rule, any other at its
    time (default: now); bad updates are refused one by one."""
    check_bearer(authorization, services.ingest_token)
    services.ingest_limit.enforce(services.ingest_token)
    engine = leading_engine(services)
    body = await read_body(request, services.max_body_bytes)
    raws = decode_updates(body, min(MAX_FX_UPDATES, services.max_ticks_per_request))
    return take_updates(engine, raws)


def view_from_state(services: Services, saved: object) -> dict[str, Any]:
    """The FX view of a process without an engine, from the schedule the engine saved."""
    schedule = FxSchedule()
    if isinstance(saved, dict):
        try:
            schedule = FxSchedule.from_dict(saved)
        except IndexTickerError as error:
            raise ApiError(503, f"the saved FX schedule is unreadable: {error}") from None
    settings = services.family.fx
    limits = settings.limits if settings is not None else FxLimits()
    status = schedule.status(datetime.now(UTC), limits)
    rule = settings.rule.name if settings is not None else CbrRule.name
    return {"status": status.as_dict(), "schedule": schedule.as_dict(), "rule": rule}


@router.get("/v1/fx")
async def get_fx(services: ServicesDep) -> dict[str, Any]:
    """The FX in force now (rate in roubles per dollar, source, age, staleness) and every step
    the schedule holds, oldest first: the engine's when this process leads, else the state the
    leader saved."""
    engine = services.engine
    if engine is not None and engine.state == "running":
        return {
            "status": engine.fx_status().as_dict(),
            "schedule": engine.fx.as_dict(),
            "rule": engine.fx_settings.rule.name,
        }
    state = await services.store.load_state()
    return view_from_state(services, None if state is None else state.extra.get("fx"))
