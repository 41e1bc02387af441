"""WS /v1/ws: the feed endpoint. Admission (API key, limits), then per connection two tasks:
this reader acts on client messages and answers them itself (snapshots, replays, pongs,
errors), and a sender drains the connection's outbox (updates, constituents, live values,
heartbeats). Both write under one lock; the fan-out never waits for either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import APIRouter, WebSocket

from app import messages
from app.access import Refusal, presented_key
from app.broadcast import Broadcaster
from app.catchup import CatchUp
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

CLOSE_TIMEOUT = 5.0  # seconds to get a close frame out to a client that reads slowly


class Connection:
    """One WebSocket client: its reader, its sender, and its subscriptions."""

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
        self.send_lock = asyncio.Lock()
        self.catch_up = CatchUp(self)

    # --- writing -----------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Send one reply now; the caller holds send_lock. Counts in the lag while it waits."""
        self.client.replying_since = time.monotonic()
        try:
            await self.websocket.send_text(text)
        finally:
            self.client.replying_since = None
        self.client.last_sent = time.monotonic()

    async def send(self, message: dict[str, Any]) -> None:
        """Send one reply, in order with the outbox."""
        async with self.send_lock:
            await self.send_text(dumps(message))

    async def pump(self) -> None:
        """Send the outbox until the connection fails; the only sender of fan-out messages."""
        client = self.client
        while True:
            entry = await client.outbox.get()
            client.sending_since = entry.since  # taken from the outbox, not delivered yet
            try:
                async with self.send_lock:
                    if not client.stale(entry):
                        await self.websocket.send_text(entry.wire())
                        client.mark_sent(entry)
            finally:
                client.sending_since = None

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
        self.broadcaster.attach(client)
        tasks = [
            asyncio.create_task(self.read(), name="ws-reader"),
            asyncio.create_task(self.pump(), name="ws-sender"),
            asyncio.create_task(client.closing.wait(), name="ws-closing"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.broadcaster.detach(client)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if client.close_request is not None:
            code, reason = client.close_request
            # The close frame waits behind what the client has not read yet: a client that
            # reads again gets it; one that never does is dropped without it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.websocket.close(code, reason), CLOSE_TIMEOUT)


@router.websocket("/v1/ws")
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
