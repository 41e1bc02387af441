"""Bearer-token authentication for the write endpoints: the ingest scope and the admin scope."""

from __future__ import annotations

import hmac

from app.errors import ApiError

SCHEME = "Bearer"
ADMIN_TOKEN_ENV = "INDEX_TICKER_ADMIN_TOKEN"


def check_bearer(authorization: str | None, expected_token: str, scope: str = "ingest") -> None:
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
        what = "tick ingest" if scope == "ingest" else f"the {scope} API"
        raise ApiError(403, f"{what} is disabled: no {scope} token is configured")
    # compare_digest on bytes: it refuses non-ASCII str, and timing must not leak the token.
    if not hmac.compare_digest(token.encode("utf-8"), expected_token.encode("utf-8")):
        raise ApiError(403, f"invalid {scope} token")


def check_admin(authorization: str | None, admin_token: str | None) -> None:
    """The admin scope: 503 while no admin token is configured, else as check_bearer."""
    if not admin_token:
        # Said before looking at the header: a disabled scope has nothing to authenticate against.
        raise ApiError(503, f"admin API disabled: set {ADMIN_TOKEN_ENV}")
    check_bearer(authorization, admin_token, scope="admin")
