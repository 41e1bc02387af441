"""The operations port of an engine process: liveness, readiness and metrics, and the writes that
need the engine itself (base changes, FX rates); no public read API, no WebSocket feed.

A standby engine refuses those writes with 503 (nothing applied), so a proxy in front of the
engines can pass them on to the other one: whichever leads takes them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import admin, fx, redaction
from app.errors import install_error_handlers
from app.main import STORE_PING_TIMEOUT_SECONDS
from app.metrics import ping_seconds, render_metrics
from app.services import Services
from streaming.engine import Engine
from streaming.metrics import CONTENT_TYPE
from streaming.store.base import Store

ROLES = {"running": "leader", "standby": "standby"}  # engine state -> what an operator calls it


def create_ops_app(engine: Engine, store: Store, services: Services | None = None) -> FastAPI:
    """/healthz, /readyz and /metrics for `engine`, and with `services` (their tokens) the admin
    API and POST /v1/fx; the lifespan opens the store, then starts the engine, and on the way out
    stops it (giving the leader lease up) before closing the store."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await store.open()
            stack.push_async_callback(store.close)
            await engine.start()
            stack.push_async_callback(engine.stop)
            yield

    async def healthz(request: Request) -> JSONResponse:
        """Liveness: the process answers HTTP."""
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 when Redis answers, 503 when it does not; the engine's status and
        whether it leads or stands by either way."""
        answered = await ping_seconds(store, STORE_PING_TIMEOUT_SECONDS) is not None
        body: dict[str, Any] = {
            "status": "ready" if answered else "unavailable",
            "role": ROLES.get(engine.state, engine.state),
            "store": {"backend": store.name, "ok": answered},
            "engine": jsonable_encoder(engine.status()),
        }
        if answered:
            return JSONResponse(body)
        if engine.state == "running":
            # Still computing, and publishing from memory once the store is back.
            body["status"] = "degraded"
        return JSONResponse(
            {"detail": f"state store {store.name!r} does not answer", **body}, status_code=503
        )

    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this engine process (docs/metrics.md)."""
        return Response(await render_metrics(engine=engine, store=store), media_type=CONTENT_TYPE)

    redaction.install()  # as the API process: nothing secret in the server's logs
    # No schema pages: this port is for operators and their tools (docs/operations.md).
    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_route("/healthz", healthz)
    app.add_route("/readyz", readyz)
    app.add_route("/metrics", metrics)
    if services is not None:
        app.state.services = services
        install_error_handlers(app)
        app.include_router(admin.router)
        app.include_router(fx.router)
    return app
