"""The fan-out baseline: a bare Starlette WebSocket app on uvicorn that, at every grid instant,
loops over its clients awaiting `send_text` of the same update text, one client after another.

It speaks enough of the feed protocol for the load generator (subscribe → one snapshot per
code, then an update per code per grid instant, same fields as the service's, taken from a
template file) and runs with uvicorn's defaults, so it is what a first implementation does.

    python -m bench.naive_ws --port 8001 --template updates.json [--cadence 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bench.wsload import SUBPROTOCOL, raise_open_files


def iso(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, like the service."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_app(
    templates: dict[str, dict[str, Any]], constituents: dict[str, Any], cadence: float
) -> Starlette:
    """The baseline app: one set of clients, one grid loop sending to each in turn."""
    clients: set[WebSocket] = set()
    lines: dict[str, set[WebSocket]] = {code: set() for code in constituents}
    seq = {code: int(message.get("seq") or 0) for code, message in templates.items()}
    published = {"count": 0}

    def message(code: str, kind: str, grid: float) -> str:
        body = dict(templates[code], type=kind, time=iso(grid), seq=seq[code])
        return json.dumps(body, separators=(",", ":"))

    async def grid_loop() -> None:
        while True:
            now = time.time()
            grid = (now // cadence + 1) * cadence
            await asyncio.sleep(grid - now)
            for code in templates:
                seq[code] += 1
                text = message(code, "update", grid)
                for websocket in list(clients):
                    try:
                        await websocket.send_text(text)
                    except Exception:
                        clients.discard(websocket)
            for code, subscribers in lines.items():
                text = json.dumps(dict(constituents[code], time=iso(grid)))
                for websocket in list(subscribers):
                    try:
                        await websocket.send_text(text)
                    except Exception:
                        subscribers.discard(websocket)
            published["count"] += 1

    async def endpoint(websocket: WebSocket) -> None:
        offered = websocket.scope.get("subprotocols", ())
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        try:
            while True:
                command = json.loads(await websocket.receive_text())
                if command.get("channel") == "constituents":
                    for code in command.get("indices", ()):
                        lines[code].add(websocket)
                elif command.get("op") == "subscribe":
                    grid = (time.time() // cadence) * cadence
                    for code in command.get("indices", ()):
                        if code in templates:
                            await websocket.send_text(message(code, "snapshot", grid))
                    clients.add(websocket)
        except Exception:
            pass
        finally:
            clients.discard(websocket)
            for subscribers in lines.values():
                subscribers.discard(websocket)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "clients": len(clients), **published})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(grid_loop())
        yield
        task.cancel()

    return Starlette(
        routes=[Route("/healthz", healthz), WebSocketRoute("/v1/ws", endpoint)],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--template", required=True, help="JSON: values and constituents by code")
    parser.add_argument("--cadence", type=float, default=1.0)
    args = parser.parse_args()
    raise_open_files()
    with open(args.template, encoding="utf-8") as file:
        templates = json.load(file)
    uvicorn.run(
        make_app(templates["values"], templates["constituents"], args.cadence),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
