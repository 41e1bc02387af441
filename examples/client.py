"""A small client of the index-ticker feed (WS /v1/ws): subscribes, prints every value, and after
a dropped connection reconnects and resumes by sequence number, so that no update is lost or
printed twice.

    python examples/client.py IMOEX RTSI
    python examples/client.py --url wss://feed.example/v1/ws --api-key "$KEY" IMOEX
    python examples/client.py --json IMOEX        # one JSON message per line, as received

The protocol is described in docs/protocol.md. Needs the `websockets` package (13 or later).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("index-ticker.v1")
MOSCOW = timezone(timedelta(hours=3), "MSK")
RETRY_FIRST = 0.2  # seconds before the first reconnection attempt
RETRY_MAX = 5.0  # seconds: the longest wait between attempts
FATAL = {4001: "no API key given", 4003: "API key refused"}  # retrying would not help


class Feed:
    """Subscription state that outlives connections: the last seq seen per index."""

    def __init__(self, url: str, codes: list[str], api_key: str | None, raw: bool) -> None:
        self.url = url
        self.codes = codes
        self.api_key = api_key
        self.raw = raw
        self.last_seq: dict[str, int] = {}
        self.duplicates = 0  # updates at or below a seq already seen (never expected)
        self.missed = 0  # seqs skipped: conflated by the server, or a gap

    def subscription(self) -> dict[str, Any]:
        """The subscribe message: with from_seq once something was seen, to resume."""
        message: dict[str, Any] = {"op": "subscribe", "indices": self.codes}
        if self.last_seq:
            message["from_seq"] = dict(self.last_seq)
        return message

    def take(self, message: dict[str, Any], out: TextIO) -> None:
        """Act on one server message: remember seqs, print values, report anomalies."""
        kind = message.get("type")
        if self.raw and kind != "heartbeat":
            print(json.dumps(message, separators=(",", ":")), file=out, flush=True)
        if kind in ("snapshot", "update"):
            self._value(message, out)
        elif kind == "error":
            warn(f"server: {message.get('reason')}")

    def _value(self, message: dict[str, Any], out: TextIO) -> None:
        code, seq = message["code"], message["seq"]
        if seq is None:
            return  # an index not published yet
        last = self.last_seq.get(code)
        if message["type"] == "snapshot":
            if message.get("gap"):
                warn(f"{code}: updates after seq {last} are no longer kept; continuing from {seq}")
        elif last is not None and seq <= last:
            self.duplicates += 1
            warn(f"{code}: duplicate seq {seq} (already at {last})")
            return
        elif last is not None and seq > last + 1:
            self.missed += seq - last - 1
            warn(f"{code}: {seq - last - 1} updates conflated before seq {seq}")
        self.last_seq[code] = seq
        if not self.raw:
            print(describe(message), file=out, flush=True)

    async def run(self, out: TextIO) -> int:
        """Follow the feed until interrupted; 2 when the server refuses the API key."""
        delay = RETRY_FIRST
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        while True:
            try:
                async with connect(
                    self.url, additional_headers=headers, subprotocols=[SUBPROTOCOL]
                ) as ws:
                    await ws.send(json.dumps(self.subscription()))
                    async for text in ws:
                        self.take(json.loads(text), out)
                        delay = RETRY_FIRST  # only a connection that delivers resets the backoff
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                if code in FATAL:
                    warn(f"closed by the server: {FATAL[code]} ({closed.rcvd})")
                    return 2
                warn(f"connection lost ({closed}); resuming")
            except InvalidURI as error:
                warn(str(error))
                return 2
            except (OSError, InvalidHandshake, TimeoutError) as error:
                warn(f"cannot connect ({error}); retrying")
            # Jitter spreads the reconnections of many clients after a server restart.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, RETRY_MAX)


def describe(message: dict[str, Any]) -> str:
    """One human line: Moscow time, code, value, change, seq."""
    moment = datetime.fromisoformat(message["time"].replace("Z", "+00:00")).astimezone(MOSCOW)
    change = message.get("change") or 0.0
    percent = message.get("change_percent") or 0.0
    flags = "" if message.get("status", "live") == "live" else f"  [{message['status']}]"
    return (
        f"{moment:%Y-%m-%d %H:%M:%S} MSK  {message['code']:<8} {message['value']:>12.2f} "
        f"{change:+10.2f} ({percent:+.4f}%)  seq {message['seq']}{flags}"
    )


def warn(text: str) -> None:
    print(f"client: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print index values from an index-ticker feed.")
    parser.add_argument("codes", nargs="+", help="index codes, e.g. IMOEX RTSI")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/ws", help="the feed URL")
    parser.add_argument("--api-key", help="API key, when the server requires one")
    parser.add_argument("--json", action="store_true", help="print messages as JSON lines")
    args = parser.parse_args(argv)
    feed = Feed(args.url, args.codes, args.api_key, args.json)
    try:
        return asyncio.run(feed.run(sys.stdout))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
