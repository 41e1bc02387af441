"""`index-ticker engine`: the engine alone, Redis required, the ingest stream and the lease always
on, an operations port with liveness and readiness, and SIGTERM giving the lease up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import free_port, redis_url_for, start_redis, stop_redis

SETTINGS = {"INDEX_TICKER_CADENCE": "1", "INDEX_TICKER_FEED": "none"}


def engine_command(
    *flags: str, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[str]:
    """`index-ticker engine` with the given flags and INDEX_TICKER_* variables (no others); its
    output to `log`, or a pipe for one that is to stop at once."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_TICKER_")}
    with log.open("w") if log else contextlib.nullcontext(subprocess.PIPE) as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", "engine", *flags],
            env={**base, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )


def refused(*flags: str, env: Mapping[str, str] | None = None) -> str:
    """Run an engine that must refuse to start: exit status 2; its error message."""
    process = engine_command(*flags, env=env)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    return stderr


def ops(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False)


def wait_for(check: Any, what: str, process: subprocess.Popen[str], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"the engine exited: {process.stderr and process.stderr.read()}"
        )
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def stopped(process: subprocess.Popen[str]) -> int:
    """SIGTERM, then the exit status (uvicorn raises the signal again after a clean stop)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise


@pytest.fixture
def engine_on(redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """An engine on the session Redis, its output to a file (a pipe nobody reads could fill and
    stall it); (process, operations port)."""
    port = free_port()
    process = engine_command(
        "--redis-url",
        redis_url,
        "--ops-port",
        str(port),
        "--namespace",
        "engine-test",
        env=SETTINGS,
        log=tmp_path / "engine.log",
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            stopped(process)


@pytest.mark.system
def test_an_engine_without_redis_is_refused_naming_redis_url() -> None:
    stderr = refused(env=SETTINGS)
    assert "redis_url" in stderr and "INDEX_TICKER_REDIS_URL" in stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("INDEX_TICKER_LEADER_LEASE", "false"), ("INDEX_TICKER_INGEST_STREAM", "no")],
)
def test_the_stream_and_the_lease_cannot_be_turned_off(
    redis_url: str, variable: str, value: str
) -> None:
    stderr = refused("--redis-url", redis_url, env={**SETTINGS, variable: value})
    assert f"{variable}: is always on in an engine process" in stderr


def test_a_mistyped_variable_stops_the_engine(redis_url: str) -> None:
    stderr = refused(
        "--redis-url", redis_url, env={**SETTINGS, "INDEX_TICKER_CADENCE_SECONDS": "5"}
    )
    assert "INDEX_TICKER_CADENCE_SECONDS: unknown variable" in stderr


def test_the_operations_port_leads_and_serves_no_public_api(
    engine_on: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = engine_on

    def leading() -> dict[str, Any] | None:
        body: dict[str, Any] = ops(port, "/readyz").json()
        return body if body["role"] == "leader" and body["engine"]["publications"] else None

    ready = wait_for(leading, "the engine leads and publishes", process)
    assert ops(port, "/healthz").json() == {"status": "ok"}
    assert ready["status"] == "ready" and ready["store"] == {"backend": "redis", "ok": True}
    # Always on in an engine: the durable stream and the lease.
    assert ready["engine"]["leader"] is True and ready["engine"]["stream_id"] is not None
    assert ready["engine"]["cadence_seconds"] == 1  # from INDEX_TICKER_CADENCE
    for path in ("/", "/v1/indices", "/v1/indices/IMOEX", "/docs"):
        assert ops(port, path).status_code == 404, path


def test_sigterm_gives_the_lease_up_at_once(
    redis_url: str, engine_on: tuple[subprocess.Popen[str], int]
) -> None:
    process, port = engine_on
    wait_for(lambda: ops(port, "/readyz").json()["role"] == "leader", "the engine leads", process)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get("engine-test:leader") is not None
        assert stopped(process) in (0, -signal.SIGTERM)
        # Deleted on the way out rather than left to expire: a standby can take it now.
        assert client.get("engine-test:leader") is None
    finally:
        client.close()


@pytest.mark.system
def test_readiness_follows_redis(tmp_path: Path) -> None:
    redis_port, port = free_port(), free_port()
    server = start_redis(redis_port, tmp_path)
    process = engine_command(
        "--redis-url", redis_url_for(redis_port), "--ops-port", str(port),
        env=SETTINGS, log=tmp_path / "engine.log",
    )  # fmt: skip
    try:
        wait_for(lambda: ops(port, "/readyz").status_code == 200, "the engine is ready", process)
        stop_redis(server)
        gone = wait_for(
            lambda: (r := ops(port, "/readyz")).status_code == 503 and r.json(),
            "readiness notices Redis is gone",
            process,
        )
        assert gone["store"]["ok"] is False and "does not answer" in gone["detail"]
        assert gone["status"] == "degraded"  # still computing from memory, as the leader
        assert ops(port, "/healthz").status_code == 200  # alive all the same
    finally:
        stop_redis(server)
        if process.poll() is None:
            stopped(process)


def test_metrics_and_json_logs_of_an_engine_reading_the_tick_stream(
    redis_url: str, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    log = tmp_path / "engine.log"
    process = engine_command(
        "--redis-url", redis_url, "--ops-port", str(port), "--namespace", "engine-metrics",
        "--log-format", "json", env=SETTINGS, log=log,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: ops(port, "/readyz").json()["role"] == "leader", "it leads", process)
        # A feed handler on another machine: two good trades and a bad one.
        client.xadd("engine-metrics:ticks", {"secid": "SBER", "price": "250.5"})
        client.xadd("engine-metrics:ticks", {"secid": "SBER", "price": "-1"})
        client.xadd("engine-metrics:ticks", {"secid": "GAZP", "price": "150.25"})

        def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            answer = ops(port, "/metrics")
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(answer.text)
                for s in family.samples
            }
            done = samples.get(("index_ticker_stream_ticks_read_total", ()), 0) == 2
            return (
                samples
                if done and samples[("index_ticker_engine_publications_total", ())]
                else None
            )

        samples = wait_for(scraped, "the stream's ticks counted", process)
        assert samples[("index_ticker_engine_ticks_applied_total", ())] == 2
        rejected = (("field", "price"), ("source", "stream"))
        assert samples[("index_ticker_ticks_rejected_total", rejected)] == 1
        assert samples[("index_ticker_engine_leader", ())] == 1
        assert samples[("index_ticker_engine_publication_lag_seconds_count", ())] >= 1
        assert samples[("index_ticker_store_command_seconds_count", (("command", "commit"),))] >= 1
        assert samples[("index_ticker_stream_read_entries_count", ())] >= 1
    finally:
        client.close()
        stopped(process)
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Every log line is one JSON object (the start-up banner is printed, not logged).
    assert len(records) == len([line for line in lines if not line.startswith("index-ticker")])
    assert any(
        r["logger"] == "streaming.stream_reader" and "refused 1 tick(s)" in r["message"]
        for r in records
    )
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
