"""Bearer-token authentication for the write endpoints."""

from __future__ import annotations

import hmac

from app.errors import ApiError

SCHEME = "Bearer"


def check_bearer(authorization: str | None, expected_token: str) -> None:
    """Raise 401 for a missing or malformed Authorization header and 403 for a wrong token."""
    if authorization is None or not authorization.strip():
        raise ApiError(
            401,
            "missing Authorization header: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": SCHEME},
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != SCHEME.lower() or not token or " " in token:
        raise ApiError(
            401,
            "malformed Authorization header: expected 'Bearer <token>'",
            headers={"WWW-Authenticate": f'{SCHEME} error="invalid_request"'},
        )
    if not expected_token:
        # An empty configured token would otherwise match an empty-ish guess; refuse instead.
        raise ApiError(403, "tick ingest is disabled: no ingest token is configured")
    # compare_digest on bytes: it refuses non-ASCII str, and timing must not leak the token.
    if not hmac.compare_digest(token.encode("utf-8"), expected_token.encode("utf-8")):
        raise ApiError(403, "invalid ingest token")
