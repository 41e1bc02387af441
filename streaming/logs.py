"""Logging set-up for every command: plain text lines, or one JSON object per line, on stderr.

JSON lines carry `time` (UTC, ISO 8601 with milliseconds and Z), `level`, `logger`, `message`,
`exception` (the formatted traceback) when there is one, and every `extra=` field of the call.
The HTTP server's access lines also carry `client`, `method`, `path`, `http_version` and `status`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from streaming.errors import ConfigError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")
# The HTTP server's loggers: they must write through the same handler as the service's own.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
ACCESS_LOGGER = "uvicorn.access"
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
MAX_DEPTH = 8  # nesting of an extra value kept as JSON; deeper parts are written as text

# Attributes every LogRecord has; anything else on a record came from `extra=` (except the
# server's color_message, an ANSI-coloured copy of the message).
_RECORD = logging.LogRecord("", 0, "", 0, "", (), None)
_STANDARD = frozenset(_RECORD.__dict__) | {"message", "asctime", "taskName", "color_message"}
_OWN = ("time", "level", "logger", "message", "exception", "stack")


def _json_safe(value: object, depth: int = 0) -> object:
    """The value with what JSON cannot hold (NaN, infinities, objects) as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < MAX_DEPTH:
        if isinstance(value, Mapping):
            return {str(key): _json_safe(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_json_safe(item, depth + 1) for item in value]
    return str(value)


def utc_time(created: float) -> str:
    """Unix seconds as UTC ISO 8601 with milliseconds and Z: 2024-03-01T07:00:00.125Z."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call gave with `extra=`."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


def access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """client, method, path (query secrets already redacted), http_version and status of an
    access line; nothing when its arguments are not the server's five."""
    args = record.args
    if isinstance(args, tuple) and len(args) == len(ACCESS_FIELDS):
        return dict(zip(ACCESS_FIELDS, args, strict=True))
    return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == ACCESS_LOGGER:
            entry.update(access_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # set (and redacted) by a filter when one ran first
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in extra_fields(record).items():
            # An extra named like one of the line's own fields keeps its value, renamed.
            entry[f"{key}_" if key in _OWN else key] = value
        return json.dumps(_json_safe(entry), ensure_ascii=False, separators=(",", ":"))


class _Handler(logging.StreamHandler[IO[str]]):
    """The handler configure_logging installs, told apart from anyone else's."""


def _level(level: str) -> int:
    name = str(level).lower()
    if name not in LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LEVELS)}, got {level!r}")
    return logging.getLevelNamesMapping()[name.upper()]


def configure_logging(level: str, fmt: str, *, stream: IO[str] | None = None) -> None:
    """Send every log record at `level` or above to stderr (or `stream`) as `fmt` ("text":
    `time LEVEL logger: message`, "json": one object per line).

    The HTTP server's loggers (uvicorn, uvicorn.error, uvicorn.access) lose their own handlers
    and go through this one: run uvicorn with `log_config=None` afterwards, or it installs its
    own again. Calling it again replaces the handler it installed before; handlers others put
    on the root logger are left alone.
    """
    if fmt not in FORMATS:
        raise ConfigError("log_format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    threshold = _level(level)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, _Handler):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
