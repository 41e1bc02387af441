"""Structured logs: JSON lines with extra fields and tracebacks, one handler however often the
set-up runs, and a real uvicorn whose every line on stderr is JSON with no secret in it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import websockets.asyncio.client
from conftest import free_port
from websockets.exceptions import ConnectionClosed

from streaming.errors import ConfigError
from streaming.logs import JsonFormatter, configure_logging

ROOT = Path(__file__).resolve().parent.parent
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SERVER_START_TIMEOUT = 30.0  # seconds for the subprocess to import everything and listen


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON lines to a buffer (the root logger is left alone)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("index_ticker.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)


def lines_of(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_carries_time_level_logger_message_and_extra_fields(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    before = datetime.now(UTC)
    logger.info(
        "published %s seq %d",
        "IMOEX",
        42,
        extra={
            "code": "IMOEX",
            "seq": 42,
            "lag_seconds": 0.0125,
            "lines": ["SBER", "GAZP"],
            "nested": {"depth": {"ok": True}},
            "missing": float("nan"),
            "when": before,  # not JSON: written as text
            "level": "clashes with the line's own field",
        },
    )
    (line,) = lines_of(buffer)
    assert line["message"] == "published IMOEX seq 42"
    assert line["level"] == "INFO"
    assert line["logger"] == "index_ticker.test_logs"
    assert isinstance(line["time"], str) and TIME.fullmatch(line["time"])
    moment = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert abs((moment - before).total_seconds()) < 60
    assert line["code"] == "IMOEX" and line["seq"] == 42 and line["lag_seconds"] == 0.0125
    assert line["lines"] == ["SBER", "GAZP"]
    assert line["nested"] == {"depth": {"ok": True}}
    assert line["missing"] == "nan"
    assert line["when"] == str(before)
    assert line["level_"] == "clashes with the line's own field"
    assert "exception" not in line


def test_a_json_line_carries_the_formatted_exception(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = json_log
    try:
        {}["SBER"]
    except KeyError:
        logger.exception("lookup failed", extra={"secid": "SBER"})
    logger.warning("a line\nover two lines")
    failed, multiline = lines_of(buffer)
    assert failed["level"] == "ERROR" and failed["secid"] == "SBER"
    exception = failed["exception"]
    assert isinstance(exception, str)
    assert exception.startswith("Traceback (most recent call last):")
    assert exception.rstrip().endswith("KeyError: 'SBER'")
    assert multiline["message"] == "a line\nover two lines"  # one JSON line all the same
    assert buffer.getvalue().count("\n") == 2


def test_the_time_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.created = datetime(2024, 3, 1, 7, 0, 0, 125_999, tzinfo=UTC).timestamp()
    assert json.loads(JsonFormatter().format(record))["time"] == "2024-03-01T07:00:00.125Z"


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as fmt:
        configure_logging("info", "xml")
    assert fmt.value.key == "log_format" and "text, json" in str(fmt.value)
    with pytest.raises(ConfigError) as level:
        configure_logging("loud", "json")
    assert level.value.key == "log_level" and "'loud'" in str(level.value)


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.system
def test_configure_logging_twice_writes_each_line_once_to_stderr() -> None:
    done = run_python(
        "import logging\n"
        "from streaming.logs import configure_logging\n"
        "configure_logging('debug', 'text')\n"
        "configure_logging('info', 'json')\n"
        "configure_logging('info', 'json')\n"
        "logging.getLogger('index_ticker').debug('hidden at info')\n"
        "logging.getLogger('index_ticker').info('once', extra={'code': 'RTSI'})\n"
        "logging.getLogger('uvicorn.error').warning('server line')\n"
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("index_ticker", "once"),
        ("uvicorn.error", "server line"),
    ]
    assert lines[0]["code"] == "RTSI"
    assert done.stdout == ""


@pytest.mark.system
def test_the_text_format_is_the_plain_one() -> None:
    done = run_python(
        "import logging\n"
        "from streaming.logs import configure_logging\n"
        "configure_logging('warning', 'text')\n"
        "logging.getLogger('index_ticker').info('hidden')\n"
        "logging.getLogger('index_ticker').warning('shown %d', 1)\n"
    )
    (line,) = done.stderr.splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING index_ticker: shown 1", line)


API_KEY = "k3y-that-must-never-be-logged"
OTHER_KEY = "another-k3y-never-logged"

SERVER = """
import logging, sys
sys.path.insert(0, "tests")
from streaming.logs import configure_logging
configure_logging("info", "json")
import uvicorn
from serving import TOKEN, make_app, make_engine
from app.access import Access
from app.ws import FeedProtocol
from streaming.store.memory import MemoryStore

store = MemoryStore()
app = make_app(store, make_engine(store), access=Access([{key!r}]))
logging.getLogger("index_ticker").info("serving", extra={{"port": {port}}})
uvicorn.run(
    app, host="127.0.0.1", port={port}, log_config=None, log_level="info", ws=FeedProtocol
)
"""


@pytest.mark.system
async def test_a_served_process_writes_only_json_lines_and_no_secret(tmp_path: Path) -> None:
    from serving import TOKEN

    port = free_port()
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER.format(key=API_KEY, port=port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while True:
                assert process.poll() is None, stderr_path.read_text()
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.1)
            assert (await client.get(f"/healthz?api_key={API_KEY}")).status_code == 200
            missing = await client.get(f"/v1/indices/NOPE?token={TOKEN}&x=1")
            assert missing.status_code == 404
            posted = await client.post(
                "/v1/ticks",
                json=[{"secid": "AAAA", "price": 101}],
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert posted.status_code == 200
        url = f"ws://127.0.0.1:{port}/v1/ws"
        async with websockets.asyncio.client.connect(f"{url}?api_key={API_KEY}", proxy=None) as ws:
            await ws.send(json.dumps({"op": "ping"}))
            await ws.recv()
        async with websockets.asyncio.client.connect(
            f"{url}?api_key={OTHER_KEY}", proxy=None
        ) as refused:
            with pytest.raises(ConnectionClosed) as closed:
                await refused.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
    finally:
        process.terminate()  # the server we started, by its own handle
        process.wait(30)
    text = stderr_path.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]

    for secret in (API_KEY, OTHER_KEY, TOKEN):
        assert secret not in text
    assert all(TIME.fullmatch(str(line["time"])) for line in lines)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert not any("color_message" in line for line in lines)
    serving = [line for line in lines if line["message"] == "serving"]
    assert serving and serving[0]["port"] == port
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    keyed = [line for line in access if str(line["path"]).startswith("/healthz?")]
    assert keyed == [
        {
            **keyed[0],
            "method": "GET",
            "path": "/healthz?api_key=[redacted]",
            "status": 200,
            "http_version": "1.1",
        }
    ]
    assert str(keyed[0]["client"]).startswith("127.0.0.1:")
    (missing_line,) = [line for line in access if str(line["path"]).startswith("/v1/indices/")]
    assert missing_line["path"] == "/v1/indices/NOPE?token=[redacted]&x=1"
    assert missing_line["status"] == 404
    assert any(line["method"] == "POST" and line["status"] == 200 for line in access)
