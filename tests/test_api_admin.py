"""Base changes over HTTP under a real uvicorn: the admin scope, validation before scheduling,
a change applied at the next publication without a jump, and the bases view with and without an
engine in the process."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from serving import (
    AUTH,
    FX_RATE,
    REFERENCE,
    RUB_DIVISOR,
    SHARES,
    TOKEN,
    USD_DIVISOR,
    RunningServer,
    api_definition,
    close_to,
    http_client,
    make_app,
    running,
)

from app.services import Services
from streaming.engine import Engine
from streaming.errors import ConfigError
from streaming.methodology.review import DivisorPolicy
from streaming.methodology.schedule import iso_utc
from streaming.store.base import Store
from streaming.store.memory import MemoryStore
from streaming.store.redis import RedisStore

ADMIN_TOKEN = "admin-token-not-the-ingest-one"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
GRID = float(math.floor(time.time())) - 600  # a past grid instant: publications are explicit
DEFINITION = "api-test"

# The new base: AAAA's index shares doubled, CCCP out, DDDD in at a reference price of 300.
NEW_SHARES = {"AAAA": 2000.0, "BBBB": 2000.0, "CCCC": 500.0, "DDDD": 100.0}
NEW_CSV = (
    "# review of the test index\n"
    "secids,issuer,issue_size_index,waprice\n"
    "AAAA,Alpha,2000,100\n"
    "BBBB,Beta,2000,50\n"
    "CCCC,Gamma,500,400\n"
    "DDDD,Delta,100,300\n"
)

Served = tuple[RunningServer, Engine, httpx.AsyncClient]


def make_engine(store: Store, policy: DivisorPolicy = DivisorPolicy.OFFICIAL) -> Engine:
    """The test definition's engine, publishing only when told to."""
    return Engine(api_definition(), store, cadence=1, grid=False, divisor_policy=policy)


def admin_app(store: Store, engine: Engine | None, **settings: Any) -> Any:
    return make_app(store, engine, admin_token=ADMIN_TOKEN, **settings)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store = MemoryStore()
    engine = make_engine(store)
    async with (
        running(admin_app(store, engine, max_body_bytes=16 * 1024)) as server,
        http_client(server) as client,
    ):
        yield server, engine, client


def change(**fields: Any) -> dict[str, Any]:
    """A valid request body, with some fields replaced."""
    body: dict[str, Any] = {
        "definition": DEFINITION,
        "base_csv": NEW_CSV,
        "effective": "2099-12-18",
        "reason": "quarterly review",
    }
    body.update(fields)
    return body


def past(seconds: float = 3600.0) -> str:
    return iso_utc(datetime.now(UTC) - timedelta(seconds=seconds))


async def publish(server: RunningServer, engine: Engine, grid: float) -> dict[str, Any]:
    publications = await server.call(lambda: engine.publish(grid))
    return {p.code: p for p in publications}


# --- the admin scope ------------------------------------------------------------------


@pytest.mark.system
async def test_admin_endpoints_answer_503_without_an_admin_token() -> None:
    store = MemoryStore()
    async with (
        running(make_app(store, make_engine(store))) as server,
        http_client(server) as client,
    ):
        for headers in ({}, ADMIN, AUTH):
            response = await client.post("/v1/admin/bases", json=change(), headers=headers)
            assert response.status_code == 503
            assert response.json()["detail"] == "admin API disabled: set INDEX_TICKER_ADMIN_TOKEN"
        # Reading the bases needs no token at all.
        assert (await client.get("/v1/bases")).status_code == 200


@pytest.mark.system
async def test_the_ingest_token_does_not_open_admin_endpoints(served: Served) -> None:
    _, engine, client = served
    response = await client.post("/v1/admin/bases", json=change(), headers=AUTH)
    assert response.status_code == 403
    assert response.json()["detail"] == "invalid admin token"
    assert engine.bases_view()["scheduled"] == []


@pytest.mark.system
async def test_the_admin_token_does_not_open_ingest_endpoints(served: Served) -> None:
    _, engine, client = served
    ticks = await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 101}], headers=ADMIN)
    assert ticks.status_code == 403
    assert ticks.json()["detail"] == "invalid ingest token"
    fx = await client.post("/v1/fx", json={"rate": 99.0}, headers=ADMIN)
    assert fx.status_code == 403
    assert engine.stats.ticks_applied == 0
    assert engine.fx_status().rate == FX_RATE


@pytest.mark.system
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": ADMIN_TOKEN}, 401),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, 403),
    ],
    ids=["missing", "malformed", "wrong"],
)
async def test_admin_authentication(served: Served, headers: dict[str, str], status: int) -> None:
    _, engine, client = served
    response = await client.post("/v1/admin/bases", json=change(), headers=headers)
    assert response.status_code == status
    assert engine.bases_view()["scheduled"] == []


def test_an_admin_token_equal_to_the_ingest_token_is_refused() -> None:
    store = MemoryStore()
    with pytest.raises(ConfigError) as caught:
        Services(api_definition(), store, None, ingest_token=TOKEN, admin_token=TOKEN)
    assert caught.value.key == "admin_token"


# --- validation before scheduling -----------------------------------------------------


@pytest.mark.system
@pytest.mark.parametrize(
    ("csv_text", "row", "column", "reason"),
    [
        (
            "secids,issuer,issue_size_index,waprice\nAAAA,Alpha,2000,100\nBBBB,Beta,lots,50\n",
            3,
            "issue_size_index",
            "not a number: 'lots'",
        ),
        (
            "# provenance\nsecids,issuer,issue_size_index,waprice\nAAAA,Alpha,2000,100\n"
            "AAAA,Alpha,10,100\n",
            4,
            "secids",
            "duplicate secid 'AAAA' (first on row 3)",
        ),
        ("issuer,issue_size_index\nAlpha,2000\n", 1, "secids", "missing column (or 'ticker')"),
        (
            "secids,issuer,issue_size_index,waprice\nAAAA,Alpha,2000,-1\n",
            2,
            "waprice",
            "must be positive, got '-1'",
        ),
    ],
    ids=["not-a-number", "duplicate", "no-secids", "negative-price"],
)
async def test_a_bad_base_csv_is_422_naming_row_and_column(
    served: Served, csv_text: str, row: int, column: str, reason: str
) -> None:
    _, engine, client = served
    response = await client.post(
        "/v1/admin/bases", json=change(base_csv=csv_text, effective=past()), headers=ADMIN
    )
    assert response.status_code == 422
    body = response.json()
    assert (body["field"], body["row"], body["column"], body["reason"]) == (
        "base_csv",
        row,
        column,
        reason,
    )
    assert f"row {row}" in body["detail"]
    assert column in body["detail"]
    assert engine.bases_view()["scheduled"] == []


@pytest.mark.system
async def test_an_unknown_definition_is_404_naming_it(served: Served) -> None:
    _, engine, client = served
    response = await client.post("/v1/admin/bases", json=change(definition="SPX"), headers=ADMIN)
    assert response.status_code == 404
    body = response.json()
    assert "'SPX'" in body["detail"]
    assert body["definition"] == "SPX"
    assert body["known"] == [DEFINITION]
    assert engine.bases_view()["scheduled"] == []


@pytest.mark.system
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"official_divisors": {"SPX": 1.0}}, "official_divisors", "SPX"),
        ({"official_divisors": {"IMOEX": -4.0}}, "official_divisors.IMOEX", "positive"),
        ({"official_divisors": {"IMOEX": True}}, "official_divisors.IMOEX", "number"),
        (
            {"base_csv": "secids,issuer,issue_size_index\nAAAA,Alpha,2000\nNEWS,News,10\n"},
            "base",
            "NEWS",
        ),
        ({"divisor_policy": "whatever"}, "divisor_policy", "continuity"),
        ({"effective": "next friday"}, "effective", "YYYY-MM-DD"),
        ({"effective": "2026-02-30"}, "effective", "calendar date"),
        ({"reason": "  "}, "reason", "why"),
        ({"reason": None}, "reason", "string"),
        ({"definition": 7}, "definition", "string"),
        ({"extra": 1}, "extra", "not permitted"),
    ],
    ids=[
        "foreign-divisor",
        "negative-divisor",
        "boolean-divisor",
        "new-line-without-price",
        "policy",
        "effective-words",
        "effective-not-a-day",
        "blank-reason",
        "null-reason",
        "definition-type",
        "extra-field",
    ],
)
async def test_fields_the_engine_or_the_request_refuses_are_422(
    served: Served, fields: dict[str, Any], field: str, words: str
) -> None:
    _, engine, client = served
    response = await client.post("/v1/admin/bases", json=change(**fields), headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert words in response.json()["detail"]
    assert engine.bases_view()["scheduled"] == []


@pytest.mark.system
@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "empty"), (b"[1]", "JSON object, got list"), (b"{", "not valid JSON")],
    ids=["empty", "array", "broken"],
)
async def test_a_body_that_is_not_a_json_object_is_422(
    served: Served, content: bytes, words: str
) -> None:
    _, _, client = served
    response = await client.post("/v1/admin/bases", content=content, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert words in response.json()["detail"]


@pytest.mark.system
async def test_a_body_over_the_limit_is_413(served: Served) -> None:
    _, engine, client = served
    rows = "".join(f"L{n:05d},Issuer,10,1\n" for n in range(2000))
    big = change(base_csv="secids,issuer,issue_size_index,waprice\n" + rows)
    response = await client.post("/v1/admin/bases", json=big, headers=ADMIN)
    assert response.status_code == 413
    assert engine.bases_view()["scheduled"] == []


@pytest.mark.system
async def test_without_an_engine_scheduling_is_503() -> None:
    store = MemoryStore()
    async with (
        running(admin_app(store, None)) as server,
        http_client(server) as client,
    ):
        response = await client.post("/v1/admin/bases", json=change(), headers=ADMIN)
        assert response.status_code == 503
        assert "no engine" in response.json()["detail"]


@pytest.mark.system
async def test_the_same_moment_twice_is_422(served: Served) -> None:
    _, _, client = served
    first = await client.post("/v1/admin/bases", json=change(), headers=ADMIN)
    assert first.status_code == 202
    again = await client.post("/v1/admin/bases", json=change(reason="again"), headers=ADMIN)
    assert again.status_code == 422
    assert again.json()["field"] == "effective"


# --- scheduling and applying ----------------------------------------------------------


@pytest.mark.system
async def test_a_date_means_the_start_of_that_day_in_exchange_local_time(served: Served) -> None:
    _, _, client = served
    body = change(effective="2099-12-18", official_divisors={"IMOEX": 5000.0})
    response = await client.post("/v1/admin/bases", json=body, headers=ADMIN)
    assert response.status_code == 202
    scheduled = response.json()
    assert scheduled["effective"] == "2099-12-17T21:00:00.000Z"  # 00:00 Moscow time
    assert scheduled["effective_local"].startswith("2099-12-18T00:00:00")
    assert scheduled["base"]["secids"] == list(NEW_SHARES)
    view = (await client.get("/v1/bases")).json()
    assert [c["effective"] for c in view["scheduled"]] == ["2099-12-17T21:00:00.000Z"]
    assert view["scheduled"][0]["official_divisors"] == {"IMOEX": 5000.0}
    assert view["applied"] == []
    assert view["current"][DEFINITION]["secids"] == list(SHARES)


@pytest.mark.system
async def test_a_moment_with_an_offset_is_kept_as_that_moment(served: Served) -> None:
    _, _, client = served
    body = change(effective="2099-06-01T10:30:00+03:00")
    response = await client.post("/v1/admin/bases", json=body, headers=ADMIN)
    assert response.status_code == 202
    assert response.json()["effective"] == "2099-06-01T07:30:00.000Z"


@pytest.mark.system
async def test_a_past_change_applies_at_the_next_publication_without_a_jump() -> None:
    store = MemoryStore()
    engine = make_engine(store, DivisorPolicy.CONTINUITY)
    async with (
        running(admin_app(store, engine)) as server,
        http_client(server) as client,
    ):
        ticks = await client.post("/v1/ticks", json=[{"secid": "AAAA", "price": 110}], headers=AUTH)
        assert ticks.json()["accepted"] == 1
        before = await publish(server, engine, GRID)
        old_mc = 1000 * 110 + 2000 * 50 + 500 * 400 + 250 * 200  # 460 000 roubles
        new_mc = 2000 * 110 + 2000 * 50 + 500 * 400 + 100 * 300  # 550 000: DDDD at its waprice
        assert close_to(before["IMOEX"].value, old_mc / RUB_DIVISOR)

        computed = RUB_DIVISOR * new_mc / old_mc
        official = computed * (1 + 25e-6)  # the exchange's figure, 25 ppm above ours
        body = change(effective=past(), official_divisors={"IMOEX": official})
        response = await client.post("/v1/admin/bases", json=body, headers=ADMIN)
        assert response.status_code == 202
        view = (await client.get("/v1/bases")).json()
        assert len(view["scheduled"]) == 1
        assert view["scheduled"][0]["policy"] == "continuity"
        assert view["applied"] == []

        after = await publish(server, engine, GRID + 1)
        # Same prices, new base: the value does not move, the divisors do.
        assert close_to(after["IMOEX"].value, before["IMOEX"].value)
        assert close_to(after["RTSI"].value, before["RTSI"].value)
        assert close_to(after["IMOEX"].divisor, computed)
        assert close_to(after["RTSI"].divisor, USD_DIVISOR * new_mc / old_mc)
        assert close_to(after["IMOEX"].capitalization, new_mc)
        served_value = (await client.get("/v1/indices/IMOEX")).json()
        assert served_value["value"] == round(old_mc / RUB_DIVISOR, 2)
        assert close_to(served_value["divisor"], computed)

        view = (await client.get("/v1/bases")).json()
        assert view["scheduled"] == []
        [applied] = view["applied"]
        decision = applied["decisions"]["IMOEX"]
        assert decision["policy"] == "continuity"
        assert close_to(decision["computed_divisor"], computed)
        assert decision["official_divisor"] == official
        assert close_to(decision["adopted_divisor"], computed)
        assert math.isclose(decision["difference_ppm"], 25.0, abs_tol=1e-6)
        assert abs(decision["jump"]) < 1e-9
        assert applied["decisions"]["RTSI"]["official_divisor"] is None
        assert applied["decisions"]["RTSI"]["difference_ppm"] is None
        current = view["current"][DEFINITION]
        assert current["secids"] == list(NEW_SHARES)
        assert close_to(current["divisors"]["IMOEX"], computed)

        # The new line trades; the line that left does not count any more.
        ticks = await client.post(
            "/v1/ticks",
            json=[{"secid": "DDDD", "price": 330}, {"secid": "CCCP", "price": 1}],
            headers=AUTH,
        )
        assert ticks.status_code == 200
        later = await publish(server, engine, GRID + 2)
        expected = (new_mc + 100 * 30) / computed
        assert close_to(later["IMOEX"].value, expected)


@pytest.mark.system
async def test_the_official_policy_adopts_the_published_divisor() -> None:
    store = MemoryStore()
    engine = make_engine(store, DivisorPolicy.CONTINUITY)
    async with (
        running(admin_app(store, engine)) as server,
        http_client(server) as client,
    ):
        before = await publish(server, engine, GRID)
        body = change(
            effective=past(), official_divisors={"IMOEX": 5000.0}, divisor_policy="official"
        )
        assert (await client.post("/v1/admin/bases", json=body, headers=ADMIN)).status_code == 202
        after = await publish(server, engine, GRID + 1)
        new_mc = sum(
            NEW_SHARES[s] * REFERENCE.get(s, 300.0) for s in NEW_SHARES
        )  # reference prices throughout
        assert after["IMOEX"].divisor == 5000.0
        assert close_to(after["IMOEX"].value, new_mc / 5000.0)
        assert not close_to(after["IMOEX"].value, before["IMOEX"].value)
        [applied] = (await client.get("/v1/bases")).json()["applied"]
        assert applied["policy"] == "official"
        assert applied["decisions"]["IMOEX"]["adopted_divisor"] == 5000.0


async def test_an_api_only_process_shows_the_bases_from_the_saved_state(redis_url: str) -> None:
    engine_store = RedisStore(redis_url)
    engine = make_engine(engine_store, DivisorPolicy.CONTINUITY)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running(admin_app(engine_store, engine)))
        client = await stack.enter_async_context(http_client(server))
        applied_now = change(effective=past(), official_divisors={"IMOEX": 4400.0})
        assert (await client.post("/v1/admin/bases", json=applied_now, headers=ADMIN)).is_success
        await publish(server, engine, GRID)
        later = change(effective="2099-03-20", reason="next review")
        assert (await client.post("/v1/admin/bases", json=later, headers=ADMIN)).is_success
        await publish(server, engine, GRID + 1)  # saves the state with the pending change
        engine_view = (await client.get("/v1/bases")).json()

        api_store = RedisStore(redis_url)
        api_server = await stack.enter_async_context(running(admin_app(api_store, None)))
        api_client = await stack.enter_async_context(http_client(api_server))
        api_view = (await api_client.get("/v1/bases")).json()

    assert api_view == engine_view
    assert [c["reason"] for c in api_view["scheduled"]] == ["next review"]
    assert api_view["current"][DEFINITION]["secids"] == list(NEW_SHARES)
    [applied] = api_view["applied"]
    assert applied["decisions"]["IMOEX"]["official_divisor"] == 4400.0
    assert applied["decisions"]["IMOEX"]["difference_ppm"] is not None


@pytest.mark.system
async def test_an_api_only_process_on_a_fresh_store_shows_the_definition_bases() -> None:
    store = MemoryStore()
    async with running(admin_app(store, None)) as server, http_client(server) as client:
        view = (await client.get("/v1/bases")).json()
    assert view["scheduled"] == [] and view["applied"] == []
    current = view["current"][DEFINITION]
    assert current["secids"] == list(SHARES)
    assert current["divisors"] == {"IMOEX": RUB_DIVISOR, "RTSI": USD_DIVISOR}
    assert current["label"] == "definition file"


@pytest.mark.system
async def test_cancel_a_scheduled_change(served: Served) -> None:
    _, _, client = served
    scheduled = await client.post("/v1/admin/bases", json=change(), headers=ADMIN)
    assert scheduled.status_code == 202
    effective = scheduled.json()["effective"]
    assert len((await client.get("/v1/bases")).json()["scheduled"]) == 1
    url = f"/v1/admin/bases/{DEFINITION}/{effective}"
    assert (await client.delete(url, headers=AUTH)).status_code == 403  # ingest token
    cancelled = await client.delete(url, headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["cancelled"]["effective"] == effective
    assert (await client.get("/v1/bases")).json()["scheduled"] == []
    again = await client.delete(url, headers=ADMIN)
    assert again.status_code == 404 and "no base change" in again.json()["detail"]


@pytest.mark.system
async def test_rebalance_needs_a_weighting_rule(served: Served) -> None:
    _, _, client = served
    refused = await client.post(f"/v1/admin/rebalance/{DEFINITION}", headers=ADMIN)
    assert refused.status_code == 422 and refused.json()["field"] == "weighting"
    unknown = await client.post("/v1/admin/rebalance/NOPE", headers=ADMIN)
    assert unknown.status_code == 404
