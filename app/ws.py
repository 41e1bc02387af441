"""WS /v1/ws: the feed endpoint. Admission (API key, limits), then one task per connection (the
server's own): it reads client messages and answers them itself (snapshots, replays, pongs,
errors). Fan-out messages (updates, constituents, live values, heartbeats) are written from the
connection's outbox once the round of fan-out that queued them is over, without a task:

- under `FeedProtocol` (the server's WebSocket protocol, see `uvicorn_options`) the frames built
  once for every client are written as they are, everything queued in one write; a connection
  with nothing queued takes a round's frames without queueing them at all (`Client.pending`);
- otherwise, or when the socket is backed up, through the ASGI send: a send that the socket
  takes at once completes there and then; one that has to wait goes on in a task of its own,
  which drains the outbox and ends.

One writer at a time (`Turn`); the fan-out never waits for anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app import messages
from app.access import Refusal, presented_key
from app.broadcast import Broadcaster
from app.catchup import CatchUp
from app.lean import Flag, Inbox
from app.outbox import Entry
from app.protocol import (
    SUBPROTOCOL,
    Channel,
    Limits,
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    dumps,
    parse,
)
from app.services import Services, broadcaster_of, services_of
from app.subscription import Client, Policy

log = logging.getLogger(__name__)

router = APIRouter()

FEED_PATH = "/v1/ws"
CLOSE_TIMEOUT = 5.0  # seconds to get a close frame out to a client that reads slowly

Send = Coroutine[Any, Any, None]
FRAMES = "index-ticker.frames"  # the scope extension through which FeedProtocol takes frames
# The kernel's send buffer per connection, bytes (Linux doubles it). Its own sizing grows it to
# megabytes for a client that stops reading, so a stuck client would hide minutes of updates
# there before the outbox saw any back-pressure; a feed connection needs far less.
SEND_BUFFER_BYTES = 64 * 1024


class FeedProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with what the fan-out needs on top: the scope offers
    the connection under the FRAMES extension, to write frames built once for every client (and
    all of a round's in one write), and the handshake is let go of once the connection is open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Same interface, a few KiB less per connection (see app.lean).
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # not every transport has one
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        scope = getattr(self, "scope", None)  # there is none before the handshake
        if scope is not None:
            (scope.get("extensions") or {}).pop(FRAMES, None)  # no cycle left to collect

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:
            extensions = self.scope.setdefault("extensions", {})
            if extensions is not None:
                extensions[FRAMES] = {"sink": self}

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message.get("type") == "websocket.accept":
            # The request and response headers are not needed once open: a few KiB each. The
            # handshake parser's suspended frame keeps the request, so its headers are emptied
            # too (the scope has its own copy).
            if self.request is not None:
                self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]

    def frames_writable(self) -> bool:
        """True when whole frames can go straight to the socket: open, not backed up, and
        no per-connection encoding (compression) negotiated."""
        return (
            self.handshake_complete
            and self.writable.is_set()
            and not self.conn.extensions
            and self.open()
        )

    def open(self) -> bool:
        """True while frames written now reach the client."""
        return not self.close_sent and not self.disconnected and not self.transport.is_closing()

    def write_frames(self, data: bytes) -> None:
        """Write whole server frames (a frame is never split between two writers)."""
        self.transport.write(data)


def frame_sink(websocket: WebSocket) -> FeedProtocol | None:
    """The connection's FeedProtocol when the server runs it, else None."""
    extensions = websocket.scope.get("extensions") or {}
    sink = (extensions.get(FRAMES) or {}).get("sink")
    return sink if isinstance(sink, FeedProtocol) else None


class Turn:
    """Who writes to the socket: one writer at a time, taken at once when nobody has it."""

    __slots__ = ("_free", "taken")

    def __init__(self) -> None:
        self.taken = False
        self._free: asyncio.Event | None = None  # made only when someone has to wait

    async def take(self) -> None:
        while self.taken:
            if self._free is None:
                self._free = asyncio.Event()
            await self._free.wait()
        self.taken = True

    def give(self) -> None:
        self.taken = False
        if self._free is not None:
            self._free.set()
            self._free = None


def step(send: Send) -> Any:
    """Run a send coroutine until it completes (None) or has to wait (the future it waits on).
    A send to a socket that takes the bytes completes without waiting: no task is needed."""
    try:
        return send.send(None)
    except StopIteration:
        return None


async def finish(send: Send, waiting: Any) -> None:
    """Drive a send coroutine that `step` left waiting on a future, to its end."""
    try:
        while waiting is not None:
            if isinstance(waiting, asyncio.Future):
                # What a task does with the future a coroutine yields: wait, then resume it.
                waiting._asyncio_future_blocking = False
                await asyncio.wait([waiting])
            else:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            waiting = step(send)
    finally:
        send.close()  # cancelled half-way: the send is abandoned, nothing of it written


class Connection:
    """One WebSocket client: its reader, its writes, and its subscriptions."""

    __slots__ = (
        "broadcaster",
        "catch_up",
        "client",
        "draining",
        "failed",
        "flush_due",
        "limits",
        "services",
        "sink",
        "stopping",
        "task",
        "turn",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, services: Services, broadcaster: Broadcaster) -> None:
        self.websocket = websocket
        self.services = services
        self.broadcaster = broadcaster
        address = websocket.client.host if websocket.client else ""
        self.client = Client(
            Policy(
                queue_size=services.ws_queue_size,
                heartbeat_seconds=services.ws_heartbeat_seconds,
                max_lag_seconds=services.ws_max_lag_seconds,
                max_dropped=services.ws_max_dropped,
                max_subscriptions=services.ws_max_subscriptions,
            ),
            address=address,
        )
        self.limits = Limits(
            known=services.family.codes,
            max_message_bytes=services.ws_max_message_bytes,
            max_codes=services.ws_max_subscriptions,
            live_floor_ms=services.ws_live_min_interval_ms,
        )
        self.sink = frame_sink(websocket)
        self.turn = Turn()
        self.flush_due = False
        self.draining: asyncio.Task[None] | None = None
        self.failed = False  # a send failed: the connection is gone
        self.stopping = False  # this connection cancelled its own task to end
        self.task: asyncio.Task[Any] | None = None
        self.catch_up = CatchUp(self)
        self.client.outbox.listener = self.schedule_flush
        self.client.on_close_request = self.stop
        if self.sink is not None:
            self.client.open_round = self.open_round

    # --- writing -----------------------------------------------------------------------

    async def reply(self, text: str) -> None:
        """Send one reply now, in order with the outbox; counts in the lag while it waits."""
        await self.turn.take()
        try:
            self.client.replying_since = time.monotonic()
            try:
                await self.websocket.send_text(text)
            finally:
                self.client.replying_since = None
            self.client.last_sent = time.monotonic()
        finally:
            self.turn.give()
        self.flush()  # what was queued while the reply went out

    async def send(self, message: dict[str, Any]) -> None:
        """Send one reply, in order with the outbox."""
        await self.reply(dumps(message))

    def schedule_flush(self) -> None:
        """Something was queued: write it once the fan-out round in progress has finished."""
        if not self.flush_due:
            self.flush_due = True
            self.broadcaster.writes.due(self.flush)

    def open_round(self) -> bool:
        """True when the frames of the round in progress can go straight to the socket once
        the round is over (the write is then scheduled)."""
        sink = self.sink
        if self.turn.taken or self.failed or sink is None or not sink.frames_writable():
            return False
        self.schedule_flush()
        return True

    def flush(self) -> None:
        """Write the round's frames, then what the outbox holds, now, for as long as the socket
        takes it at once."""
        self.flush_due = False
        client = self.client
        sink = self.sink
        pending = client.take_pending()
        if pending is not None and sink is not None and not self.failed and sink.open():
            # Whole frames, so safe beside a writer that has the turn: that one writes each of
            # its frames in one piece, once the socket takes it.
            sink.write_frames(pending[0] if len(pending) == 1 else b"".join(pending))
        if self.turn.taken or self.failed or not client.outbox:
            return  # nothing queued, or the writer that has the turn flushes when it is done
        if sink is not None and sink.frames_writable():
            frames = []
            while (entry := client.outbox.pop()) is not None:
                if not client.stale(entry):
                    frames.append(entry.wire_frame())
                    client.mark_sent(entry)
            if frames:
                sink.write_frames(frames[0] if len(frames) == 1 else b"".join(frames))
            return
        self.turn.taken = True
        try:
            while (entry := client.outbox.pop()) is not None:
                if client.stale(entry):
                    continue
                client.sending_since = entry.since
                send = self.websocket.send_text(entry.wire())
                waiting = step(send)
                if waiting is not None:
                    self.draining = asyncio.create_task(self.drain(send, waiting, entry))
                    return  # the task keeps the turn
                client.sending_since = None
                client.mark_sent(entry)
        except Exception as error:
            self.fail(error)
        self.turn.give()

    async def drain(self, send: Send, waiting: Any, entry: Entry) -> None:
        """Finish a send that had to wait, then the rest of the outbox; gives the turn back."""
        client = self.client
        try:
            await finish(send, waiting)
            client.sending_since = None
            client.mark_sent(entry)
            while (queued := client.outbox.pop()) is not None:
                if client.stale(queued):
                    continue
                client.sending_since = queued.since
                await self.websocket.send_text(queued.wire())
                client.sending_since = None
                client.mark_sent(queued)
        except Exception as error:
            self.fail(error)
        finally:
            client.sending_since = None
            self.draining = None
            self.turn.give()

    def fail(self, error: Exception) -> None:
        """A write failed: the client has gone; end the connection."""
        log.debug("websocket send failed: %s", error)
        self.failed = True
        self.stop()

    def stop(self) -> None:
        """End this connection's task (a close request, or a failed write)."""
        if self.task is not None and not self.stopping:
            self.stopping = True
            self.task.cancel()

    # --- client messages ---------------------------------------------------------------

    async def handle(self, text: str) -> None:
        """Act on one text message; raise ProtocolError for anything wrong with it."""
        command = parse(text, self.limits)
        if isinstance(command, Ping):
            await self.send(messages.pong())
        elif isinstance(command, Subscribe):
            await self.subscribe(command)
        elif isinstance(command, Unsubscribe):
            self.broadcaster.unsubscribe(self.client, command.channel, command.codes)
            await self.send(messages.unsubscribed(command.channel.value, command.codes))

    async def subscribe(self, command: Subscribe) -> None:
        """Register the codes, then send what the client needs before the live messages."""
        limit = self.client.policy.max_subscriptions
        if self.client.after_subscribing(command.channel, command.codes) > limit:
            raise ProtocolError("indices", f"at most {limit} subscriptions per connection")
        if command.channel is Channel.LIVE:
            interval_ms = command.min_interval_ms or self.services.ws_live_min_interval_ms
            # Acknowledged before anything is queued, so the answer comes first.
            await self.send(messages.subscribed_live(command.codes, interval_ms))
            self.broadcaster.subscribe_live(self.client, command.codes, interval_ms / 1000)
        elif command.channel is Channel.CONSTITUENTS:
            await self.catch_up.constituents(command.codes)
        else:
            await self.catch_up.index(command)

    async def read(self) -> None:
        """Read client messages until the client goes away."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            try:
                if text is None:
                    raise ProtocolError(
                        "message", "binary frames are not supported; send JSON text"
                    )
                await self.handle(text)
            except ProtocolError as problem:
                await self.send(messages.error(problem.field, problem.reason))

    async def run(self) -> None:
        """Serve the connection until the client goes away, fails, or must be closed."""
        client = self.client
        self.task = asyncio.current_task()
        self.broadcaster.attach(client)
        try:
            if client.close_request is None:
                await self.read()
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # the server is stopping, not this connection
            if self.task is not None:
                self.task.uncancel()
        finally:
            self.stopping = True  # from here on nothing cancels this task
            self.broadcaster.detach(client)
            draining = self.draining
            if draining is not None:
                draining.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await draining
        if client.close_request is not None and not self.failed:
            code, reason = client.close_request
            # The close frame waits behind what the client has not read yet: a client that
            # reads again gets it; one that never does is dropped without it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.websocket.close(code, reason), CLOSE_TIMEOUT)


async def websocket_endpoint(websocket: WebSocket) -> None:
    """The feed: index updates, constituents, live values (see docs/protocol.md)."""
    services = services_of(websocket)
    broadcaster = broadcaster_of(websocket)
    broadcaster.bind(services)
    offered = websocket.scope.get("subprotocols", ())
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    address = websocket.client.host if websocket.client else ""
    admission = await services.access.admit(presented_key(websocket), address)
    await websocket.accept(subprotocol=subprotocol)
    if isinstance(admission, Refusal):
        # Accepted first so that the client sees the close code and reason, which a refused
        # handshake (an HTTP status) would not show to a browser.
        with contextlib.suppress(Exception):
            await websocket.close(admission.code, admission.reason)
        return
    try:
        await Connection(websocket, services, broadcaster).run()
    except Exception as error:
        # A send to a client that has just gone away fails here; nothing to answer to.
        log.debug("websocket closed: %s", error)
    finally:
        services.access.release(admission)


# A plain Starlette route: the endpoint takes no dependencies, and FastAPI's dependency machinery
# would keep an exit stack and several frames alive per connection for nothing.
router.add_websocket_route(FEED_PATH, websocket_endpoint)
