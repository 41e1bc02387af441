"""POST /v1/ticks: authenticated batches of trade prices into the running engine."""

from __future__ import annotations

import json
from collections.abc import Container, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app import metrics
from app.auth import check_bearer
from app.errors import ApiError
from app.models import IngestResult, error_responses
from app.services import Services, request_services
from streaming.errors import StoreUnavailable
from streaming.ticks import Rejection, Tick, parse_batch

router = APIRouter(tags=["ingest"])

# Declared for the OpenAPI document only; the header is checked by check_bearer, which tells a
# missing header (401) from a malformed one (401) and a wrong token (403).
_bearer = HTTPBearer(auto_error=False, description="the ingest token")

_TICK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["secid", "price"],
    "properties": {
        "secid": {"type": "string", "description": "a constituent line, e.g. SBER"},
        "price": {"type": "number", "exclusiveMinimum": 0, "description": "roubles"},
        "time": {
            "type": ["string", "number"],
            "description": "ISO 8601 (naive = UTC) or epoch seconds; default: time of receipt",
        },
        "volume": {"type": "number", "minimum": 0},
    },
}

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": _TICK_SCHEMA},
                "example": [
                    {"secid": "SBER", "price": 301.25, "time": "2024-05-06T07:00:01.250Z"},
                    {"secid": "GAZP", "price": 162.4, "volume": 10},
                ],
            }
        },
    }
}


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds {limit} bytes", limit=limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as more than `limit` bytes arrive."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ApiError(400, f"malformed Content-Length {declared!r}") from None
        if declared_bytes > limit:
            raise _too_large(limit)
    body = bytearray()
    # Counted while streaming: a chunked body or a lying Content-Length cannot exceed the limit.
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect:
        # Nobody is left to answer; a plain 400 keeps it out of the error log.
        raise ApiError(400, "the client went away before the body was complete") from None
    return bytes(body)


def load_json(body: bytes, expected: str) -> object:
    """Parse a JSON request body, or a 422 naming `body` and what is wrong with it; `expected`
    says what the body should be ("a JSON array of ticks")."""
    if not body.strip():
        raise ApiError(422, f"body: empty; expected {expected}", field="body")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(422, "body: not UTF-8 text", field="body") from None
    except json.JSONDecodeError as error:
        raise ApiError(422, f"body: not valid JSON ({error})", field="body") from None
    except RecursionError:
        raise ApiError(422, "body: JSON nested too deeply", field="body") from None


def json_items(
    body: bytes, expected: str, noun: str, limit: int, *, single: bool = False
) -> list[object]:
    """The body as a JSON array (or, with `single`, also one object) of at most `limit` items;
    422 naming `body` when it is something else, 413 when it has too many `noun`."""
    data = load_json(body, expected)
    if single and isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise ApiError(422, f"body: must be {expected}, got {type(data).__name__}", field="body")
    if len(data) > limit:
        raise ApiError(
            413,
            f"body: {len(data)} {noun} in one request; the limit is {limit}",
            field="body",
            limit=limit,
        )
    return data


def decode_batch(body: bytes, max_ticks: int) -> list[object]:
    """The body as a JSON array of raw ticks, or a 413/422 saying what is wrong with it."""
    return json_items(body, "a JSON array of ticks", "ticks", max_ticks)


def _validate(
    body: bytes, max_ticks: int, known: Container[str], now: datetime
) -> tuple[list[Tick], list[Rejection]]:
    return parse_batch(decode_batch(body, max_ticks), known, now)


@router.post(
    "/v1/ticks",
    response_model=IngestResult,
    dependencies=[Depends(_bearer)],
    openapi_extra=_OPENAPI_BODY,
    responses=error_responses(
        (401, "missing or malformed Authorization header"),
        (403, "wrong token"),
        (413, "body or batch too large"),
        (422, "body is not a JSON array"),
        (429, "over the rate limit of the token: retry after Retry-After seconds"),
        (503, "this process runs no engine"),
    ),
)
async def post_ticks(
    request: Request,
    services: Annotated[Services, Depends(request_services)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Apply a batch of trade prices; bad ticks are refused one by one, good ones still apply."""
    try:
        answer = await _ingest(request, services, authorization)
    except ApiError as error:
        metrics.count_ingest_request(error.status_code)
        raise
    except Exception:
        metrics.count_ingest_request(500)
        raise
    metrics.count_ingest_request(200)
    return answer


async def _ingest(
    request: Request, services: Services, authorization: str | None
) -> dict[str, Any]:
    check_bearer(authorization, services.ingest_token)
    services.ingest_limit.enforce(services.ingest_token)
    engine = services.engine
    if engine is None and not services.ingest_stream:
        raise ApiError(503, "this process serves the API only and accepts no ticks")
    known = (
        engine.known_secids if engine is not None else frozenset(services.family.universe().secids)
    )
    body = await read_body(request, services.max_body_bytes)
    received = datetime.now(UTC)
    # Parsing a large batch takes a while; keep the event loop free for the WebSocket fan-out.
    ticks, rejections = await run_in_threadpool(
        _validate, body, services.max_ticks_per_request, known, received
    )
    if services.ingest_stream:
        # Durable: the engine (whichever leads) applies the stream; the guard reports in its log.
        if ticks:
            try:
                await services.store.append_ticks(ticks)
            except StoreUnavailable as error:
                raise ApiError(503, f"ticks not accepted: {error}") from None
        metrics.count_ingest(len(ticks), rejections)
        return {
            "accepted": len(ticks),
            "rejected": [r.as_dict() for r in rejections],
            "held": [],
            "discarded": [],
            "queued": True,
        }
    assert engine is not None
    report = engine.submit_report(ticks)
    metrics.count_ingest(len(ticks), rejections)
    # The engine numbers the valid ticks it was given; the client knows its own body positions.
    positions = body_positions(len(ticks) + len(rejections), rejections)
    return {
        "accepted": report.applied,
        "rejected": [r.as_dict() for r in rejections],
        "held": [_guarded(positions, *entry) for entry in report.held],
        "discarded": [_guarded(positions, *entry) for entry in report.discarded],
        "queued": False,
    }


def body_positions(batch_size: int, rejections: Sequence[Rejection]) -> list[int]:
    """Body position of each valid tick, in the order the valid ticks were kept."""
    refused = {rejection.index for rejection in rejections}
    return [position for position in range(batch_size) if position not in refused]


def _guarded(positions: Sequence[int], position: int, secid: str, reason: str) -> dict[str, Any]:
    # A position outside this batch is a tick held back by an earlier request: no body index.
    index = positions[position] if 0 <= position < len(positions) else None
    return {"index": index, "secid": secid, "reason": reason}
