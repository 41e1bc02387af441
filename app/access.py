"""Who may open a feed connection, and how many: API keys and connection limits.

Keys are optional. When any is configured (a list from the environment, or the Redis set
`{namespace}:api_keys`), every WebSocket connection must present one, as `?api_key=KEY`,
`Authorization: Bearer KEY` or the subprotocol `bearer.KEY` next to `index-ticker.v1`. Limits
count open connections per key and per client address in this process.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from app.protocol import CloseCode
from streaming.errors import ConfigError

log = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")  # URL- and subprotocol-safe
PROTOCOL_PREFIX = "bearer."  # Sec-WebSocket-Protocol: index-ticker.v1, bearer.KEY
REDIS_TIMEOUT = 2.0  # seconds to connect to Redis and to get the answer
REDIS_CACHE_SECONDS = 5.0  # a key found in Redis is trusted this long without asking again
CACHE_LIMIT = 10_000  # remembered keys before the expired ones are swept


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted connection: what it counts against."""

    key_id: str | None  # a short digest of the key (never the key itself), None without keys
    address: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused connection: the close code and the reason sent with it."""

    code: int
    reason: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def presented_key(websocket: WebSocket) -> str | None:
    """The API key a connection request carries, from its header, subprotocols or query."""
    authorization = websocket.headers.get("authorization", "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for offered in websocket.scope.get("subprotocols", ()):
        if offered.startswith(PROTOCOL_PREFIX) and len(offered) > len(PROTOCOL_PREFIX):
            return str(offered[len(PROTOCOL_PREFIX) :])
    return websocket.query_params.get("api_key") or None


class Access:
    """API keys (optional) and open-connection counts per key and per client address."""

    def __init__(
        self,
        keys: Iterable[str] = (),
        *,
        redis_url: str | None = None,
        namespace: str = "index-ticker",
        max_per_key: int = 64,
        max_per_address: int = 256,
        cache_seconds: float = REDIS_CACHE_SECONDS,
    ) -> None:
        digests = set()
        for position, key in enumerate(keys):
            if not KEY_PATTERN.fullmatch(key):
                raise ConfigError(
                    "api_keys",
                    f"key {position + 1}: must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ -",
                )
            digests.add(_digest(key))
        for name, limit in (("max_per_key", max_per_key), ("max_per_address", max_per_address)):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(name, f"must be a positive integer, got {limit!r}")
        self._digests = frozenset(digests)
        self.redis_url = redis_url
        self.redis_key = f"{namespace}:api_keys"
        self.max_per_key = max_per_key
        self.max_per_address = max_per_address
        self.cache_seconds = cache_seconds
        self._cache: dict[str, float] = {}  # digest -> monotonic expiry of a Redis "yes"
        self._per_key: Counter[str] = Counter()
        self._per_address: Counter[str] = Counter()
        self.refused: Counter[int] = Counter()  # by close code

    @property
    def required(self) -> bool:
        """True when connections must present an API key."""
        return bool(self._digests) or self.redis_url is not None

    async def admit(self, key: str | None, address: str) -> Admission | Refusal:
        """Check the key and the limits; an admission must be released when the connection ends."""
        outcome = await self._check_key(key)
        if isinstance(outcome, Refusal):
            self.refused[outcome.code] += 1
            return outcome
        key_id = outcome
        if key_id is not None and self._per_key[key_id] >= self.max_per_key:
            return self._refuse(f"at most {self.max_per_key} connections per API key")
        if self._per_address[address] >= self.max_per_address:
            return self._refuse(f"at most {self.max_per_address} connections per client address")
        # Counted right after the check, with no await between: concurrent handshakes cannot
        # both take the last place.
        if key_id is not None:
            self._per_key[key_id] += 1
        self._per_address[address] += 1
        return Admission(key_id, address)

    def release(self, admission: Admission) -> None:
        """The connection of this admission has ended."""
        if admission.key_id is not None:
            self._per_key[admission.key_id] -= 1
            if self._per_key[admission.key_id] <= 0:
                del self._per_key[admission.key_id]
        self._per_address[admission.address] -= 1
        if self._per_address[admission.address] <= 0:
            del self._per_address[admission.address]

    def _refuse(self, reason: str) -> Refusal:
        self.refused[CloseCode.TOO_MANY] += 1
        return Refusal(CloseCode.TOO_MANY, f"too many connections: {reason}")

    async def _check_key(self, key: str | None) -> str | Refusal | None:
        """The key's id when it is accepted (None when keys are off), else a refusal."""
        if not self.required:
            return None
        if key is None:
            return Refusal(
                CloseCode.UNAUTHORIZED,
                "unauthorized: an API key is required (?api_key=, Authorization: Bearer,"
                " or subprotocol bearer.KEY)",
            )
        digest = _digest(key)
        if digest in self._digests:
            return digest[:16]
        if self.redis_url is not None and KEY_PATTERN.fullmatch(key):
            try:
                found = await self._in_redis(key, digest)
            except (RedisError, OSError, TimeoutError) as error:
                log.warning("API keys in Redis cannot be checked: %s", error)
                return Refusal(
                    CloseCode.TRY_AGAIN_LATER, "try again later: API keys cannot be checked now"
                )
            if found:
                return digest[:16]
        return Refusal(CloseCode.FORBIDDEN, "forbidden: unknown API key")

    async def _in_redis(self, key: str, digest: str) -> bool:
        now = time.monotonic()
        if self._cache.get(digest, 0.0) > now:
            return True
        assert self.redis_url is not None
        # A short-lived connection: checks happen at handshakes only, and nothing is left open.
        client = Redis.from_url(
            self.redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
        )
        try:
            found = bool(await client.sismember(self.redis_key, key))
        finally:
            await client.aclose()
        if found and self.cache_seconds > 0:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache = {d: t for d, t in self._cache.items() if t > now}
            self._cache[digest] = now + self.cache_seconds
        return found

    def stats(self) -> dict[str, object]:
        """Open connections and refusals, for the readiness endpoint."""
        return {
            "keys_required": self.required,
            "open": sum(self._per_address.values()),
            "addresses": len(self._per_address),
            "refused": {str(code): count for code, count in sorted(self.refused.items())},
        }
