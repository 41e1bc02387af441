"""The one place where the Store implementation is chosen from settings."""

from __future__ import annotations

from streaming.store.base import DEFAULT_HISTORY_LIMIT, Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import DEFAULT_NAMESPACE, RedisStore


def make_store(
    redis_url: str | None,
    namespace: str = DEFAULT_NAMESPACE,
    history_limit: int = DEFAULT_HISTORY_LIMIT,
) -> Store:
    """A RedisStore for a URL, or a MemoryStore when there is none (None or ""); not yet opened."""
    if not redis_url:
        return MemoryStore(history_limit=history_limit)
    return RedisStore(redis_url, namespace=namespace, history_limit=history_limit)
