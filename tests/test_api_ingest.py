"""POST /v1/ticks under a real uvicorn: authentication, validation, limits, effect on the index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from serving import (
    AUTH,
    TOKEN,
    RunningServer,
    api_definition,
    by_hand,
    close_to,
    http_client,
    make_app,
    make_engine,
    running,
)

from streaming.engine import Engine
from streaming.methodology.guard import PriceGuard
from streaming.store.memory import MemoryStore

pytestmark = pytest.mark.system  # real servers, processes or sockets

GRID = float(math.floor(time.time())) - 600
BODY_LIMIT = 64 * 1024  # bytes, small so that the limit is cheap to cross
TICK_LIMIT = 50

Served = tuple[RunningServer, Engine, httpx.AsyncClient]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store = MemoryStore()
    engine = make_engine(store)
    app = make_app(store, engine, max_body_bytes=BODY_LIMIT, max_ticks_per_request=TICK_LIMIT)
    async with (
        running(app) as server,
        http_client(server) as client,
    ):
        yield server, engine, client


async def value_after_publish(server: RunningServer, engine: Engine, code: str) -> float:
    publications = await server.call(lambda: engine.publish(GRID))
    return next(p.value for p in publications if p.code == code)


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [
        ({}, 401, "Bearer"),
        ({"Authorization": ""}, 401, "Bearer"),
        ({"Authorization": TOKEN}, 401, 'Bearer error="invalid_request"'),
        ({"Authorization": f"Basic {TOKEN}"}, 401, 'Bearer error="invalid_request"'),
        ({"Authorization": "Bearer"}, 401, 'Bearer error="invalid_request"'),
        ({"Authorization": "Bearer wrong-token"}, 403, None),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403, None),
        ({"Authorization": "Bearer жетон".encode()}, 403, None),
    ],
)
async def test_authentication(
    served: Served, headers: dict[str, str | bytes], status: int, challenge: str | None
) -> None:
    _, engine, client = served
    raw = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()]
    response = await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 999.0}], headers=raw)
    assert response.status_code == status
    assert response.headers.get("www-authenticate") == challenge
    assert response.json()["detail"]
    assert engine.stats.ticks_applied == 0


async def test_scheme_is_case_insensitive(served: Served) -> None:
    _, _, client = served
    headers = {"Authorization": f"bearer {TOKEN}"}
    response = await client.post("/v1/ticks", json=[], headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 0,
        "rejected": [],
        "held": [],
        "discarded": [],
        "queued": False,
    }


async def test_empty_configured_token_refuses_every_request() -> None:
    store = MemoryStore()
    async with (
        running(make_app(store, make_engine(store), token="")) as server,
        http_client(server) as client,
    ):
        response = await client.post("/v1/ticks", json=[], headers={"Authorization": "Bearer x"})
        assert response.status_code == 403
        assert "no ingest token" in response.json()["detail"]


async def test_mixed_batch_rejects_exactly_the_bad_ticks_and_applies_the_good_ones(
    served: Served,
) -> None:
    server, engine, client = served
    batch: list[object] = [
        {"secid": "AAAA", "price": 105.5},  # 0 good
        {"secid": "BBBB", "price": 0},  # 1 not positive
        {"secid": "BBBB", "price": -3.0},  # 2 negative
        {"secid": "CCCC", "price": "NaN"},  # 3 NaN string
        {"secid": "CCCC", "price": "inf"},  # 4 infinite
        {"secid": "CCCP", "price": "abc"},  # 5 not a number
        {"secid": "ZZZZ", "price": 10.0},  # 6 unknown secid
        {"secid": "", "price": 10.0},  # 7 empty secid
        {"price": 10.0},  # 8 secid missing
        {"secid": "BBBB"},  # 9 price missing
        {"secid": "CCCC", "price": 410.0, "time": "not-a-time"},  # 10 bad time
        {"secid": "BBBB", "price": 52.25, "time": "2026-03-02T07:00:00Z", "volume": 3},  # 11 good
        "AAAA 1.0",  # 12 not an object
        {"secid": "CCCP", "price": True},  # 13 boolean
        {"secid": "CCCP", "price": "195.5"},  # 14 good: a numeric string
        {"secid": "AAAA", "price": 1.0, "volume": -1},  # 15 negative volume
    ]
    response = await client.post("/v1/ticks", json=batch, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    rejected = {r["index"]: r["field"] for r in body["rejected"]}
    assert rejected == {
        1: "price",
        2: "price",
        3: "price",
        4: "price",
        5: "price",
        6: "secid",
        7: "secid",
        8: "secid",
        9: "price",
        10: "time",
        12: "tick",
        13: "price",
        15: "volume",
    }
    assert all(r["reason"].startswith(f"{r['field']}: ") for r in body["rejected"])
    assert "ZZZZ" in next(r["reason"] for r in body["rejected"] if r["index"] == 6)

    expected_imoex, expected_rtsi = by_hand({"AAAA": 105.5, "BBBB": 52.25, "CCCP": 195.5})
    publications = await server.call(lambda: engine.publish(GRID))
    values = {p.code: p.value for p in publications}
    assert close_to(values["IMOEX"], expected_imoex)
    assert close_to(values["RTSI"], expected_rtsi)
    served_value = (await client.get("/v1/indices/IMOEX")).json()
    assert served_value["value"] == round(expected_imoex, 2)


async def test_literal_nan_and_infinity_in_json_are_rejected(served: Served) -> None:
    server, engine, client = served
    body = b'[{"secid":"AAAA","price":NaN},{"secid":"AAAA","price":Infinity},' \
        b'{"secid":"BBBB","price":60}]'  # fmt: skip
    response = await client.post("/v1/ticks", content=body, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [
        (0, "price"),
        (1, "price"),
    ]
    assert close_to(await value_after_publish(server, engine, "IMOEX"), by_hand({"BBBB": 60})[0])


async def test_all_bad_batch_leaves_the_index_where_it_was(served: Served) -> None:
    server, engine, client = served
    batch = [{"secid": "AAAA", "price": -1}, {"secid": "NOPE", "price": 1}]
    response = await client.post("/v1/ticks", json=batch, headers=AUTH)
    assert response.json()["accepted"] == 0
    assert len(response.json()["rejected"]) == 2
    assert close_to(await value_after_publish(server, engine, "IMOEX"), 100.0)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"secid": "AAAA", "price": 1}', "must be a JSON array of ticks, got dict"),
        (b'"AAAA"', "must be a JSON array of ticks, got str"),
        (b"[{]", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe\xfa", "not"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
    ],
    ids=["object", "string", "broken", "empty", "not-utf8", "deep"],
)
async def test_body_that_is_not_a_json_array_is_422(
    served: Served, content: bytes, reason: str
) -> None:
    _, engine, client = served
    response = await client.post("/v1/ticks", content=content, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert reason in response.json()["detail"]
    assert engine.stats.ticks_applied == 0


async def test_body_over_the_limit_is_413(served: Served) -> None:
    _, engine, client = served
    tick = {"secid": "AAAA", "price": 101.0}
    oversized = json.dumps([tick] * (BODY_LIMIT // 20)).encode()
    assert len(oversized) > BODY_LIMIT
    response = await client.post("/v1/ticks", content=oversized, headers=AUTH)
    assert response.status_code == 413
    assert str(BODY_LIMIT) in response.json()["detail"]
    assert engine.stats.ticks_applied == 0


async def test_chunked_body_without_length_is_cut_off_while_reading(served: Served) -> None:
    _, engine, client = served

    async def body() -> AsyncIterator[bytes]:
        # One valid tick padded with 10 MiB of JSON whitespace, sent chunked with no length:
        # only counting while reading can refuse it (read whole, it would parse and apply).
        yield b'[{"secid":"AAAA","price":101.0}'
        padding = b" " * (64 * 1024)
        for _ in range(160):
            yield padding
        yield b"]"

    try:
        response = await client.post("/v1/ticks", content=body(), headers=AUTH)
    except httpx.TransportError:
        # The server answered 413 and closed while the rest was still being sent: a refusal too.
        pass
    else:
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert "request body exceeds" in response.json()["detail"]
    assert engine.stats.ticks_applied == 0
    # The connection pool recovers: the next request is served normally.
    ok = await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 101.0}], headers=AUTH)
    assert ok.json() == {
        "accepted": 1,
        "rejected": [],
        "held": [],
        "discarded": [],
        "queued": False,
    }


async def test_content_length_over_the_limit_is_refused_before_the_body_arrives(
    served: Served,
) -> None:
    server, _, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # Announces 10 MiB and sends none of it: the answer must come without waiting for it.
        head = (
            "POST /v1/ticks HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 413 ")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_too_many_ticks_in_one_request(served: Served) -> None:
    _, engine, client = served
    batch = [{"secid": "AAAA", "price": 100.0 + n} for n in range(TICK_LIMIT + 1)]
    response = await client.post("/v1/ticks", json=batch, headers=AUTH)
    assert response.status_code == 413
    assert f"the limit is {TICK_LIMIT}" in response.json()["detail"]
    assert engine.stats.ticks_applied == 0
    at_limit = await client.post("/v1/ticks", json=batch[:TICK_LIMIT], headers=AUTH)
    assert at_limit.json()["accepted"] == TICK_LIMIT


async def test_held_and_discarded_ticks_are_reported_at_their_body_positions() -> None:
    store = MemoryStore()
    guarded = Engine(
        api_definition(), store, cadence=1, grid=False, guard=PriceGuard(threshold=0.10)
    )
    async with running(make_app(store, guarded)) as server, http_client(server) as client:
        first = await client.post(
            "/v1/ticks",
            json=[
                {"secid": "AAAA", "price": -1},  # 0 refused
                {"secid": "AAAA", "price": 150},  # 1 50 % off the last price: held
                {"secid": "NOPE", "price": 1},  # 2 refused
                {"secid": "BBBB", "price": 51},  # 3 applied
            ],
            headers=AUTH,
        )
        body = first.json()
        assert body["accepted"] == 1
        assert [r["index"] for r in body["rejected"]] == [0, 2]
        assert [(h["index"], h["secid"]) for h in body["held"]] == [(1, "AAAA")]
        assert body["held"][0]["reason"]
        assert body["discarded"] == []

        # Back near the last price: the tick held by the earlier request is dropped; it has no
        # position in this body. Within one body, a held tick dropped later keeps its own.
        second = await client.post(
            "/v1/ticks",
            json=[
                {"secid": "BBBB", "price": 0},  # 0 refused
                {"secid": "AAAA", "price": 100.5},  # 1 applied, drops the held 150
                {"secid": "CCCC", "price": 600},  # 2 held
                {"secid": "CCCC", "price": 401},  # 3 applied, drops the held 600
            ],
            headers=AUTH,
        )
        body = second.json()
        assert body["accepted"] == 2
        assert [(h["index"], h["secid"]) for h in body["held"]] == [(2, "CCCC")]
        assert [(d["index"], d["secid"]) for d in body["discarded"]] == [
            (None, "AAAA"),
            (2, "CCCC"),
        ]
        publications = await server.call(lambda: guarded.publish(GRID))
        imoex = next(p for p in publications if p.code == "IMOEX")
        assert close_to(imoex.value, by_hand({"AAAA": 100.5, "BBBB": 51, "CCCC": 401})[0])
