"""`index-ticker admin ...` against a real uvicorn serving a real engine."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from serving import TOKEN, RunningServer, api_definition, make_app, running

from streaming.admin_client import main
from streaming.engine import Engine
from streaming.store.memory import MemoryStore

ADMIN_TOKEN = "admin-token-not-the-ingest-one"
GRID = float(int(time.time())) - 600
NEW_CSV = (
    "secids,issuer,issue_size_index,waprice\n"
    "AAAA,Alpha,2000,100\n"
    "BBBB,Beta,2000,50\n"
    "CCCC,Gamma,500,400\n"
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")

Served = tuple[RunningServer, Engine]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INDEX_TICKER_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("INDEX_TICKER_INGEST_TOKEN", TOKEN)
    yield


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store = MemoryStore()
    engine = Engine(api_definition(), store, cadence=1, grid=False)
    async with running(make_app(store, engine, admin_token=ADMIN_TOKEN)) as server:
        yield server, engine


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    path = tmp_path / "review.csv"
    path.write_text(NEW_CSV, encoding="utf-8")
    return path


async def run(*argv: str) -> tuple[int, Any]:
    """Exit status and the JSON printed on stdout (None when nothing was printed)."""
    out = io.StringIO()
    status = await asyncio.to_thread(main, list(argv), out)
    text = out.getvalue()
    return status, json.loads(text) if text else None


@pytest.mark.system
async def test_schedule_base_then_bases_shows_it_and_the_next_step_applies_it(
    served: Served, base_file: Path
) -> None:
    server, engine = served
    status, scheduled = await run(
        "schedule-base",
        "--url",
        server.base_url,
        "--definition",
        "api-test",
        "--base",
        str(base_file),
        "--effective",
        "2000-01-03",
        "--reason",
        "extraordinary review",
        "--divisor",
        "IMOEX=4900",
        "--policy",
        "continuity",
    )
    assert status == 0
    assert scheduled["effective"] == "2000-01-02T21:00:00.000Z"
    assert scheduled["reason"] == "extraordinary review"
    assert scheduled["official_divisors"] == {"IMOEX": 4900.0}

    status, view = await run("bases", "--url", server.base_url + "/")
    assert status == 0
    [pending] = view["scheduled"]
    assert (pending["reason"], pending["policy"]) == ("extraordinary review", "continuity")

    await server.call(lambda: engine.publish(GRID))
    status, view = await run("bases", "--url", server.base_url)
    assert view["scheduled"] == []
    [applied] = view["applied"]
    assert applied["decisions"]["IMOEX"]["official_divisor"] == 4900.0
    assert applied["decisions"]["IMOEX"]["difference_ppm"] is not None
    assert view["current"]["api-test"]["secids"] == ["AAAA", "BBBB", "CCCC"]


@pytest.mark.system
async def test_fx_sends_a_rate_that_the_engine_uses(served: Served) -> None:
    server, engine = served
    status, result = await run("fx", "--url", server.base_url, "--rate", "95.5")
    assert status == 0
    [accepted] = result["accepted"]
    assert (accepted["rate"], accepted["source"], accepted["outcome"]) == (95.5, "api", "added")
    assert engine.fx_status().rate == 95.5


@pytest.mark.system
async def test_fx_with_a_rate_date_follows_the_cbr_rule(served: Served) -> None:
    server, engine = served
    status, result = await run(
        "fx",
        "--url",
        server.base_url,
        "--rate",
        "81.25",
        "--rate-date",
        "2026-11-21",
        "--published-at",
        "2026-11-20T11:00:00+03:00",
    )
    assert status == 0
    [accepted] = result["accepted"]
    assert accepted["source"] == "cbr:2026-11-21"
    assert accepted["effective_from"] == "2026-11-20T14:00:00.000Z"  # 17:00 Moscow time
    assert engine.fx_status().as_dict()["source"] == "cbr:2026-11-21"  # that moment has passed


@pytest.mark.system
async def test_a_refused_request_prints_the_server_answer_and_exits_2(
    served: Served, base_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, engine = served
    status, printed = await run(
        "schedule-base",
        "--url",
        server.base_url,
        "--definition",
        "SPX",
        "--base",
        str(base_file),
        "--effective",
        "2099-01-01",
    )
    assert (status, printed) == (2, None)
    error = capsys.readouterr().err
    assert "HTTP 404" in error
    assert "unknown index definition 'SPX'" in error
    assert engine.bases_view()["scheduled"] == []


@pytest.mark.system
async def test_a_bad_csv_is_reported_with_its_row_and_column(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = served
    bad = tmp_path / "bad.csv"
    bad.write_text("secids,issuer,issue_size_index,waprice\nAAAA,Alpha,x,100\n", encoding="utf-8")
    argv = ["--url", server.base_url, "--definition", "api-test", "--base", str(bad)]
    status, _ = await run("schedule-base", *argv, "--effective", "2099-01-01")
    assert status == 2
    error = capsys.readouterr().err
    assert "HTTP 422" in error
    assert '"row": 2' in error and '"column": "issue_size_index"' in error


@pytest.mark.system
async def test_a_refused_fx_update_exits_2(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    server, engine = served
    status, _ = await run(
        "fx", "--url", server.base_url, "--rate", "90", "--rate-date", "2026-11-21", "--time", "x"
    )
    assert status == 2
    assert "the FX update was refused" in capsys.readouterr().err
    assert engine.fx_status().as_dict()["source"] == "config"


@pytest.mark.system
async def test_the_wrong_token_is_refused(
    served: Served,
    base_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, engine = served
    # The ingest token in the admin variable: the scopes are separate.
    monkeypatch.setenv("INDEX_TICKER_ADMIN_TOKEN", TOKEN)
    argv = ["--url", server.base_url, "--definition", "api-test", "--base", str(base_file)]
    status, _ = await run("schedule-base", *argv, "--effective", "2099-01-01")
    assert status == 2
    error = capsys.readouterr().err
    assert "HTTP 403" in error
    assert TOKEN not in error  # never echo a token
    assert engine.bases_view()["scheduled"] == []


async def test_a_missing_token_is_named_before_anything_is_sent(
    base_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INDEX_TICKER_INGEST_TOKEN")
    status, _ = await run("fx", "--url", "http://127.0.0.1:9", "--rate", "90")
    assert status == 2
    assert "set INDEX_TICKER_INGEST_TOKEN" in capsys.readouterr().err


@pytest.mark.system
async def test_the_token_may_come_from_a_file(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, engine = served
    secret = tmp_path / "ingest-token"
    secret.write_text(TOKEN + "\n", encoding="utf-8")
    monkeypatch.delenv("INDEX_TICKER_INGEST_TOKEN")
    monkeypatch.setenv("INDEX_TICKER_INGEST_TOKEN_FILE", str(secret))
    status, _ = await run("fx", "--url", server.base_url, "--rate", "97")
    assert status == 0
    assert engine.fx_status().rate == 97.0


@pytest.mark.system
async def test_an_unreachable_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = await run("bases", "--url", f"http://127.0.0.1:{free_port()}")
    assert status == 2
    assert "GET http://127.0.0.1:" in capsys.readouterr().err


async def test_an_unreadable_base_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.csv"
    argv = ["--url", "http://127.0.0.1:9", "--definition", "IMOEX", "--base", str(missing)]
    status, _ = await run("schedule-base", *argv, "--effective", "2099-01-01")
    assert status == 2
    assert "nowhere.csv: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["schedule-base"], ["bases"], ["fx"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--help"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("usage: index-ticker admin")


@pytest.mark.parametrize(
    "argv",
    [
        ["fx", "--url", "http://x", "--rate", "-1"],
        ["fx", "--url", "http://x", "--rate", "abc"],
        ["schedule-base", "--url", "u", "--definition", "d", "--base", "b", "--effective", "e",
         "--divisor", "IMOEX"],
        ["schedule-base", "--url", "u", "--definition", "d", "--base", "b", "--effective", "e",
         "--divisor", "IMOEX=0"],
        ["schedule-base", "--url", "u", "--definition", "d", "--base", "b", "--effective", "e",
         "--policy", "other"],
        ["bases"],
        [],
    ],
    ids=["negative-rate", "rate-not-a-number", "divisor-no-value", "divisor-zero", "policy",
         "no-url", "no-command"],
)  # fmt: skip
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err
