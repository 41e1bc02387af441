"""One connection as the fan-out sees it: what it subscribed to, where it is in each index's
sequence, what is waiting to be sent, and how far behind it is.

A key (channel, code) being (re)subscribed is *held*: messages for it wait in a small buffer of
their own while the connection reads a snapshot or the history it missed, then are released into
the outbox above the seq the client got from there. Registered before the read, released after
it: nothing published meanwhile is lost, nothing is sent twice.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.outbox import HEARTBEAT, Entry, Key, Outbox
from app.protocol import Channel


@dataclass(slots=True)
class LiveSubscription:
    """The live channel of one connection: its codes and pace."""

    codes: tuple[str, ...]
    interval: float  # seconds: never two live messages closer than this
    version: int = 0  # the last live announcement forwarded (the broadcaster counts them)
    due: float = 0.0  # monotonic seconds: the next live message may go from here


@dataclass(slots=True)
class Policy:
    """The limits one connection lives under (from the service settings)."""

    queue_size: int = 256  # outbox capacity before conflation
    heartbeat_seconds: float = 10.0  # a heartbeat after this long with nothing sent
    max_lag_seconds: float = 30.0  # undelivered for longer than this: closed as too slow
    max_dropped: int = 0  # conflated away more than this: closed as too slow; 0 = no limit
    max_subscriptions: int = 64  # (channel, code) pairs per connection


@dataclass(slots=True, eq=False)  # identity: a connection is equal only to itself
class Client:
    """The fan-out state of one WebSocket connection."""

    policy: Policy
    address: str = ""
    outbox: Outbox = field(init=False)
    index: dict[str, bool] = field(default_factory=dict)  # code -> contributions wanted
    constituents: set[str] = field(default_factory=set)
    live: LiveSubscription | None = None
    floors: dict[Key, int] = field(default_factory=dict)  # last seq sent per key
    held: dict[Key, deque[Entry]] = field(default_factory=dict)
    last_sent: float = field(default_factory=time.monotonic)
    sending_since: float | None = None  # oldest value of a fan-out send not yet completed
    replying_since: float | None = None  # start of a reply (snapshot, replay) not yet completed
    close_request: tuple[int, str] | None = None
    on_close_request: Callable[[], None] | None = None  # the connection's way to stop itself
    # Asked when a round's first shared frame finds nothing queued: True when the connection can
    # take the round's frames straight to its socket (it then writes them once the round is over).
    open_round: Callable[[], bool] | None = None
    pending: list[bytes] | None = None  # frames of the round in progress, written at its end
    pending_keys: list[Key] = field(default_factory=list)  # the key of each pending frame
    sent: int = 0

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.policy.queue_size)

    # --- what it subscribed to ---------------------------------------------------------

    def subscriptions(self) -> int:
        """(channel, code) pairs subscribed."""
        live = len(self.live.codes) if self.live is not None else 0
        return len(self.index) + len(self.constituents) + live

    def after_subscribing(self, channel: Channel, codes: tuple[str, ...]) -> int:
        """How many subscriptions there would be with these added."""
        current: set[str]
        if channel is Channel.INDEX:
            current = set(self.index)
        elif channel is Channel.CONSTITUENTS:
            current = set(self.constituents)
        else:
            current = set(self.live.codes) if self.live is not None else set()
        return self.subscriptions() + len(set(codes) - current)

    def subscribed(self, key: Key) -> bool:
        """True while messages of this key are wanted."""
        channel, code = key
        if channel == Channel.INDEX:
            return code in self.index
        if channel == Channel.CONSTITUENTS:
            return code in self.constituents
        return True  # live and heartbeat entries are dropped on unsubscribe instead

    # --- queueing ----------------------------------------------------------------------

    def offer(
        self,
        key: Key,
        seq: int | None,
        text: str,
        conflated: int = 0,
        frame: bytes | None = None,
        now: float | None = None,
    ) -> int:
        """Queue a message (or hold it while its key is being caught up); never waits.
        `conflated`: messages of its key it already stands for; `frame`: the text as a shared
        WebSocket frame; `now`: monotonic seconds, when the caller has read the clock already.
        Returns how many queued messages conflation dropped to make room."""
        entry = Entry(key, seq, text, time.monotonic() if now is None else now, conflated, frame)
        held = self.held.get(key)
        if held is not None:
            held.append(entry)  # a bounded deque: the history read covers what falls out
            return 0
        return self.outbox.put(entry)

    def offer_shared(self, key: Key, seq: int, text: str, frame: bytes, now: float) -> int:
        """Offer a message shared by many clients (its frame built once): with nothing queued
        ahead of it and its key not held, the frame joins the round's frames for this
        connection, to be written when the round is over; otherwise it is queued (`offer`).
        Returns how many queued messages conflation dropped."""
        if not self.outbox and key not in self.held:
            pending = self.pending
            if pending is None and self.open_round is not None and self.open_round():
                pending = self.pending = []
                self.pending_keys = []
            if pending is not None:
                floor = self.floors.get(key)
                if floor is None or seq > floor:
                    pending.append(frame)
                    self.pending_keys.append(key)
                    self.floors[key] = seq
                return 0
        return self.offer(key, seq, text, 0, frame, now)

    def take_pending(self) -> list[bytes] | None:
        """The round's frames to write now (counted as sent), or None."""
        pending = self.pending
        if pending is not None:
            self.pending = None
            self.last_sent = time.monotonic()
            self.sent += len(pending)
        return pending

    def offer_heartbeat(self, text: str) -> None:
        """Queue a heartbeat (at most one waits at any time)."""
        self.outbox.put(Entry(HEARTBEAT, None, text, time.monotonic()))

    def _drop_pending(self, key: Key) -> None:
        """Take a key's frames out of the round in progress (an unsubscribe, a new hold)."""
        if self.pending and key in self.pending_keys:
            pairs = zip(self.pending_keys, self.pending, strict=True)
            kept = [(k, frame) for k, frame in pairs if k != key]
            self.pending_keys = [k for k, _ in kept]
            self.pending = [frame for _, frame in kept]

    def hold(self, key: Key) -> None:
        """Start holding a key's messages back: a snapshot or a replay of it is about to be read."""
        self._drop_pending(key)
        self.outbox.discard(key)
        self.floors.pop(key, None)
        self.held[key] = deque(maxlen=self.policy.queue_size)

    def first_held(self, key: Key) -> int | None:
        """The lowest seq held for this key, or None when nothing is held."""
        held = self.held.get(key)
        return held[0].seq if held else None

    def release(self, key: Key, floor: int | None) -> None:
        """Stop holding: queue the held messages above `floor` (the seq the client now has)."""
        held = self.held.pop(key, None)
        if floor is not None:
            self.floors[key] = floor
        following = floor
        for entry in held or ():
            if entry.seq is None or floor is None or entry.seq > floor:
                if following is not None and entry.seq is not None and entry.seq > following + 1:
                    # The hold overflowed: say how many are missing, as conflation would.
                    entry.conflated += entry.seq - following - 1
                following = entry.seq
                self.outbox.put(entry)

    def forget(self, key: Key) -> None:
        """Drop everything queued, held or remembered for a key (an unsubscribe)."""
        self._drop_pending(key)
        self.outbox.discard(key)
        self.held.pop(key, None)
        self.floors.pop(key, None)

    def stale(self, entry: Entry) -> bool:
        """True when an entry must not go out: unsubscribed, or not above the seq already sent."""
        if not self.subscribed(entry.key):
            return True
        floor = self.floors.get(entry.key)
        return entry.seq is not None and floor is not None and entry.seq <= floor

    def mark_sent(self, entry: Entry) -> None:
        """Record a delivered entry: its seq becomes the floor of its key."""
        if entry.seq is not None:
            self.floors[entry.key] = entry.seq
        self.last_sent = time.monotonic()
        self.sent += 1

    # --- health ------------------------------------------------------------------------

    def lag(self, now: float) -> float:
        """Seconds the oldest value not yet delivered has waited (0 when all is sent)."""
        if not self.outbox and self.sending_since is None and self.replying_since is None:
            return 0.0  # the common case, checked for every connection at every supervision
        waiting = [
            moment
            for moment in (self.outbox.oldest(), self.sending_since, self.replying_since)
            if moment is not None
        ]
        return max(0.0, now - min(waiting)) if waiting else 0.0

    def idle(self, now: float) -> bool:
        """True when nothing was sent for a heartbeat interval and nothing is on its way."""
        return (
            now - self.last_sent >= self.policy.heartbeat_seconds
            and self.sending_since is None
            and self.replying_since is None
            and not len(self.outbox)
        )

    def too_slow(self, now: float) -> str | None:
        """Why this client must be closed as too slow, or None."""
        lag = self.lag(now)
        if lag > self.policy.max_lag_seconds:
            return f"too slow: {lag:.1f} s behind (limit {self.policy.max_lag_seconds:g} s)"
        limit = self.policy.max_dropped
        if limit and self.outbox.dropped > limit:
            return f"too slow: {self.outbox.dropped} updates dropped (limit {limit})"
        return None

    def request_close(self, code: int, reason: str) -> None:
        """Ask the connection to close with this code and reason (the first request wins)."""
        if self.close_request is None:
            self.close_request = (code, reason)
            if self.on_close_request is not None:
                self.on_close_request()
