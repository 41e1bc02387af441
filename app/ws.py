"""WS /v1/ws: subscribe to index codes, get a snapshot of each, then every update.

Per connection, two tasks: this handler reads client messages; a sender task drains the client's
bounded queue (see app.broadcast for the drop-oldest policy). Both write through one lock, so a
snapshot and the updates queued while it was read are sent in order, and an update whose seq is
not above the snapshot's is skipped: nothing is lost or sent twice between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket

from app.broadcast import Broadcaster, Subscriber
from app.models import value_message
from app.services import Services, broadcaster_of, services_of
from streaming.errors import IndexTickerError
from streaming.methodology.schedule import iso_utc

log = logging.getLogger(__name__)

router = APIRouter()

OPERATIONS = ("subscribe", "unsubscribe", "ping")


class ProtocolError(Exception):
    """A client message this server cannot act on: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class Connection:
    """One WebSocket client: its subscription, its sender task and its message handling."""

    def __init__(self, websocket: WebSocket, services: Services, broadcaster: Broadcaster) -> None:
        self.websocket = websocket
        self.services = services
        self.broadcaster = broadcaster
        self.subscriber = Subscriber(services.ws_queue_size)
        # Per code, the seq of the last snapshot or update sent: queued updates at or below it are
        # stale.
        self.floor: dict[str, int] = {}
        self.send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.websocket.send_text(_dumps(message))

    async def error(self, field: str, reason: str) -> None:
        await self.send({"type": "error", "field": field, "reason": f"{field}: {reason}"})

    async def pump(self) -> None:
        """Send queued updates until the connection fails; the only sender of updates."""
        subscriber = self.subscriber
        while True:
            update = await subscriber.next()
            async with self.send_lock:
                if update.code not in subscriber.codes:
                    continue
                floor = self.floor.get(update.code)
                if floor is not None and update.seq <= floor:
                    continue
                await self.websocket.send_text(update.text)
                # Each code's seq only goes up on the wire: a re-announced publication is skipped.
                self.floor[update.code] = update.seq
                subscriber.delivered += 1

    def codes(self, data: dict[str, Any]) -> list[str]:
        """The validated, de-duplicated list of known index codes in the message."""
        if "indices" not in data:
            raise ProtocolError("indices", "missing; expected an array of index codes")
        raw = data["indices"]
        if not isinstance(raw, list):
            raise ProtocolError(
                "indices", f"must be an array of index codes, got {type(raw).__name__}"
            )
        if not raw:
            raise ProtocolError("indices", "empty; name at least one index code")
        limit = self.services.ws_max_subscriptions
        if len(raw) > limit:
            raise ProtocolError("indices", f"at most {limit} codes per message, got {len(raw)}")
        codes: list[str] = []
        for position, code in enumerate(raw):
            if not isinstance(code, str):
                raise ProtocolError(
                    f"indices[{position}]", f"must be a string, got {type(code).__name__}"
                )
            if code not in codes:
                codes.append(code)
        known = self.services.family.codes
        unknown = [code for code in codes if code not in known]
        if unknown:
            names = ", ".join(repr(code) for code in unknown)
            raise ProtocolError("indices", f"unknown index {names}; known: {', '.join(known)}")
        return codes

    async def subscribe(self, codes: list[str]) -> None:
        subscriber = self.subscriber
        total = len(subscriber.codes | set(codes))
        if total > self.services.ws_max_subscriptions:
            raise ProtocolError(
                "indices",
                f"at most {self.services.ws_max_subscriptions} subscriptions per connection",
            )
        added = [code for code in codes if code not in subscriber.codes]
        async with self.send_lock:
            # Registered before the snapshot is read: an update published meanwhile is queued,
            # and the floor set below discards it if the snapshot already contains it.
            self.broadcaster.register(subscriber, codes)
            try:
                latest = await self.services.store.latest()
            except IndexTickerError as error:
                self.broadcaster.unregister(subscriber, added)
                reason = f"snapshot unavailable, try again: {error}"
                raise ProtocolError("indices", reason) from None
            for code in codes:
                publication = latest.get(code)
                if publication is None:
                    self.floor.pop(code, None)
                else:
                    self.floor[code] = publication.seq
                spec = self.services.family.spec(code)
                snapshot = value_message(publication, spec, "snapshot")
                await self.websocket.send_text(_dumps(snapshot))

    async def unsubscribe(self, codes: list[str]) -> None:
        async with self.send_lock:
            self.broadcaster.unregister(self.subscriber, codes)
            for code in codes:
                self.floor.pop(code, None)
            reply = {"type": "unsubscribed", "indices": codes}
            await self.websocket.send_text(_dumps(reply))

    async def handle(self, text: str) -> None:
        """Act on one text message; raise ProtocolError for anything wrong with it."""
        limit = self.services.ws_max_message_bytes
        if len(text) > limit or len(text.encode("utf-8")) > limit:
            raise ProtocolError("message", f"larger than {limit} bytes")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise ProtocolError("message", f"not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ProtocolError("message", f"must be a JSON object, got {type(data).__name__}")
        op = data.get("op")
        if op is None:
            raise ProtocolError("op", f"missing; expected one of {', '.join(OPERATIONS)}")
        if not isinstance(op, str):
            raise ProtocolError("op", f"must be a string, got {type(op).__name__}")
        if op == "ping":
            await self.send({"type": "pong", "time": iso_utc(datetime.now(UTC))})
        elif op == "subscribe":
            await self.subscribe(self.codes(data))
        elif op == "unsubscribe":
            await self.unsubscribe(self.codes(data))
        else:
            raise ProtocolError(
                "op", f"unknown operation {op!r}; expected one of {', '.join(OPERATIONS)}"
            )

    async def run(self) -> None:
        """Serve the connection until the client goes away."""
        sender = asyncio.create_task(self.pump(), name="ws-sender")
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    await self.error("message", "binary frames are not supported; send JSON text")
                    continue
                try:
                    await self.handle(text)
                except ProtocolError as problem:
                    await self.error(problem.field, problem.reason)
                if sender.done():
                    return  # the client stopped taking data: sending failed
        finally:
            self.broadcaster.unregister(self.subscriber)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Live index values: subscribe, unsubscribe, ping (see docs/api.md)."""
    await websocket.accept()
    connection = Connection(websocket, services_of(websocket), broadcaster_of(websocket))
    try:
        await connection.run()
    except Exception as error:
        # A send to a client that has just gone away fails here; nothing to answer to.
        log.debug("websocket closed: %s", error)
