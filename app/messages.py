"""Server messages of WS /v1/ws other than the publication itself: heartbeat, constituents,
live values, and the replies to client messages. Plain dictionaries, JSON-ready."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from app.rest import current_base, profile_tables
from streaming.engine import Engine
from streaming.methodology.definition import IndexDefinition
from streaming.methodology.schedule import iso_utc, utc_from_epoch
from streaming.publication import EngineState, Publication

ENGINE_FIELDS = ("state", "session", "session_open", "trading_day", "cadence_seconds")


def now_iso() -> str:
    """The current moment, ISO 8601 UTC with milliseconds."""
    return iso_utc(datetime.now(UTC))


def heartbeat(
    engine: Engine | None, last: Publication | None, seq: dict[str, int]
) -> dict[str, Any]:
    """What an idle connection is told: server time, the engine's state, the feed's state.

    `feed` is "live", "stale" (no ticks for a while) or "paused" (session closed, auction); a
    process without an engine reports the status of the last publication it received.
    """
    engine_part: dict[str, Any] | None = None
    feed: str | None = None if last is None else last.status
    if engine is not None:
        status = engine.status()
        engine_part = {name: status.get(name) for name in ENGINE_FIELDS}
        feed = str(status.get("feed")) if status.get("session_open") else "paused"
    return {
        "type": "heartbeat",
        "time": now_iso(),
        "engine": engine_part,
        "feed": feed,
        "last_publication": None if last is None else iso_utc(last.time),
        "seq": dict(seq),
    }


def constituents(
    code: str,
    definition: IndexDefinition,
    state: EngineState | None,
    stale_after_seconds: float,
) -> dict[str, Any]:
    """Prices and weights of an index's lines as saved with a publication (the state)."""
    prices, reference, times = profile_tables(definition, state)
    as_of = state.last_grid if state is not None else time.time()
    lines = []
    for line in current_base(definition, state).constituents:
        lines.append(
            (line, prices.get(line.secid, reference.get(line.secid, line.reference_price)))
        )
    priced = [price * line.index_shares for line, price in lines if price is not None]
    total = math.fsum(priced) if len(priced) == len(lines) else None
    rows = []
    for line, price in lines:
        tick = times.get(line.secid)
        known = tick is not None and math.isfinite(tick)
        rows.append(
            {
                "secid": line.secid,
                "issuer": line.issuer,
                "price": price,
                "reference_price": reference.get(line.secid, line.reference_price),
                "weight": 100.0 * price * line.index_shares / total
                if total and price is not None
                else None,
                "index_shares": line.index_shares,
                "last_tick_time": iso_utc(utc_from_epoch(tick)) if known and tick else None,
                "stale": not known or as_of - (tick or 0.0) > stale_after_seconds,
            }
        )
    return {
        "type": "constituents",
        "code": code,
        "seq": state.seq.get(code) if state is not None else None,
        "time": iso_utc(utc_from_epoch(state.last_grid)) if state is not None else None,
        "capitalization": total,
        "constituents": rows,
    }


def live(moment: str | None, values: dict[str, float], codes: tuple[str, ...]) -> dict[str, Any]:
    """The live values of some codes (those the engine gave a value for)."""
    return {
        "type": "live",
        "time": moment,
        "values": {code: values[code] for code in codes if code in values},
    }


def resumed(code: str, from_seq: int, replayed: int, seq: int) -> dict[str, Any]:
    """Said after the updates missed since from_seq were replayed: live from here."""
    return {"type": "resumed", "code": code, "from_seq": from_seq, "replayed": replayed, "seq": seq}


def subscribed_live(codes: tuple[str, ...], interval_ms: int) -> dict[str, Any]:
    """The answer to a live-channel subscription (it has no snapshot to answer with)."""
    return {
        "type": "subscribed",
        "channel": "live",
        "indices": list(codes),
        "min_interval_ms": interval_ms,
    }


def pong() -> dict[str, Any]:
    """The answer to {"op": "ping"}."""
    return {"type": "pong", "time": now_iso()}


def error(field: str, reason: str) -> dict[str, Any]:
    """A client message that could not be acted on; the connection stays open."""
    return {"type": "error", "field": field, "reason": f"{field}: {reason}"}


def unsubscribed(channel: str, codes: tuple[str, ...]) -> dict[str, Any]:
    """The answer to an unsubscribe: nothing of these codes on this channel follows."""
    return {"type": "unsubscribed", "channel": channel, "indices": list(codes)}
