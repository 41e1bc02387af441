"""The security limits: the ingest rate limit per token, CORS off unless configured, tokens
compared in constant time and never logged (nor API keys, wherever a client puts them),
separate ingest and admin scopes end to end, a non-root container, and secrets that come only
from the environment or files."""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from serving import AUTH, TOKEN, http_client, make_app, make_engine, running
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.ratelimit import RateLimiter, TokenBucket
from app.redaction import REDACTED, redact
from streaming import cli
from streaming.errors import ConfigError
from streaming.serve import assemble, make_services
from streaming.settings import Settings, load_settings_file
from streaming.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
TICK = [{"secid": "AAAA", "price": 101.0}]
FX = {"rate": 91.5}


@pytest.fixture
def no_secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment without any of the service's variables (tokens, keys)."""
    for name in list(os.environ):
        if name.startswith("INDEX_TICKER_"):
            monkeypatch.delenv(name)


class Clock:
    """A clock the test moves by hand (monotonic seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the rate limit ---------------------------------------------------------------------------


def test_a_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)  # one request comes back every 1/rate s
    assert bucket.take(0.05) == pytest.approx(0.05)  # refused requests take nothing
    assert bucket.take(0.1) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at burst
    assert bucket.take(50.0) == 0.0 and bucket.tokens == pytest.approx(1.0)  # no refill backwards


def test_buckets_are_per_token_and_their_number_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 2, max_callers=3, clock=clock)
    assert [limiter.wait_for("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.wait_for("b") == 0.0  # another token has a bucket of its own
    clock.now += 0.5
    assert limiter.wait_for("c") == 0.0
    clock.now += 0.6
    # A fourth token: the table is full, and b's bucket has refilled, so b is the one forgotten;
    # a, still short of requests, keeps its state.
    assert limiter.wait_for("d") == 0.0 and len(limiter) == 3
    assert limiter.wait_for("a") == 0.0
    assert limiter.wait_for("a") == pytest.approx(0.9)
    for n in range(1000):
        limiter.wait_for(f"stranger-{n}")
        assert len(limiter) <= 3


def test_a_rate_of_zero_is_no_limit_and_bad_limits_are_refused() -> None:
    limiter = RateLimiter(0, 1)
    assert not limiter.enabled
    assert all(limiter.wait_for("t") == 0.0 for _ in range(10_000)) and len(limiter) == 0
    for rate, burst, key in [
        (-1, 1, "ingest_rate_per_second"),
        (float("nan"), 1, "ingest_rate_per_second"),
        (1, 0, "ingest_burst"),
        (1, True, "ingest_burst"),
    ]:
        with pytest.raises(ConfigError) as caught:
            RateLimiter(rate, burst)
        assert caught.value.key == key


@pytest.mark.system
async def test_ingest_over_the_rate_is_429_with_retry_after_and_fx_shares_the_bucket() -> None:
    store = MemoryStore()
    # One request per 1000 s: whatever the machine's pace, the third request finds none left.
    limiter = RateLimiter(0.001, 2)
    app = make_app(store, make_engine(store), ingest_limit=limiter)
    async with running(app) as server, http_client(server) as client:
        wrong = {"Authorization": "Bearer not-the-ingest-token-at-all"}
        for _ in range(5):  # refused before the limit: strangers spend nothing
            assert (await client.post("/v1/ticks", json=TICK, headers=wrong)).status_code == 403
        assert (await client.post("/v1/ticks", json=TICK, headers=AUTH)).status_code == 200
        assert (await client.post("/v1/fx", json=FX, headers=AUTH)).status_code == 200
        for path, body in (("/v1/ticks", TICK), ("/v1/fx", FX)):
            refused = await client.post(path, json=body, headers=AUTH)
            assert refused.status_code == 429, refused.text
            retry_after = int(refused.headers["Retry-After"])
            assert 900 <= retry_after <= 1000
            answer = refused.json()
            assert answer["retry_after"] == retry_after
            assert (answer["limit"], answer["burst"]) == (0.001, 2)
            assert answer["detail"].startswith("rate limit: at most 0.001 requests per second")
        assert limiter.refused == 2
        # Reading is never limited.
        assert (await client.get("/v1/indices")).status_code == 200


@pytest.mark.usefixtures("no_secrets_set")
def test_the_rate_limit_settings_reach_the_service(tmp_path: Path) -> None:
    assert (Settings().ingest_rate_per_second, Settings().ingest_burst) == (200.0, 400)
    config = tmp_path / "limits.toml"
    config.write_text('feed = "none"\ningest_rate_per_second = 5\ningest_burst = 7\n')
    settings = load_settings_file(config)
    services = make_services(settings, assemble(settings))
    assert (services.ingest_limit.rate, services.ingest_limit.burst) == (5.0, 7)
    for content, key in [
        ("ingest_rate_per_second = -1\n", "ingest_rate_per_second"),
        ("ingest_rate_per_second = nan\n", "ingest_rate_per_second"),
        ("ingest_burst = 0\n", "ingest_burst"),
        ("ingest_burst = 1.5\n", "ingest_burst"),
    ]:
        config.write_text(content)
        with pytest.raises(ConfigError) as caught:
            load_settings_file(config)
        assert caught.value.key == key


# --- CORS -------------------------------------------------------------------------------------

DESK = "https://desk.example"


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.system
async def test_without_cors_origins_no_response_carries_a_cors_header() -> None:
    store = MemoryStore()
    async with running(make_app(store, None)) as server, http_client(server) as client:
        plain = await client.get("/v1/indices", headers={"Origin": DESK})
        assert plain.status_code == 200 and cors_headers(plain) == {}
        preflight = await client.options(
            "/v1/ticks",
            headers={
                "Origin": DESK,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 405 and cors_headers(preflight) == {}


@pytest.mark.system
async def test_configured_origins_and_only_those_get_cors_headers() -> None:
    store = MemoryStore()
    app = make_app(store, make_engine(store), cors_origins=(DESK,))
    async with running(app) as server, http_client(server) as client:
        allowed = await client.get("/v1/indices", headers={"Origin": DESK})
        assert allowed.headers["access-control-allow-origin"] == DESK
        assert "access-control-allow-credentials" not in allowed.headers
        preflight = await client.options(
            "/v1/ticks",
            headers={
                "Origin": DESK,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        posted = await client.post("/v1/ticks", json=TICK, headers={**AUTH, "Origin": DESK})
        assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == DESK

        other = await client.get("/v1/indices", headers={"Origin": "https://elsewhere.example"})
        # No allow-origin: the browser keeps the answer from the page of another origin.
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        refused = await client.options(
            "/v1/ticks",
            headers={
                "Origin": "https://elsewhere.example",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.usefixtures("no_secrets_set")
def test_cors_origins_come_from_the_settings_file_and_are_checked(tmp_path: Path) -> None:
    assert Settings().cors_origins == ()
    config = tmp_path / "cors.toml"
    config.write_text(f'feed = "none"\ncors_origins = ["{DESK}", "http://127.0.0.1:8080"]\n')
    settings = load_settings_file(config)
    assert settings.cors_origins == (DESK, "http://127.0.0.1:8080")
    assert make_services(settings, assemble(settings)).cors_origins == settings.cors_origins
    for content in (
        'cors_origins = "https://desk.example"\n',  # a string, not a list
        f'cors_origins = ["{DESK}/"]\n',  # a browser never sends the slash
        'cors_origins = ["desk.example"]\n',
        "cors_origins = [7]\n",
    ):
        config.write_text(content)
        with pytest.raises(ConfigError) as caught:
            load_settings_file(config)
        assert caught.value.key == "cors_origins", content


# --- constant-time comparison -----------------------------------------------------------------

SECRET_NAME = re.compile(r"token|api_?key|secret|password", re.IGNORECASE)
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
# Equality tests in app/ between two values with a secret-looking name that are not a request's
# credential against the expected one, and why each is safe.
ALLOWED_COMPARISONS = {
    # At start-up, between two configured values: no request is answered by it.
    ("services.py", "self.admin_token == self.ingest_token"),
}


def _names(node: ast.AST) -> set[str]:
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.Attribute):
            names.add(child.attr)
    return names


def _secret_comparisons(tree: ast.AST) -> Iterator[str]:
    """`a == b`, `a in b`... where one side names a secret and neither is a literal (a literal
    tells nothing about the secret: `scheme == "bearer"`, `" " in token`)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            if not isinstance(op, EQUALITY):
                continue
            if isinstance(left, ast.Constant) or isinstance(right, ast.Constant):
                continue
            if any(SECRET_NAME.search(name) for name in _names(left) | _names(right)):
                yield ast.unparse(node)


def test_every_credential_comparison_is_constant_time() -> None:
    compared: set[tuple[str, str]] = set()
    digest_calls = []
    for path in sorted((ROOT / "app").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        compared |= {(path.name, text) for text in _secret_comparisons(tree)}
        digest_calls += [
            (path.name, ast.unparse(node))
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "hmac.compare_digest"
        ]
    # Bearer tokens go through hmac.compare_digest and nothing else. API keys are looked up by
    # their SHA-256 digest (app/access.py), whose timing tells nothing usable about the key.
    assert compared == ALLOWED_COMPARISONS
    assert [(name, "expected_token" in call) for name, call in digest_calls] == [("auth.py", True)]
    access = (ROOT / "app" / "access.py").read_text(encoding="utf-8")
    assert "digest in self._digests" in access and "key in self" not in access


# --- the container ----------------------------------------------------------------------------


def test_the_container_runs_as_a_user_that_is_not_root() -> None:
    instructions: list[tuple[str, str]] = []
    logical = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        logical += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if logical.strip():
                word, _, rest = logical.strip().partition(" ")
                instructions.append((word.upper(), rest.strip()))
            logical = ""
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final = instructions[last_from:]
    users = [(i, rest) for i, (word, rest) in enumerate(final) if word == "USER"]
    assert users, "the image has no USER: it would run as root"
    position, user = users[-1]
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    # Nothing after the USER line runs as root, and the process starts after it.
    starts = [i for i, (word, _) in enumerate(final) if word in ("ENTRYPOINT", "CMD")]
    assert starts and min(starts) > position
    assert all(word != "RUN" for word, _ in final[position:])
    # The user is created in the image with a uid that is not 0.
    created = " ".join(rest for word, rest in final[:position] if word == "RUN")
    words = shlex.split(created.replace("&&", " && "))
    assert "useradd" in words and name in words
    uid = words[words.index("--uid") + 1] if "--uid" in words else None
    assert uid is None or int(uid) != 0


# --- secrets only from the environment or files -----------------------------------------------


def test_no_setting_can_carry_a_secret(tmp_path: Path) -> None:
    for field in fields(Settings):
        if SECRET_NAME.search(field.name):
            assert field.type == "bool", f"{field.name} could carry a secret"
    config = tmp_path / "service.toml"
    for key in ("ingest_token", "admin_token", "api_keys", "token", "api_key"):
        config.write_text(f'{key} = "a-secret-in-a-file-0123456789"\n')
        with pytest.raises(ConfigError) as caught:
            load_settings_file(config)
        assert (caught.value.key, caught.value.reason) == (key, "unknown key")


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)


def test_no_command_line_flag_takes_a_secret() -> None:
    parsers = [cli.build_parser()]
    for module, _ in cli.DELEGATED.values():
        build = getattr(importlib.import_module(module), "build_parser", None)
        if build is not None:
            parsers.append(build())
    options = {option for parser in parsers for option in _options(parser)}
    assert "--config" in options and "--url" in options  # the walk reached the subcommands
    assert not [option for option in options if SECRET_NAME.search(option.replace("-", "_"))]
    for flag in ("--token", "--ingest-token", "--admin-token", "--api-key", "--api-keys"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["serve", flag, "a-secret-on-the-command-line"])


# --- logs and scopes of a served process ------------------------------------------------------

INGEST_TOKEN = "ingest-9f3c1e7a5b2d4c6e8a0b"
ADMIN_TOKEN = "admin-4d2b7e9c1a3f5e7d9b1c"
API_KEY = "desk-key-6b8d0f2a4c6e8b0d"
WRONG_TOKEN = "guessed-0a1b2c3d4e5f6a7b8c9d"
WRONG_KEY = "guessed-key-1f2e3d4c5b6a7980"
SECRETS = (INGEST_TOKEN, ADMIN_TOKEN, API_KEY, WRONG_TOKEN, WRONG_KEY)


@dataclass(frozen=True, slots=True)
class ServedProcess:
    """An `index-ticker serve` process: where it answers and where its output goes."""

    base_url: str
    ws_url: str
    output: Path
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def served_process(
    directory: Path, environment: dict[str, str], **settings: Any
) -> Iterator[ServedProcess]:
    """`index-ticker serve` with a settings file and these secrets in its environment, its
    stdout and stderr in a file; stopped (SIGTERM) when the block ends."""
    port = free_port()
    values = {"port": port, "feed": "none", "cadence": 1, **settings}
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    config = directory / "service.toml"
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_TICKER_")}
    env.update(environment)
    output = directory / "service.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", "serve", "--config", str(config)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1, trust_env=False).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, f"the service exited: {output.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the service did not start in 30 s"
            time.sleep(0.1)
        yield ServedProcess(base_url, f"ws://127.0.0.1:{port}/v1/ws", output, process)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


async def ws_outcome(url: str, **options: Any) -> str:
    """'pong' when the connection is admitted and answers, else the close code it got."""
    try:
        async with connect(url, proxy=None, open_timeout=10, **options) as ws:
            await ws.send('{"op": "ping"}')
            return str(json.loads(await ws.recv(decode=True))["type"])
    except ConnectionClosed as closed:
        return str(closed.rcvd.code if closed.rcvd else "no close frame")


@pytest.mark.system
async def test_tokens_and_keys_never_reach_the_log_and_scopes_stay_apart(tmp_path: Path) -> None:
    environment = {
        "INDEX_TICKER_INGEST_TOKEN": INGEST_TOKEN,
        "INDEX_TICKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "INDEX_TICKER_API_KEYS": API_KEY,
    }
    ingest = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    wrong = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    tick = [{"secid": "SBER", "price": 250.5}]
    base_change = {"definition": "IMOEX", "base_csv": "secids\n", "effective": "2030-01-01"}
    # Debug is the most talkative level there is: request lines, handshake headers, frames.
    with served_process(tmp_path, environment, log_level="debug") as served:
        async with httpx.AsyncClient(base_url=served.base_url, trust_env=False) as client:

            async def status(method: str, path: str, **request: Any) -> int:
                return (await client.request(method, path, **request)).status_code

            # Each token opens its own scope and no other (end to end, from the environment).
            assert await status("POST", "/v1/ticks", json=tick, headers=ingest) == 200
            assert await status("POST", "/v1/fx", json={"rate": 90.5}, headers=ingest) == 200
            assert await status("POST", "/v1/ticks", json=tick, headers=admin) == 403
            assert await status("POST", "/v1/fx", json={"rate": 90.5}, headers=admin) == 403
            assert await status("POST", "/v1/admin/bases", json=base_change, headers=ingest) == 403
            assert await status("POST", "/v1/admin/bases", json=base_change, headers=admin) == 422
            assert await status("DELETE", "/v1/admin/bases/IMOEX/2030-01-01", headers=ingest) == 403
            assert await status("POST", "/v1/ticks", json=tick, headers=wrong) == 403
            assert await status("POST", "/v1/admin/bases", json=base_change, headers=wrong) == 403
            # Secrets where they do not belong: in query strings.
            assert await status("GET", f"/v1/indices?api_key={API_KEY}&token={INGEST_TOKEN}") == 200
            assert await status("POST", f"/v1/ticks?token={WRONG_TOKEN}", json=tick) == 401

        # API keys in each place a feed client can put them, right and wrong.
        url = served.ws_url
        assert await ws_outcome(f"{url}?api_key={API_KEY}") == "pong"
        assert await ws_outcome(f"{url}?api_key={WRONG_KEY}") == "4003"
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        assert await ws_outcome(url, additional_headers=bearer) == "pong"
        protocols = ["index-ticker.v1", f"bearer.{API_KEY}"]
        assert await ws_outcome(url, subprotocols=protocols) == "pong"
        assert (
            await ws_outcome(url, additional_headers={"Authorization": f"Bearer {WRONG_KEY}"})
            == "4003"
        )
        assert await ws_outcome(url) == "4001"
    log = served.output.read_text(encoding="utf-8", errors="replace")
    # The log did record those requests, with their query strings, handshakes and headers...
    assert '"POST /v1/ticks HTTP/1.1" 403' in log
    assert "/v1/indices?api_key=" + REDACTED + "&token=" + REDACTED in log
    assert "/v1/ws?api_key=" + REDACTED in log
    assert re.search(r"Authorization: " + re.escape(REDACTED), log, re.IGNORECASE)
    assert "bearer." + REDACTED in log
    # ...and no secret, right or wrong, in any form.
    leaked = [secret for secret in SECRETS if secret in log]
    assert not leaked, f"secrets in the log: {leaked}"


def test_redaction_keeps_the_rest_of_the_line() -> None:
    line = '127.0.0.1:5 - "WebSocket /v1/ws?channel=live&api_key=k-123&x=1" [accepted]'
    assert redact(line) == (
        f'127.0.0.1:5 - "WebSocket /v1/ws?channel=live&api_key={REDACTED}&x=1" [accepted]'
    )
    assert redact("< Authorization: Basic dXNlcjpwYXNz") == f"< Authorization: {REDACTED}"
    assert redact("index-ticker.v1, bearer.k-123") == f"index-ticker.v1, bearer.{REDACTED}"
    assert redact("GET /v1/indices?since=2024-05-06&limit=5") == (
        "GET /v1/indices?since=2024-05-06&limit=5"
    )
    assert TOKEN not in redact(f"/v1/ticks?access_token={TOKEN}")
