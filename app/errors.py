"""One JSON error shape for every HTTP error: {"detail": "<reason>", ...extra fields}."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.models import ErrorBody
from streaming.errors import StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with a human reason and machine-readable extra fields (field, code, ...)."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
        self.extra = extra
        super().__init__(detail)

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}


def error_response(
    status_code: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The JSON error response every handler returns."""
    return JSONResponse({"detail": detail, **extra}, status_code=status_code, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("query", "limit") -> "limit"; body locations keep their path ("body.0.price").
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "request"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.detail, exc.headers, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return error_response(422, "invalid request")
    first = errors[0]
    field = _location(first.get("loc", ()))
    return error_response(422, f"{field}: {first.get('msg', 'invalid')}", field=field)


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, f"state store unavailable: {exc}", {"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, ours or the framework's, answer in the one JSON shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Exception, _unexpected)
    _document_one_error_shape(app)


def _document_one_error_shape(app: FastAPI) -> None:
    """Make the OpenAPI document say so too: FastAPI describes its 422 as a list of pydantic
    errors, which _validation_error never sends."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        wrong = "#/components/schemas/HTTPValidationError"
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorBody", ErrorBody.model_json_schema())
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            content = operation.get("responses", {}).get("422", {}).get("content", {})
            body = content.get("application/json", {})
            if body.get("schema", {}).get("$ref") == wrong:
                body["schema"] = {"$ref": "#/components/schemas/ErrorBody"}
        if wrong not in json.dumps(schema):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
