"""The operations port of an engine process: liveness, readiness and metrics, no public API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi.encoders import jsonable_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import redaction
from app.metrics import render_metrics
from streaming.engine import Engine
from streaming.metrics import CONTENT_TYPE
from streaming.store.base import Store

STORE_PING_TIMEOUT_SECONDS = 2.0
ROLES = {"running": "leader", "standby": "standby"}  # engine state -> what an operator calls it


def create_ops_app(engine: Engine, store: Store) -> Starlette:
    """/healthz and /readyz for `engine`; the lifespan opens the store, then starts the engine,
    and on the way out stops it (giving the leader lease up) before closing the store."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
        try:
            answered = await asyncio.wait_for(store.ping(), STORE_PING_TIMEOUT_SECONDS)
        except Exception:
            answered = False
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
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
