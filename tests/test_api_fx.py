"""FX updates over HTTP under a real uvicorn: the ingest scope, the CBR rule's timing, a rate in
force at once reaching RTSI's next publication with its source, and the view without an engine."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from serving import (
    AUTH,
    FX_RATE,
    RUB_DIVISOR,
    USD_DIVISOR,
    RunningServer,
    api_definition,
    close_to,
    http_client,
    make_app,
    running,
)

from streaming.engine import Engine
from streaming.methodology.schedule import iso_utc
from streaming.store.base import Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

ADMIN_TOKEN = "admin-token-not-the-ingest-one"
REFERENCE_MC = 450_000.0  # roubles: the test base at its reference prices
# Friday 2026-11-20, 10:00 Moscow time: before the CBR's 17:00 switch.
MORNING = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
SWITCH = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # 17:00 Moscow time that day


@dataclass(slots=True)
class Clock:
    """Wall-clock time the test sets, epoch seconds."""

    now: float

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


Served = tuple[RunningServer, Engine, httpx.AsyncClient, Clock]


def make_engine(store: Store, clock: Clock | None = None) -> Engine:
    """The test definition's engine, publishing only when told to."""
    return Engine(api_definition(), store, cadence=1, grid=False, clock=clock or time.time)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store = MemoryStore()
    clock = Clock(MORNING.timestamp())
    engine = make_engine(store, clock)
    app = make_app(store, engine, admin_token=ADMIN_TOKEN, max_ticks_per_request=5)
    async with running(app) as server, http_client(server) as client:
        yield server, engine, client, clock


async def post_fx(client: httpx.AsyncClient, body: object) -> dict[str, Any]:
    response = await client.post("/v1/fx", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def rtsi_at(server: RunningServer, engine: Engine, moment: datetime) -> Any:
    publications = await server.call(lambda: engine.publish(moment.timestamp()))
    return next(p for p in publications if p.code == "RTSI")


async def test_a_cbr_rate_for_tomorrow_published_before_17_waits_for_the_switch(
    served: Served,
) -> None:
    server, engine, client, clock = served
    update = {"rate": 81.5, "rate_date": "2026-11-21", "published_at": "2026-11-20T09:30:00+03:00"}
    result = await post_fx(client, update)
    assert result["rejected"] == []
    [accepted] = result["accepted"]
    assert accepted["index"] == 0
    assert accepted["outcome"] == "added"
    assert accepted["source"] == "cbr:2026-11-21"
    assert accepted["effective_from"] == iso_utc(SWITCH)
    assert accepted["published_at"] == "2026-11-20T06:30:00.000Z"

    view = (await client.get("/v1/fx")).json()
    assert view["rule"] == "cbr"
    assert view["status"]["rate"] == FX_RATE  # the configured rate is still in force
    assert view["status"]["source"] == "config"
    assert view["status"]["next"]["source"] == "cbr:2026-11-21"
    assert view["status"]["next"]["effective_from"] == iso_utc(SWITCH)
    scheduled = [s for s in view["schedule"]["steps"] if s["source"] == "cbr:2026-11-21"]
    assert scheduled == [{k: v for k, v in accepted.items() if k not in ("index", "outcome")}]

    before = await rtsi_at(server, engine, MORNING + timedelta(seconds=1))
    assert before.fx_rate == FX_RATE
    assert before.fx_source == "config"

    clock.set(SWITCH + timedelta(seconds=1))
    view = (await client.get("/v1/fx")).json()
    assert view["status"]["rate"] == 81.5
    assert view["status"]["source"] == "cbr:2026-11-21"
    after = await rtsi_at(server, engine, SWITCH + timedelta(seconds=1))
    assert after.fx_rate == 81.5
    assert after.fx_source == "cbr:2026-11-21"
    assert after.fx_effective == iso_utc(SWITCH)
    assert close_to(after.value, REFERENCE_MC / (81.5 * USD_DIVISOR))


async def test_a_rate_in_force_now_reaches_the_next_rtsi_publication(served: Served) -> None:
    server, engine, client, _ = served
    result = await post_fx(client, {"rate": 95.5, "time": iso_utc(MORNING)})
    assert [a["outcome"] for a in result["accepted"]] == ["added"]
    assert result["accepted"][0]["source"] == "api"

    publications = await server.call(lambda: engine.publish(MORNING.timestamp() + 1))
    values = {p.code: p for p in publications}
    rtsi = values["RTSI"]
    assert close_to(rtsi.value, REFERENCE_MC / (95.5 * USD_DIVISOR))
    assert (rtsi.fx_rate, rtsi.fx_source, rtsi.fx_effective) == (95.5, "api", iso_utc(MORNING))
    assert close_to(values["IMOEX"].value, REFERENCE_MC / RUB_DIVISOR)  # roubles: unmoved
    assert values["IMOEX"].fx_source is None

    served_rtsi = (await client.get("/v1/indices/RTSI")).json()
    assert served_rtsi["fx_rate"] == 95.5
    assert served_rtsi["fx_source"] == "api"
    assert served_rtsi["fx_effective"] == iso_utc(MORNING)


async def test_an_update_without_a_time_takes_effect_on_receipt(served: Served) -> None:
    _, engine, client, _ = served
    result = await post_fx(client, {"rate": 96.25, "source": "desk"})
    [accepted] = result["accepted"]
    assert accepted["effective_from"] == iso_utc(MORNING)  # the engine's clock
    assert accepted["source"] == "desk"
    assert engine.fx_status().rate == 96.25


async def test_a_batch_refuses_exactly_the_bad_updates(served: Served) -> None:
    _, engine, client, _ = served
    batch: list[object] = [
        {"rate": 91.0, "time": "2026-11-20T06:00:00Z"},  # 0 good
        {"rate": -1},  # 1 not positive
        {"rate": 80, "colour": "red"},  # 2 unknown field
        "91.0",  # 3 not an object
        {"rate": 80, "rate_date": "2026-11-21", "time": "2026-11-20T06:00:00Z"},  # 4 both
    ]
    result = await post_fx(client, batch)
    assert [a["index"] for a in result["accepted"]] == [0]
    fields = {r["index"]: r["field"] for r in result["rejected"]}
    assert fields == {1: "rate", 2: "colour", 3: "fx", 4: "time"}
    assert all(r["reason"].startswith(f"{r['field']}: ") for r in result["rejected"])
    assert engine.fx_status().rate == 91.0


async def test_a_cbr_rate_dated_before_one_in_force_is_refused_as_superseded(
    served: Served,
) -> None:
    _, engine, client, _ = served
    newer = {"rate": 82.0, "rate_date": "2026-11-21", "published_at": "2026-11-19T12:00:00+03:00"}
    assert [a["outcome"] for a in (await post_fx(client, newer))["accepted"]] == ["added"]
    older = {"rate": 83.0, "rate_date": "2026-11-20", "published_at": "2026-11-20T09:00:00+03:00"}
    result = await post_fx(client, older)
    assert result["accepted"] == []
    [refused] = result["rejected"]
    assert (refused["index"], refused["field"]) == (0, "rate_date")
    assert refused["outcome"] == "superseded"
    assert refused["step"]["source"] == "cbr:2026-11-20"
    assert engine.fx_status().rate == 82.0


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"", 422, "empty"),
        (b"91.5", 422, "got float"),
        (b"{", 422, "not valid JSON"),
        (json.dumps([{"rate": n} for n in range(1, 7)]).encode(), 413, "6 FX updates"),
    ],
    ids=["empty", "number", "broken", "too-many"],
)
async def test_a_body_that_is_not_updates_is_refused_whole(
    served: Served, content: bytes, status: int, words: str
) -> None:
    _, engine, client, _ = served
    response = await client.post("/v1/fx", content=content, headers=AUTH)
    assert response.status_code == status
    assert response.json()["field"] == "body"
    assert words in response.json()["detail"]
    assert engine.fx_status().rate == FX_RATE


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 403),
        ({"Authorization": "Bearer not-the-token"}, 403),
    ],
    ids=["missing", "admin-token", "wrong"],
)
async def test_fx_needs_the_ingest_token(
    served: Served, headers: dict[str, str], status: int
) -> None:
    _, engine, client, _ = served
    response = await client.post("/v1/fx", json={"rate": 99.0}, headers=headers)
    assert response.status_code == status
    assert engine.fx_status().rate == FX_RATE
    # Reading needs no token.
    assert (await client.get("/v1/fx")).status_code == 200


async def test_an_api_only_process_refuses_updates_and_shows_the_saved_schedule(
    redis_url: str,
) -> None:
    engine_store = RedisStore(redis_url)
    engine = make_engine(engine_store)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running(make_app(engine_store, engine)))
        client = await stack.enter_async_context(http_client(server))
        now = datetime.now(UTC) - timedelta(seconds=5)
        await post_fx(client, {"rate": 95.5, "time": iso_utc(now)})
        await server.call(lambda: engine.publish(math.floor(time.time())))
        engine_view = (await client.get("/v1/fx")).json()

        api_store = RedisStore(redis_url)
        api_server = await stack.enter_async_context(running(make_app(api_store, None)))
        api_client = await stack.enter_async_context(http_client(api_server))
        refused = await api_client.post("/v1/fx", json={"rate": 1.0}, headers=AUTH)
        api_view = (await api_client.get("/v1/fx")).json()

    assert refused.status_code == 503
    assert api_view["schedule"]["steps"] == engine_view["schedule"]["steps"]
    assert api_view["rule"] == "cbr"
    status = api_view["status"]
    assert (status["rate"], status["source"], status["state"]) == (95.5, "api", "ok")
    assert status["effective_from"] == iso_utc(now)


async def test_an_api_only_process_on_a_fresh_store_has_no_fx() -> None:
    store = MemoryStore()
    async with running(make_app(store, None)) as server, http_client(server) as client:
        view = (await client.get("/v1/fx")).json()
    assert view["status"]["state"] == "missing"
    assert view["schedule"]["steps"] == []
