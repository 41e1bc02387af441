"""The Redis Store: state, latest values and history in Redis, fan-out over Redis pub/sub.

Keys, all under the namespace `ns`:
  {ns}:state            string, EngineState.dumps() of the last commit
  {ns}:latest           hash, index code -> Publication.record()
  {ns}:history:{code}   sorted set, score = epoch seconds of the grid instant, member = record
  {ns}:publications     pub/sub channel, one record per message
  {ns}:ticks            stream of ticks (streaming/tick_stream.py), read by the group `engines`
  {ns}:ticks:rejected   stream of the ticks the engine refused from it: entry, position, field,
                        reason (bounded)

A commit writes all of them in one server-side script (atomic, one round trip, the leader lease
checked inside it), so a reader never sees a state newer than the latest values it goes with.
Each process holds one channel subscription and fans it out locally through the same bounded
drop-oldest queues as the memory store; publications announced while the subscription is down
(Redis restarting) are not replayed: `latest()` is the way to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming.errors import (
    ConfigError,
    IndexTickerError,
    LeaseLost,
    StoreUnavailable,
    StreamGroupMissing,
)
from streaming.metrics import REGISTRY
from streaming.publication import EngineState, Publication
from streaming.store.base import DEFAULT_HISTORY_LIMIT
from streaming.store.memory import DEFAULT_SUBSCRIBER_QUEUE, Fanout, select_after
from streaming.tick_stream import Fields, StreamLag, StreamReject, entry_key
from streaming.ticks import Tick, encode_ticks

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "index-ticker"
CONNECT_TIMEOUT = 2.0  # seconds to open a TCP connection to Redis
COMMAND_TIMEOUT = 5.0  # seconds to wait for a reply to a command
PING_TIMEOUT = 1.0  # seconds ping() waits before answering False
SUBSCRIBE_TIMEOUT = 5.0  # seconds to wait for Redis to confirm the channel subscription
POLL_INTERVAL = 1.0  # seconds between idle wake-ups of the channel reader
HEALTH_CHECK_INTERVAL = 15  # seconds of silence before the channel connection is pinged
RECONNECT_INITIAL = 0.1  # seconds before the first attempt to resubscribe
RECONNECT_CAP = 5.0  # seconds: the longest wait between attempts
COMMAND_RETRIES = 2  # extra attempts of a command whose connection broke (a restarted Redis)

# Errors that mean "Redis is not reachable right now", as opposed to a bad command or reply.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


TICK_STREAM_MAX = 1_000_000  # entries kept in the ingest stream (approximately)
TICK_GROUP = "engines"  # the consumer group the leading engine reads the tick stream in
REJECTS_MAX = 10_000  # entries kept in the stream of rejected ticks (approximately)

Lease = tuple[str, int]  # (owner, fencing token)

# Take the lease only if free; each take gets the next fencing token.
_ACQUIRE = """
if redis.call('SET', KEYS[1], 'taking', 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
  return fence
end
return nil
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# One commit: KEYS = state, latest, leader, then the history key of each publication;
# ARGV = state, the lease value ('' = none), history limit, channel, then code, score and record
# of each publication. Returns {1, ''}, or {0, holder} with nothing written when the lease is
# held by someone else (or nobody).
_COMMIT = """
if ARGV[2] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder ~= ARGV[2] then
    return {0, holder or ''}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
local keep = -tonumber(ARGV[3]) - 1
local count = (#ARGV - 4) / 3
for i = 1, count do
  local code, score, record = ARGV[3 * i + 2], ARGV[3 * i + 3], ARGV[3 * i + 4]
  local history = KEYS[3 + i]
  redis.call('HSET', KEYS[2], code, record)
  -- One value per instant: a re-publication of a grid point replaces it.
  redis.call('ZREMRANGEBYSCORE', history, score, score)
  redis.call('ZADD', history, score, record)
  redis.call('ZREMRANGEBYRANK', history, 0, keep)
end
for i = 1, count do
  redis.call('PUBLISH', ARGV[4], ARGV[3 * i + 4])
end
return {1, ''}
"""


# A Redis round trip's latency per store call, for /metrics (next_tick_entries is left out: it
# waits up to a second for entries by design).
COMMAND_SECONDS = REGISTRY.histogram(
    "index_ticker_store_command_seconds",
    "Seconds one call to the Redis store took, by call (one round trip each, most of them).",
    ("command",),
)
P = ParamSpec("P")
R = TypeVar("R")
AsyncMethod = Callable[P, Coroutine[Any, Any, R]]


def _timed(
    command: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Observe the seconds each call of an async store method takes, errors included."""
    series = COMMAND_SECONDS.labels(command)

    def wrap(method: AsyncMethod[P, R]) -> AsyncMethod[P, R]:
        @functools.wraps(method)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                series.observe(time.perf_counter() - started)

        return timed

    return wrap


def lease_value(lease: Lease) -> str:
    return f"{lease[0]}:{lease[1]}"


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, fit for logs and error messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(key, "***" if key.lower() == "password" else value) for key, value in pairs]
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def decode_publication(data: str | bytes) -> Publication:
    """Parse a stored record, checking field types; raise ValueError when it is not one."""
    try:
        publication = Publication.from_record(data)
    except (ValueError, TypeError, KeyError, IndexTickerError) as exc:
        raise ValueError(f"not a publication record: {exc}") from exc
    for name in ("value", "previous_close", "capitalization", "divisor"):
        if not _is_number(getattr(publication, name)):
            raise ValueError(f"not a publication record: {name} is not a number")
    if publication.fx_rate is not None and not _is_number(publication.fx_rate):
        raise ValueError("not a publication record: fx_rate is not a number")
    if not isinstance(publication.code, str) or not isinstance(publication.currency, str):
        raise ValueError("not a publication record: code and currency must be strings")
    if isinstance(publication.seq, bool) or not isinstance(publication.seq, int):
        raise ValueError("not a publication record: seq is not an integer")
    return publication


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class RedisStore:
    """Store in Redis: survives restarts of this process and is shared between processes."""

    name = "redis"

    def __init__(
        self,
        url: str,
        namespace: str = DEFAULT_NAMESPACE,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
    ) -> None:
        if not namespace:
            raise ValueError("namespace must not be empty")
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self.url = url
        self.namespace = namespace
        self.history_limit = history_limit
        self.state_key = f"{namespace}:state"
        self.latest_key = f"{namespace}:latest"
        self.channel = f"{namespace}:publications"
        self.leader_key = f"{namespace}:leader"
        self.fence_key = f"{namespace}:fence"
        self.ticks_key = f"{namespace}:ticks"
        self.rejects_key = f"{namespace}:ticks:rejected"
        self._client: Redis | None = None
        self._commit_script: AsyncScript | None = None  # _COMMIT, loaded on first use
        self._committed: dict[str, int] = {}  # the last seq this process committed per code
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._fanout: Fanout[Publication] = Fanout(subscriber_queue)
        self._live: Fanout[str] = Fanout(subscriber_queue)
        self.live_channel = f"{namespace}:live"

    def history_key(self, code: str) -> str:
        """The sorted set holding the history of one index."""
        return f"{self.namespace}:history:{code}"

    @property
    def listening(self) -> bool:
        """True while the channel subscription is live (False while reconnecting)."""
        return self._listening

    @property
    def subscriber_count(self) -> int:
        """Subscriptions currently open in this process."""
        return len(self._fanout)

    async def open(self) -> None:
        """Connect, check Redis answers and subscribe to the channel; StoreUnavailable if not."""
        if self._client is not None:
            return
        try:
            client = self._connect()
        except ValueError as exc:
            raise ConfigError("redis_url", str(exc), redact_url(self.url)) from exc
        try:
            await client.ping()
            pubsub = await self._subscribe_channel(client)
        except (RedisError, *_UNREACHABLE) as exc:
            await client.aclose()
            raise self._unavailable(exc) from exc
        self._client = client
        self._listener = asyncio.create_task(
            self._listen(pubsub), name=f"redis-store-listener:{self.channel}"
        )

    def _connect(self) -> Redis:
        return Redis.from_url(
            self.url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            # After Redis restarts, pooled connections are dead until used once: retrying on a
            # fresh connection hides that. Timeouts are not retried: the command may have run.
            retry=Retry(
                ExponentialBackoff(cap=0.5, base=0.05),
                COMMAND_RETRIES,
                supported_errors=(RedisConnectionError,),
            ),
            retry_on_error=[RedisConnectionError],
        )

    async def close(self) -> None:
        """End subscriptions, stop the channel reader and close the connections."""
        self._fanout.close()
        self._live.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            # The listener closes its own pub/sub connection on the way out.
            await asyncio.gather(listener, return_exceptions=True)
        client, self._client = self._client, None
        self._commit_script = None
        if client is not None:
            await client.aclose()
        self._listening = False

    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError(f"RedisStore for {redact_url(self.url)} is not open")
        return self._client

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"Redis at {redact_url(self.url)} does not answer: {exc}")

    @_timed("ping")
    async def ping(self) -> bool:
        """True when Redis answers within PING_TIMEOUT seconds; never raises."""
        client = self._client
        if client is None:
            return False
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                return bool(await client.ping())
        except (RedisError, *_UNREACHABLE):
            return False

    @_timed("load_state")
    async def load_state(self) -> EngineState | None:
        """The state saved with the last commit, or None on a fresh namespace."""
        try:
            raw = await self._redis().get(self.state_key)
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        return None if raw is None else EngineState.loads(raw)

    @_timed("commit")
    async def commit(
        self, state: EngineState, publications: Sequence[Publication], lease: Lease | None = None
    ) -> None:
        """Write state, latest, history (trimmed) and announce, in one MULTI/EXEC round trip.
        With a lease, only while Redis still says this engine holds it (else LeaseLost)."""
        keys = [self.state_key, self.latest_key, self.leader_key]
        args: list[str | bytes] = [
            state.dumps(),
            "" if lease is None else lease_value(lease),
            str(self.history_limit),
            self.channel,
        ]
        for publication in publications:
            keys.append(self.history_key(publication.code))
            # repr: the shortest text that reads back as the same float (the score is matched).
            args += (publication.code, repr(publication.time.timestamp()), publication.record())
        try:
            script = self._commit_script
            if script is None:
                script = self._commit_script = self._redis().register_script(_COMMIT)
            written, holder = await script(keys=keys, args=args)
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        if not written:
            # Fencing: a paused old leader finds another holder and writes nothing.
            raise LeaseLost(f"the leader lease is held by {_text(holder) or None!r}")
        for publication in publications:
            self._committed[publication.code] = publication.seq

    def deliver_locally(self, publications: Sequence[Publication]) -> None:
        """Hand publications to this process's subscribers only (Redis is away)."""
        self._fanout.publish(publications)

    # --- the leader lease -------------------------------------------------------------------

    @_timed("acquire_lease")
    async def acquire_lease(self, owner: str, ttl_ms: int) -> Lease | None:
        """Take the leader lease if nobody holds it: (owner, fencing token), else None."""
        try:
            fence = await self._redis().eval(
                _ACQUIRE, 2, self.leader_key, self.fence_key, owner, str(ttl_ms)
            )
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        return None if fence is None else (owner, int(fence))

    @_timed("renew_lease")
    async def renew_lease(self, lease: Lease, ttl_ms: int) -> bool:
        """Extend the lease while this engine still holds it."""
        try:
            renewed = await self._redis().eval(
                _RENEW, 1, self.leader_key, lease_value(lease), str(ttl_ms)
            )
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        return bool(renewed)

    @_timed("release_lease")
    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up (a clean stop), so a standby need not wait for it to expire."""
        with contextlib.suppress(*_UNREACHABLE):
            await self._redis().eval(_RELEASE, 1, self.leader_key, lease_value(lease))

    # --- the durable tick stream -----------------------------------------------------------

    @_timed("append_ticks")
    async def append_ticks(self, ticks: Sequence[Tick]) -> str:
        """Add validated ticks to the ingest stream; the entry id."""
        try:
            entry = await self._redis().xadd(
                self.ticks_key,
                {"ticks": encode_ticks(ticks)},
                maxlen=TICK_STREAM_MAX,
                approximate=True,
            )
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        return _text(entry) or ""

    @_timed("join_tick_stream")
    async def join_tick_stream(self, consumer: str, after: str) -> str | None:
        """Make `consumer` the one reader of the engines' group, placed after entry `after` (the
        last one in the committed state): every later entry comes to it again, in order, whoever
        had it before. A warning when entries after `after` were trimmed before being applied."""
        redis = self._redis()
        try:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await redis.xgroup_create(self.ticks_key, TICK_GROUP, after, mkstream=True)
            await redis.xgroup_setid(self.ticks_key, TICK_GROUP, after)
            for reader in await redis.xinfo_consumers(self.ticks_key, TICK_GROUP):
                await redis.xgroup_delconsumer(self.ticks_key, TICK_GROUP, reader["name"])
            info = await redis.xinfo_stream(self.ticks_key)
            kept = after == "0-0" or bool(await redis.xrange(self.ticks_key, after, after))
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        # Trimming drops the oldest entries first: while `after` is kept, nothing later is lost.
        first = _text((info.get("first-entry") or (None,))[0]) or "0-0"
        if not kept and entry_key(first) > entry_key(after):
            return (
                f"{self.ticks_key} no longer holds entry {after}, the last this engine applied; "
                f"entries written between it and {first} were trimmed unapplied, if there were any"
            )
        return None

    async def next_tick_entries(
        self,
        consumer: str,
        count: int,
        block_ms: int | None,
        applied: Sequence[str] = (),
        rejects: Sequence[StreamReject] = (),
        again: bool = False,
    ) -> list[tuple[str, Fields]]:
        """Acknowledge the entries applied (recording their rejected ticks), then read the next
        entries for `consumer`, up to `count`, waiting up to block_ms: in one round trip.
        `again` reads the entries already handed to it and not acknowledged instead (after an
        error lost a reply)."""
        pipe = self._redis().pipeline(transaction=False)
        if applied:
            pipe.xack(self.ticks_key, TICK_GROUP, *applied)
        for reject in rejects:
            pipe.xadd(
                self.rejects_key,
                cast(Any, reject.as_fields()),
                maxlen=REJECTS_MAX,
                approximate=True,
            )
        pipe.xreadgroup(
            TICK_GROUP,
            consumer,
            {self.ticks_key: "0" if again else ">"},
            count=count,
            block=None if again else block_ms,
        )
        try:
            replies = await pipe.execute()
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        except ResponseError as exc:
            raise _group_error(exc) from exc
        return [
            (_text(entry_id) or "", fields)
            for _, items in replies[-1] or []
            for entry_id, fields in items
            if fields is not None  # an entry deleted while pending comes back empty
        ]

    @_timed("tick_stream_lag")
    async def tick_stream_lag(self) -> StreamLag | None:
        """Where the engines' group stands; None before any engine joined."""
        pipe = self._redis().pipeline(transaction=False)
        pipe.xinfo_stream(self.ticks_key)
        pipe.xinfo_groups(self.ticks_key)
        try:
            stream, groups = await pipe.execute()
        except ResponseError:  # no stream yet
            return None
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        group = next((g for g in groups if _text(g["name"]) == TICK_GROUP), None)
        if group is None:
            return None
        return StreamLag(
            length=int(stream["length"]),
            last_entry=_text(stream["last-generated-id"]) or "0-0",
            delivered=_text(group["last-delivered-id"]) or "0-0",
            pending=int(group["pending"]),
            undelivered=None if group.get("lag") is None else int(group["lag"]),
            readers=int(group["consumers"]),
        )

    @_timed("tick_stream_readers")
    async def tick_stream_readers(self) -> dict[str, int]:
        """The group's consumers and how many entries each holds unacknowledged."""
        try:
            readers = await self._redis().xinfo_consumers(self.ticks_key, TICK_GROUP)
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        except ResponseError as exc:
            raise _group_error(exc) from exc
        return {_text(r["name"]) or "": int(r["pending"]) for r in readers}

    @_timed("latest")
    async def latest(self) -> dict[str, Publication]:
        """The last committed value per index code (unreadable entries are logged and left out)."""
        try:
            raw = await self._redis().hgetall(self.latest_key)
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        result: dict[str, Publication] = {}
        for field, record in raw.items():
            try:
                publication = decode_publication(record)
            except ValueError as exc:
                log.error(
                    "skipping unreadable latest value %r in %s: %s", field, self.latest_key, exc
                )
                continue
            result[publication.code] = publication
        return result

    @_timed("history")
    async def history(
        self, code: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[Publication]:
        """Values of `code` with since <= time <= until, ascending; the latest `limit` if more."""
        if limit <= 0:
            return []
        high: float | str = "+inf" if until is None else until.timestamp()
        low: float | str = "-inf" if since is None else since.timestamp()
        try:
            # Newest first so that the limit keeps the latest values, then put back in time order.
            raw = await self._redis().zrevrangebyscore(
                self.history_key(code), high, low, start=0, num=limit
            )
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        result: list[Publication] = []
        for record in reversed(cast(list[bytes], raw)):
            try:
                result.append(decode_publication(record))
            except ValueError as exc:
                log.error("skipping unreadable history value of %s: %s", code, exc)
        return result

    def subscribe(self) -> AsyncIterator[Publication]:
        """Live publications committed from now on, through a bounded drop-oldest queue."""
        if not self._committed:
            return self._fanout.subscribe()
        # This process's own commits come back over the channel a moment after commit() has
        # returned: those committed before the subscription are not for it.
        floors = dict(self._committed)
        return self._fanout.subscribe(lambda p: p.seq <= floors.get(p.code, -1))

    async def _subscribe_channel(self, client: Redis) -> PubSub:
        """A pub/sub connection whose subscription Redis has confirmed."""
        pubsub = client.pubsub()
        confirmed = 0
        try:
            await pubsub.subscribe(self.channel, self.live_channel)
            # Waiting for the confirmation means any PUBLISH made after this returns reaches us.
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                while True:
                    message = await pubsub.get_message(timeout=POLL_INTERVAL)
                    if message is not None and message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == 2:  # both channels
                            break
        except BaseException:
            await _close_quietly(pubsub)
            raise
        self._listening = True
        return pubsub

    async def _listen(self, pubsub: PubSub | None) -> None:
        """Read the channel until cancelled, resubscribing with capped exponential backoff."""
        delay = RECONNECT_INITIAL
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe_channel(self._redis())
                        log.info("resubscribed to %s on %s", self.channel, redact_url(self.url))
                        delay = RECONNECT_INITIAL
                    message = await pubsub.get_message(timeout=POLL_INTERVAL)
                    if message is not None and message["type"] == "message":
                        channel = message["channel"]
                        if channel in (self.live_channel, self.live_channel.encode()):
                            self._deliver_live(message["data"])
                        else:
                            self._deliver(message["data"])
                except Exception as exc:
                    # Whatever went wrong, the feed must go on: drop the connection and retry.
                    self._listening = False
                    if isinstance(exc, RedisError | OSError | asyncio.TimeoutError):
                        log.warning(
                            "lost %s on %s (%s); retrying in %.1f s",
                            self.channel,
                            redact_url(self.url),
                            exc,
                            delay,
                        )
                    else:
                        log.exception("channel reader failed; retrying in %.1f s", delay)
                    if pubsub is not None:
                        await _close_quietly(pubsub)
                        pubsub = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_CAP)
        finally:
            self._listening = False
            if pubsub is not None:
                await _close_quietly(pubsub)

    def _deliver_live(self, data: str | bytes) -> None:
        if len(self._live):
            self._live.publish([data.decode() if isinstance(data, bytes) else data])

    @_timed("announce_live")
    async def announce_live(self, message: str) -> None:
        """PUBLISH a live-values message (JSON text) to every API process."""
        try:
            await self._redis().publish(self.live_channel, message)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def subscribe_live(self) -> AsyncIterator[str]:
        """Live-values messages announced from now on, by any engine on this namespace."""
        return self._live.subscribe()

    @_timed("replay_after")
    async def replay_after(self, code: str, seq: int, limit: int) -> list[Publication] | None:
        """Publications of `code` above `seq`, ascending (at most `limit`), from the history;
        None when the history no longer reaches back to seq + 1."""
        # Newest first in growing windows until one reaches back to seq: a resume after a short
        # drop reads a handful of records, not the whole history.
        window = 64
        while True:
            newest_first = await self._read_newest(code, window)
            ordered = list(reversed(newest_first))
            if len(newest_first) < window or (ordered and ordered[0].seq <= seq + 1):
                return select_after(ordered, seq, limit)
            window *= 4

    async def _read_newest(self, code: str, count: int) -> list[Publication]:
        try:
            raw = await self._redis().zrevrange(self.history_key(code), 0, count - 1)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        values = []
        for item in raw:
            try:
                values.append(decode_publication(cast(str | bytes, item)))
            except ValueError:
                log.warning("skipping an unreadable %s history entry", code)
        return values

    def _deliver(self, data: str | bytes) -> None:
        if not len(self._fanout):
            return  # nobody listening in this process: skip the parsing
        try:
            publication = decode_publication(data)
        except ValueError as exc:
            log.error("skipping malformed message on %s: %s", self.channel, exc)
            return
        self._fanout.publish([publication])


def _group_error(error: ResponseError) -> Exception:
    """NOGROUP (the stream or its group deleted) as StreamGroupMissing; other errors as they are."""
    if any(sign in str(error) for sign in ("NOGROUP", "no such key", "no longer exists")):
        return StreamGroupMissing(str(error))
    return error


async def _close_quietly(pubsub: PubSub) -> None:
    # Through a typed name: redis-py up to 8.1 leaves aclose unannotated, 8.2 annotates it, and
    # strict typing must pass on both without an ignore that is right for only one of them.
    close: Callable[[], Awaitable[None]] = pubsub.aclose
    try:
        await close()
    except (RedisError, OSError) as exc:
        log.debug("closing a broken pub/sub connection: %s", exc)
