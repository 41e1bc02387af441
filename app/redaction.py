"""Secrets out of the server's logs.

The HTTP server logs each request line with its query string, so a feed connection opened as
`/v1/ws?api_key=KEY` would put the key in the access log; at debug level the WebSocket library
also logs the handshake headers (Authorization, Sec-WebSocket-Protocol: bearer.KEY). A filter
on those loggers rewrites every record before any handler sees it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"

# Query parameters whose name says they carry a secret: api_key, token, access_token, ...
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;][^=&;\s\"']*(?:key|token|secret|password|auth)[^=&;\s\"']*=)[^&;\s\"']*",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(r"(?P<name>\bauthorization\s*:\s*)[^\r\n\"']*", re.IGNORECASE)
_BEARER = re.compile(r"(?P<name>\bbearer[.\s]+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

# Where the server runtime logs request lines, handshakes and their headers.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server")


def redact(text: str) -> str:
    """The text with secret query values, Authorization values and bearer tokens replaced."""
    for pattern in (_QUERY_SECRET, _AUTHORIZATION, _BEARER):
        text = pattern.sub(lambda match: match.group("name") + REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, arguments and traceback text with the secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {name: _redacted(value) for name, value in record.args.items()}
        # A secret split over two arguments ("< %s: %s", "Authorization", "Basic ...") shows
        # only in the whole message. The access log keeps its arguments: its formatter reads them.
        if record.args and record.name != "uvicorn.access":
            try:
                message = record.getMessage()
            except Exception:  # arguments that do not fit the format: logging reports it
                message = None
            if message is not None and redact(message) != message:
                record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _redacted(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


def install(names: Iterable[str] = SERVER_LOGGERS) -> None:
    """Put the filter on these loggers (once each); filters survive later logging set-ups."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())
