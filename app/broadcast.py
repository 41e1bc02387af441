"""Fan-out of the feed to WebSocket connections: one consumer of the store's publication channel
and one of its live channel per process, one serialisation per message, shared by every client.

- Index updates: a publication is serialised at most twice (with and without contributions).
- Constituents: the state saved with a publication is read once per grid instant and each
  subscribed index's message is built once.
- Live values: paced per connection to its min_interval_ms; one text per set of codes per round.
- Gaps: a publication whose seq jumps past the last one seen (the channel was down) is preceded
  by the missing ones, read from the store's history.
- Supervision: once per tick, idle connections get a heartbeat and connections too far behind
  are asked to close (see app.outbox for the conflation that comes first).

Queuing never waits for a client: a stuck connection delays nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from app import messages
from app.protocol import Channel, CloseCode, dumps, text_frame
from app.subscription import Client, LiveSubscription
from streaming.publication import EngineState, Publication
from streaming.store.base import Store

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0
SUPERVISE_SECONDS = 0.5  # the longest tick of the heartbeat and lag checks
GAP_FILL_LIMIT = 1000  # publications of one index fetched from history to cover a channel gap
STATE_READ_TIMEOUT = 5.0  # seconds to read the state behind a constituents message


class Update:
    """One publication as an update message, serialised at most twice and shared, as JSON text
    and as the WebSocket frame carrying it."""

    __slots__ = ("_frames", "_texts", "publication")

    def __init__(self, publication: Publication) -> None:
        self.publication = publication
        self._texts: dict[bool, str] = {}
        self._frames: dict[bool, bytes] = {}

    def text(self, contributions: bool) -> str:
        """The JSON text, with the largest contributions or without."""
        text = self._texts.get(contributions)
        if text is None:
            message = self.publication.message("update", contributions=contributions)
            text = self._texts[contributions] = dumps(message)
        return text

    def frame(self, contributions: bool) -> bytes:
        """The text as a WebSocket text frame."""
        frame = self._frames.get(contributions)
        if frame is None:
            frame = self._frames[contributions] = text_frame(self.text(contributions))
        return frame


class Writes:
    """Connections with something newly queued, written in one pass once the round of fan-out
    that queued it has finished: one loop callback per round, not one per connection."""

    __slots__ = ("_due", "_scheduled", "after")

    def __init__(self) -> None:
        self._due: list[Callable[[], None]] = []
        self._scheduled = False
        self.after: Callable[[], None] | None = None  # called once a round is written

    def due(self, write: Callable[[], None]) -> None:
        """Call `write` after the current round (the caller asks once per round)."""
        self._due.append(write)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        due, self._due = self._due, []
        self._scheduled = False
        for write in due:
            try:
                write()
            except Exception:
                log.exception("a connection's write failed; going on with the others")
        if self.after is not None:
            self.after()


class Broadcaster:
    """The fan-out of one process: publications, constituents, live values, heartbeats."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._services: Services | None = None
        self._clients: set[Client] = set()
        self._index: dict[str, set[Client]] = {}
        self._constituents: dict[str, set[Client]] = {}
        self._live: set[Client] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._last: Publication | None = None
        self._seq: dict[str, int] = {}  # last seq dispatched per index
        self._state: EngineState | None = None  # the last state read for constituents
        self._live_time: str | None = None
        self._live_values: dict[str, float] = {}
        self._live_version = 0
        self._live_wake = asyncio.Event()
        self.writes = Writes()
        self.received = 0  # publications taken from the store channel
        self.dropped_total = 0  # messages conflated away across all clients since start
        self.channel_errors = 0
        self.live_received = 0
        self.gaps_filled = 0  # publications fetched from history to cover a channel gap
        self.closed_slow = 0  # connections asked to close as too slow

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the store channels now, then consume them in tasks of their own."""
        if self._tasks:
            return
        # Subscribed before start() returns: nothing published after startup is missed.
        publications = self._store.subscribe()
        live = self._store.subscribe_live()
        self._tasks = [
            asyncio.create_task(
                self._consume(publications, self._store.subscribe, self._dispatch_checked),
                name="broadcast",
            ),
            asyncio.create_task(
                self._consume(live, self._store.subscribe_live, self._on_live), name="live-in"
            ),
            asyncio.create_task(self._pace_live(), name="live-out"),
            asyncio.create_task(self._supervise(), name="supervise"),
        ]

    async def stop(self) -> None:
        """Stop consuming; clients stay attached until they disconnect."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def bind(self, services: Services) -> None:
        """The services whose engine the heartbeats report and whose limits apply."""
        self._services = services

    # --- connections and subscriptions --------------------------------------------------

    def attach(self, client: Client) -> None:
        """A new connection: it gets heartbeats and may subscribe."""
        self._clients.add(client)

    def detach(self, client: Client) -> None:
        """A connection gone: forget it everywhere."""
        self._clients.discard(client)
        self.unsubscribe(client, Channel.INDEX, tuple(client.index))
        self.unsubscribe(client, Channel.CONSTITUENTS, tuple(client.constituents))
        self._live.discard(client)

    def subscribe(
        self, client: Client, channel: Channel, codes: Iterable[str], contributions: bool = False
    ) -> None:
        """Deliver these codes of the index or constituents channel to the client from now on."""
        table = self._index if channel is Channel.INDEX else self._constituents
        for code in codes:
            if channel is Channel.INDEX:
                client.index[code] = contributions
            else:
                client.constituents.add(code)
            table.setdefault(code, set()).add(client)

    def unsubscribe(self, client: Client, channel: Channel, codes: Iterable[str]) -> None:
        """Stop delivering these codes of one channel to the client."""
        if channel is Channel.LIVE:
            self._unsubscribe_live(client, set(codes))
            return
        table = self._index if channel is Channel.INDEX else self._constituents
        for code in list(codes):
            if channel is Channel.INDEX:
                client.index.pop(code, None)
            else:
                client.constituents.discard(code)
            client.forget((channel.value, code))
            members = table.get(code)
            if members is not None:
                members.discard(client)
                if not members:
                    del table[code]

    def subscribe_live(self, client: Client, codes: Iterable[str], interval: float) -> None:
        """Add codes to the client's live channel, paced at `interval` seconds at most."""
        current = client.live.codes if client.live is not None else ()
        merged = tuple(dict.fromkeys((*current, *codes)))
        # Due at once with the latest values, if there are any yet.
        client.live = LiveSubscription(merged, interval, max(0, self._live_version - 1), 0.0)
        self._live.add(client)
        self._live_wake.set()

    def _unsubscribe_live(self, client: Client, codes: set[str]) -> None:
        if client.live is None:
            return
        left = tuple(code for code in client.live.codes if code not in codes)
        if left:
            client.live.codes = left
            return
        client.live = None
        self._live.discard(client)
        client.forget((Channel.LIVE.value, ""))

    def clients(self) -> int:
        """How many connections are subscribed to anything."""
        return sum(1 for client in self._clients if client.subscriptions())

    def counts(self) -> dict[str, Any]:
        """Open connections, and subscribers per code of the index and constituents channels
        and of the live channel, without a pass over the connections (for metrics)."""
        return {
            "connections": len(self._clients),
            "index": {code: len(members) for code, members in self._index.items()},
            "constituents": {code: len(members) for code, members in self._constituents.items()},
            "live": len(self._live),
        }

    def last_seq(self) -> dict[str, int]:
        """The last seq dispatched per index code."""
        return dict(self._seq)

    # --- publications -------------------------------------------------------------------

    async def dispatch(self, publication: Publication) -> None:
        """Queue a publication for its subscribers: the update, then the constituents."""
        self.received += 1
        code = publication.code
        self._last = publication
        self._seq[code] = max(publication.seq, self._seq.get(code, 0))
        subscribers = self._index.get(code)
        if subscribers:
            update = Update(publication)
            key = (Channel.INDEX.value, code)
            seq = publication.seq
            now = time.monotonic()
            dropped = 0
            # Each form (with or without contributions) made once, and only if someone wants it.
            shared: dict[bool, tuple[str, bytes]] = {}
            for client in subscribers:  # the hot loop: positional arguments, no lookups beyond
                flag = client.index[code]
                pair = shared.get(flag)
                if pair is None:
                    pair = shared[flag] = (update.text(flag), update.frame(flag))
                dropped += client.offer_shared(key, seq, pair[0], pair[1], now)
            self._count(dropped)
        if self._constituents.get(code):
            await self._dispatch_constituents(publication)

    async def _dispatch_checked(self, publication: Publication) -> None:
        last = self._seq.get(publication.code)
        if last is not None and publication.seq > last + 1:
            await self._fill_gap(publication.code, last, publication.seq)
        await self.dispatch(publication)

    async def _fill_gap(self, code: str, last: int, seq: int) -> None:
        """Dispatch the publications between `last` and `seq` from the store's history."""
        try:
            missing = await self._store.replay_after(
                code, last, min(seq - last - 1, GAP_FILL_LIMIT)
            )
        except Exception as error:
            log.warning("cannot fill the %s gap after seq %d: %s", code, last, error)
            return
        for publication in missing or ():
            if publication.seq < seq:
                self.gaps_filled += 1
                await self.dispatch(publication)

    async def _dispatch_constituents(self, publication: Publication) -> None:
        state = self._state
        if state is None or state.last_grid < publication.time.timestamp():
            try:
                state = await asyncio.wait_for(self._store.load_state(), STATE_READ_TIMEOUT)
            except Exception as error:
                log.warning("constituents of %s not sent: %s", publication.code, error)
                return
            self._state = state
        if state is None:
            return
        code = publication.code
        text = dumps(self.constituents_message(code, state))
        seq = state.seq.get(code)
        key = (Channel.CONSTITUENTS.value, code)
        frame = text_frame(text)
        for client in self._constituents.get(code, ()):
            self._count(client.offer(key, seq, text, frame=frame))

    def constituents_message(self, code: str, state: EngineState | None) -> dict[str, Any]:
        """The constituents message of an index from a saved state."""
        services = self._services
        if services is None:
            raise RuntimeError("the broadcaster is not bound to its services")
        return messages.constituents(
            code, services.family.definition_of(code), state, services.stale_after_seconds
        )

    def _count(self, dropped: int) -> None:
        self.dropped_total += dropped

    # --- live values --------------------------------------------------------------------

    async def _on_live(self, text: str) -> None:
        try:
            data = json.loads(text)
            values = data["values"]
            if not isinstance(values, dict):
                raise TypeError("values is not an object")
        except (ValueError, KeyError, TypeError) as error:
            log.error("skipping a malformed live message: %s", error)
            return
        self.live_received += 1
        self._live_version += 1
        self._live_time = data.get("time")
        self._live_values = values
        self._live_wake.set()

    async def _pace_live(self) -> None:
        while True:
            self._live_wake.clear()
            wait = self._pace_round(time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._live_wake.wait()

    def _pace_round(self, now: float) -> float | None:
        """Send the latest live values to every client due for them; seconds to the next due."""
        version = self._live_version
        texts: dict[tuple[str, ...], str] = {}
        next_due: float | None = None
        key = (Channel.LIVE.value, "")
        for client in self._live:
            live = client.live
            if live is None or live.version >= version:
                continue
            if now < live.due:
                next_due = live.due if next_due is None else min(next_due, live.due)
                continue
            text = texts.get(live.codes)
            if text is None:
                message = messages.live(self._live_time, self._live_values, live.codes)
                text = texts[live.codes] = dumps(message)
            skipped = version - live.version - 1
            self._count(client.offer(key, None, text, conflated=skipped))
            live.version = version
            live.due = now + live.interval
        return None if next_due is None else max(0.0, next_due - now)

    # --- supervision --------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self._tick())
            try:
                self.supervise(time.monotonic())
            except Exception:
                log.exception("connection supervision failed; going on")

    def _tick(self) -> float:
        services = self._services
        if services is None:
            return SUPERVISE_SECONDS
        shortest = min(services.ws_heartbeat_seconds, services.ws_max_lag_seconds)
        return max(0.02, min(SUPERVISE_SECONDS, shortest / 4))

    def supervise(self, now: float) -> None:
        """Heartbeats for idle connections; a close request for those too far behind."""
        beat: str | None = None
        for client in list(self._clients):
            if client.close_request is not None:
                continue
            reason = client.too_slow(now)
            if reason is not None:
                self.closed_slow += 1
                log.info("closing %s: %s", client.address or "a client", reason)
                client.request_close(CloseCode.TOO_SLOW, reason)
            elif client.idle(now):
                if beat is None:
                    beat = dumps(self._heartbeat())
                client.offer_heartbeat(beat)

    def _heartbeat(self) -> dict[str, Any]:
        engine = self._services.engine if self._services is not None else None
        return messages.heartbeat(engine, self._last, self._seq)

    def stats(self) -> dict[str, Any]:
        """Counters for the readiness endpoint."""
        access = self._services.access.stats() if self._services is not None else None
        return {
            "running": self.running,
            "clients": self.clients(),
            "connections": len(self._clients),
            "publications_received": self.received,
            "updates_dropped": self.dropped_total,
            "channel_errors": self.channel_errors,
            "live_received": self.live_received,
            "gaps_filled": self.gaps_filled,
            "closed_slow": self.closed_slow,
            "access": access,
        }

    # --- channel consumption -------------------------------------------------------------

    async def _consume(
        self,
        channel: AsyncIterator[T],
        resubscribe: Callable[[], AsyncIterator[T]],
        handle: Callable[[T], Awaitable[None]],
    ) -> None:
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                async for item in channel:
                    await handle(item)
                    delay = RETRY_FIRST_SECONDS
                log.warning("store channel ended; subscribing again in %.1f s", delay)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # A failing channel must not end the fan-out for the life of the process.
                self.channel_errors += 1
                log.warning("store channel failed (%s); retrying in %.1f s", error, delay)
            finally:
                close = getattr(channel, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
            channel = resubscribe()
