"""The FastAPI application: REST, tick ingest, WebSocket fan-out, health and the dashboard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

import streaming
from app import admin, fx, history, ingest, redaction, rest, ws
from app.broadcast import Broadcaster
from app.collector import Collector
from app.errors import install_error_handlers
from app.metrics import ping_seconds, render_metrics
from app.models import error_responses
from app.services import Services, services_of
from streaming.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

__all__ = ["STATIC_DIR", "Services", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
STORE_PING_TIMEOUT_SECONDS = 2.0

_PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>index-ticker</title></head>
<body><h1>index-ticker</h1>
<p>The dashboard is not installed. Values: <a href="/v1/indices">/v1/indices</a>,
API documentation: <a href="/docs">/docs</a>.</p></body></html>
"""


class IndexTickerApp(FastAPI):
    """FastAPI with the feed endpoint served in front of the middleware stack: a WebSocket
    connection lives for hours, and every layer it passed through (error and exception
    middleware, exit stacks, the router) would keep a suspended frame of its own for it, some
    7 KiB per connection. None of them acts on a WebSocket: the endpoint admits, answers and
    handles its errors itself."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == ws.FEED_PATH:
            scope["app"] = self
            await ws.websocket_endpoint(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(services: Services) -> FastAPI:
    """The application for these services; the lifespan opens and closes them in order."""
    broadcaster = Broadcaster(services.store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await services.store.open()
            stack.push_async_callback(services.store.close)
            if services.engine is not None:
                await services.engine.start()
                stack.push_async_callback(services.engine.stop)
            await broadcaster.start()
            stack.push_async_callback(broadcaster.stop)
            cadence = (
                services.engine.cadence
                if services.engine is not None
                else services.family.cadence_seconds
            )
            collector = Collector(cadence)
            collector.start()
            stack.push_async_callback(collector.stop)
            broadcaster.writes.after = collector.after_round
            await services.latest_values.start()
            stack.push_async_callback(services.latest_values.stop)
            yield

    app = IndexTickerApp(
        title="index-ticker",
        version=streaming.__version__,
        summary="Real-time IMOEX and RTSI values over REST and WebSocket",
        lifespan=lifespan,
        # No OpenTelemetry is set up here: without this FastAPI would look up the global
        # providers on every request to find out.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.broadcaster = broadcaster
    if services.cors_origins:
        # Off unless configured: without origins no response carries a CORS header at all.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(services.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    redaction.install()  # no API key from a query string or header in the server's logs
    install_error_handlers(app)
    rest.install(app)
    app.include_router(history.router)
    app.include_router(ingest.router)
    app.include_router(fx.router)
    app.include_router(admin.router)
    app.include_router(ws.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        tags=["health"],
        responses=error_responses((503, "the state store does not answer")),
    )
    # An operations endpoint, described in docs/metrics.md rather than in the API's document.
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", dashboard, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app


async def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the state store answers, 503 when it does not."""
    services = services_of(request)
    broadcaster: Broadcaster = request.app.state.broadcaster
    answered = await ping_seconds(services.store, STORE_PING_TIMEOUT_SECONDS) is not None
    body: dict[str, Any] = {
        "status": "ready" if answered else "unavailable",
        "store": {"backend": services.store.name, "ok": answered},
        "broadcast": broadcaster.stats(),
    }
    if services.engine is not None:
        body["engine"] = jsonable_encoder(services.engine.status())
    if not answered:
        if services.engine is not None and services.engine.state == "running":
            # Still computing and pushing to this process's subscribers from memory.
            body["status"] = "degraded"
        body = {"detail": f"state store {services.store.name!r} does not answer", **body}
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process, text exposition format 0.0.4 (docs/metrics.md)."""
    services = services_of(request)
    body = await render_metrics(
        engine=services.engine,
        store=services.store,
        broadcaster=request.app.state.broadcaster,
        access=services.access,
    )
    return Response(body, media_type=METRICS_CONTENT_TYPE)


async def dashboard() -> Response:
    """The live dashboard page (a placeholder when the page is not installed)."""
    index = STATIC_DIR / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html")
    return HTMLResponse(_PLACEHOLDER)
