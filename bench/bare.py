"""The REST baseline: a bare Starlette app answering fixed response bytes, on the same uvicorn with
the same options as the service (streaming.serve.uvicorn_options).

    python -m bench.bare --port 8100 --bodies bodies.json

`bodies.json` maps a path to {"body": text, "content_type": text}; every other path is a 404.
bench/rest.py fetches the bodies from the running service first, so both answer the same bytes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streaming.serve import uvicorn_options
from streaming.settings import Settings


def bare_app(bodies: dict[str, tuple[bytes, str]]) -> Starlette:
    """One route per path, each answering its bytes as they are: no store, no validation."""

    def answering(body: bytes, content_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            return Response(body, media_type=content_type)

        return answer

    routes = [
        Route(path, answering(body, content_type), methods=["GET"])
        for path, (body, content_type) in bodies.items()
    ]
    routes.append(Route("/healthz", answering(b'{"status":"ok"}', "application/json")))
    return Starlette(routes=routes)


def load_bodies(path: Path) -> dict[str, tuple[bytes, str]]:
    """{path: (body bytes, content type)} from the JSON file bench/rest.py writes."""
    data = json.loads(path.read_text())
    return {key: (value["body"].encode(), value["content_type"]) for key, value in data.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="JSON {path: {body, ...}}")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    settings = Settings(host=args.host, port=args.port, log_level=args.log_level)
    uvicorn.run(bare_app(load_bodies(args.bodies)), **uvicorn_options(settings))


if __name__ == "__main__":
    main()
