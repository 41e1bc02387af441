"""The WS /v1/ws vocabulary: channels, close codes, and client messages parsed and validated.

No socket and no event loop here: `parse(text, limits)` turns one client text message into a
command or raises ProtocolError naming the field at fault. docs/protocol.md is the reference.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from streaming.errors import FieldError

SUBPROTOCOL = "index-ticker.v1"  # selected when the client offers it in Sec-WebSocket-Protocol
OPERATIONS = ("subscribe", "unsubscribe", "ping")
MAX_INTERVAL_MS = 3_600_000  # the longest live-channel interval a client may ask for


class Channel(StrEnum):
    """What a subscription delivers for its index codes."""

    INDEX = "index"  # snapshot, then one update per publication
    CONSTITUENTS = "constituents"  # constituent prices and weights, once per publication
    LIVE = "live"  # values between publications at most every min_interval_ms


class CloseCode(IntEnum):
    """Close codes the server uses; 4xxx are this protocol's own."""

    NORMAL = 1000
    KEEPALIVE_TIMEOUT = 1011  # no pong within ws_ping_timeout (sent by the server runtime)
    SERVICE_RESTART = 1012  # the server is shutting down: reconnect and resume
    TRY_AGAIN_LATER = 1013  # the API key store does not answer
    UNAUTHORIZED = 4001  # API keys are required and none was given
    FORBIDDEN = 4003  # the API key is not known
    TOO_SLOW = 4008  # the client fell further behind than the server allows
    TOO_MANY = 4029  # too many connections for this API key or address


class ProtocolError(FieldError):
    """A client message this server cannot act on: names the field and the reason."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server accepts from one client message."""

    known: tuple[str, ...]  # index codes served
    max_message_bytes: int = 64 * 1024
    max_codes: int = 64  # codes in one message
    live_floor_ms: int = 100  # the shortest live-channel interval


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Start (or refresh) a subscription of some codes on one channel."""

    codes: tuple[str, ...]
    channel: Channel = Channel.INDEX
    contributions: bool = False  # index channel: updates carry the largest movers
    from_seq: dict[str, int] = field(default_factory=dict)  # index channel: last seq seen
    min_interval_ms: int | None = None  # live channel: None means the server's floor


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop some codes on one channel."""

    codes: tuple[str, ...]
    channel: Channel = Channel.INDEX


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask for a pong: an application-level round trip."""


Command = Subscribe | Unsubscribe | Ping


def parse(text: str, limits: Limits) -> Command:
    """One client message as a command; ProtocolError for anything wrong with it."""
    cap = limits.max_message_bytes
    if len(text) > cap or len(text.encode("utf-8")) > cap:
        raise ProtocolError("message", f"larger than {cap} bytes")
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
        return Ping()
    if op not in OPERATIONS:
        raise ProtocolError(
            "op", f"unknown operation {op!r}; expected one of {', '.join(OPERATIONS)}"
        )
    codes = _codes(data, limits)
    channel = _channel(data)
    if op == "unsubscribe":
        return Unsubscribe(codes, channel)
    return Subscribe(
        codes,
        channel,
        contributions=_contributions(data, channel),
        from_seq=_from_seq(data, channel, codes),
        min_interval_ms=_interval(data, channel, limits.live_floor_ms),
    )


def _codes(data: dict[str, Any], limits: Limits) -> tuple[str, ...]:
    """The validated, de-duplicated codes of the message, all known."""
    if "indices" not in data:
        raise ProtocolError("indices", "missing; expected an array of index codes")
    raw = data["indices"]
    if not isinstance(raw, list):
        raise ProtocolError("indices", f"must be an array of index codes, got {type(raw).__name__}")
    if not raw:
        raise ProtocolError("indices", "empty; name at least one index code")
    if len(raw) > limits.max_codes:
        raise ProtocolError(
            "indices", f"at most {limits.max_codes} codes per message, got {len(raw)}"
        )
    codes: list[str] = []
    for position, code in enumerate(raw):
        if not isinstance(code, str):
            raise ProtocolError(
                f"indices[{position}]", f"must be a string, got {type(code).__name__}"
            )
        if code not in codes:
            codes.append(code)
    unknown = [code for code in codes if code not in limits.known]
    if unknown:
        names = ", ".join(repr(code) for code in unknown)
        raise ProtocolError("indices", f"unknown index {names}; known: {', '.join(limits.known)}")
    return tuple(codes)


def _channel(data: dict[str, Any]) -> Channel:
    raw = data.get("channel", Channel.INDEX.value)
    if raw == Channel.INDEX.value:
        return Channel.INDEX
    names = ", ".join(channel.value for channel in Channel)
    if not isinstance(raw, str):
        raise ProtocolError("channel", f"must be a string, one of {names}")
    try:
        return Channel(raw)
    except ValueError:
        raise ProtocolError(
            "channel", f"unknown channel {raw!r}; expected one of {names}"
        ) from None


def _contributions(data: dict[str, Any], channel: Channel) -> bool:
    raw = data.get("contributions", False)
    if not isinstance(raw, bool):
        raise ProtocolError("contributions", f"must be true or false, got {json.dumps(raw)}")
    if raw and channel is not Channel.INDEX:
        raise ProtocolError("contributions", "only the index channel carries contributions")
    return raw


def _from_seq(data: dict[str, Any], channel: Channel, codes: tuple[str, ...]) -> dict[str, int]:
    raw = data.get("from_seq")
    if raw is None:
        return {}
    if channel is not Channel.INDEX:
        raise ProtocolError("from_seq", "only the index channel resumes by sequence number")
    if not isinstance(raw, dict):
        raise ProtocolError(
            "from_seq",
            f"must be an object of index code -> last seq seen, got {type(raw).__name__}",
        )
    for code, seq in raw.items():
        if code not in codes:
            raise ProtocolError("from_seq", f"{code!r} is not in indices")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ProtocolError(
                f"from_seq.{code}", f"must be an integer >= 0, got {json.dumps(seq)}"
            )
    return dict(raw)


def _interval(data: dict[str, Any], channel: Channel, floor_ms: int) -> int | None:
    raw = data.get("min_interval_ms")
    if raw is None:
        return None
    if channel is not Channel.LIVE:
        raise ProtocolError("min_interval_ms", "only the live channel has an interval")
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ProtocolError("min_interval_ms", f"must be an integer, got {json.dumps(raw)}")
    if not floor_ms <= raw <= MAX_INTERVAL_MS:
        raise ProtocolError(
            "min_interval_ms", f"must be {floor_ms}..{MAX_INTERVAL_MS} milliseconds, got {raw}"
        )
    return raw


def with_fields(text: str, **extra: Any) -> str:
    """A compact JSON object text with more fields appended, without parsing it again."""
    added = ",".join(f"{json.dumps(name)}:{json.dumps(value)}" for name, value in extra.items())
    if not added:
        return text
    body = text[:-1]
    return f"{body},{added}}}" if body != "{" else f"{{{added}}}"


def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented, uncompressed WebSocket text frame (RFC 6455 §5.2) carrying
    `text`: what a server sends, identical for every client, so it is built once and shared."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON text, the form of every server message (serialised once, then shared)."""
    return orjson.dumps(message).decode()
