"""What a subscribing client gets before the live messages: a snapshot, or the updates it
missed since `from_seq` (a snapshot flagged `"gap": true` when the history no longer has them),
or the current constituents.

Every key is registered for live messages and held *before* the store is read; the held
messages are released above the last seq the client was sent from the store. With the Redis
store the read and the channel race for real: a publication lands in the read, in the held
buffer, or in both (then its seq is not above the floor and it is dropped), never in neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app import messages
from app.models import value_message
from app.protocol import Channel, ProtocolError, Subscribe, dumps, with_fields
from streaming.errors import IndexTickerError
from streaming.publication import Publication

if TYPE_CHECKING:
    from app.ws import Connection

REPLAY_PAGE = 500  # publications read from the history per round trip


class CatchUp:
    """Snapshot, replay and constituents for one connection's subscriptions."""

    __slots__ = ("client", "connection", "store")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.client = connection.client
        self.store = connection.services.store

    async def _reply(self, text: str) -> None:
        await self.connection.reply(text)

    async def index(self, command: Subscribe) -> None:
        """Subscribe codes on the index channel: snapshot or resume each, then go live."""
        broadcaster = self.connection.broadcaster
        codes = command.codes
        for code in codes:
            self.client.hold((Channel.INDEX.value, code))
        broadcaster.subscribe(self.client, Channel.INDEX, codes, command.contributions)
        pending = list(codes)
        try:
            latest = await self.store.latest()
            for code in codes:
                publication = latest.get(code)
                if code in command.from_seq:
                    floor = await self._resume(
                        code, command.from_seq[code], publication, command.contributions
                    )
                else:
                    floor = await self._snapshot(code, publication, command.contributions)
                self.client.release((Channel.INDEX.value, code), floor)
                pending.remove(code)
        except IndexTickerError as error:
            broadcaster.unsubscribe(self.client, Channel.INDEX, pending)
            names = ", ".join(pending)
            raise ProtocolError("indices", f"{names} not subscribed, try again: {error}") from None

    async def _snapshot(
        self, code: str, publication: Publication | None, contributions: bool, gap: bool = False
    ) -> int | None:
        """Send the latest value as a snapshot; the seq it carries becomes the floor."""
        message: dict[str, Any]
        if publication is None:
            spec = self.connection.services.family.spec(code)
            message = value_message(None, spec, "snapshot")
        else:
            message = publication.message("snapshot", contributions=contributions)
        if gap:
            message["gap"] = True
        await self._reply(dumps(message))
        return None if publication is None else publication.seq

    async def _resume(
        self, code: str, from_seq: int, latest: Publication | None, contributions: bool
    ) -> int | None:
        """Replay the updates after from_seq, then say `resumed`; or a gap snapshot."""
        newest = latest.seq if latest is not None else 0
        limit = self.connection.services.ws_replay_limit
        if from_seq > newest or newest - from_seq > limit:
            # Ahead of the store (it was reset) or further behind than replays go.
            return await self._snapshot(code, latest, contributions, gap=True)
        key = (Channel.INDEX.value, code)
        last, replayed, target = from_seq, 0, newest
        while True:
            while last < target:
                page = await self.store.replay_after(code, last, REPLAY_PAGE)
                if page is None or replayed + len(page) > limit:
                    fresh = (await self.store.latest()).get(code)
                    return await self._snapshot(code, fresh, contributions, gap=True)
                if not page:
                    break  # the history ends here: nothing more to replay
                for publication in page:
                    update = publication.message("update", contributions=contributions)
                    await self._reply(with_fields(dumps(update), replayed=True))
                last = page[-1].seq
                replayed += len(page)
            # Held messages start above what was replayed only if the hold overflowed while
            # the history was read: read on up to them.
            first = self.client.first_held(key)
            if first is None or first <= last + 1 or target >= first - 1:
                break
            target = first - 1
        await self._reply(dumps(messages.resumed(code, from_seq, replayed, last)))
        return last

    async def constituents(self, codes: tuple[str, ...]) -> None:
        """Subscribe codes on the constituents channel: the current lines of each, then live."""
        broadcaster = self.connection.broadcaster
        for code in codes:
            self.client.hold((Channel.CONSTITUENTS.value, code))
        broadcaster.subscribe(self.client, Channel.CONSTITUENTS, codes)
        try:
            state = await self.store.load_state()
        except IndexTickerError as error:
            broadcaster.unsubscribe(self.client, Channel.CONSTITUENTS, codes)
            names = ", ".join(codes)
            raise ProtocolError("indices", f"{names} not subscribed, try again: {error}") from None
        for code in codes:
            message = broadcaster.constituents_message(code, state)
            await self._reply(dumps(message))
            seq = message["seq"]
            self.client.release(
                (Channel.CONSTITUENTS.value, code), seq if isinstance(seq, int) else None
            )
