"""docker-compose.yml run as local processes: its Redis command, its engine and API services with
their own command and environment (only addresses and ports substituted, the cadence set by the
test), and nginx with deploy/nginx.conf. Everything a client does goes through the proxy: values,
the WebSocket feed, ticks; then the leading engine is killed, and then upgraded by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import pytest
import redis
import yaml
from conftest import free_port, redis_url_for
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

pytestmark = pytest.mark.system  # real servers, processes or sockets

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
TOKEN = "deployment-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# What the shell gives `docker compose up` in this test: the secret it requires, no simulated feed
# (the ticks the test posts are the only prices that move).
COMPOSE_VARIABLES = {"INDEX_TICKER_INGEST_TOKEN": TOKEN, "INDEX_TICKER_FEED": "none"}
# Set by the test, not by the compose file: a 1 s grid, and a lease long enough that a tick
# posted right after the leader's death certainly arrives while nobody leads.
TEST_SETTINGS = {"INDEX_TICKER_CADENCE": "1", "INDEX_TICKER_LEASE_SECONDS": "3"}
START_TIMEOUT = 30.0  # seconds for every process to answer (two cores, four Pythons at once)
CLIENT_ADDRESS = "127.0.0.2"  # a loopback address of its own, to tell the client from the proxy
SPOOFED_ADDRESS = "203.0.113.9"


# --- reading the compose file -------------------------------------------------------------------

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2) or "", match.group(3) or ""
        given = variables.get(name)
        missing = given is None or (operator.startswith(":") and given == "")
        if operator.endswith("?") and missing:
            raise AssertionError(f"compose requires {name}: {argument}")
        if operator.endswith("-") and missing:
            return argument
        return given or ""

    return VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list), interpolated."""
    raw = service.get("environment") or {}
    pairs = dict(item.split("=", 1) for item in raw) if isinstance(raw, list) else dict(raw.items())
    return {str(k): interpolate(str(v), COMPOSE_VARIABLES) for k, v in pairs.items()}


def services_running(compose: Mapping[str, Any], command: str) -> dict[str, dict[str, Any]]:
    """The index-ticker services whose command is `command` (engine, api), by name."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == command
    }


def substituted(environment: Mapping[str, str], addresses: Mapping[str, str]) -> dict[str, str]:
    """The service's environment with its addresses replaced (each must be there to replace)."""
    missing = sorted(set(addresses) - set(environment))
    assert not missing, f"the compose file does not set {missing}"
    clash = sorted(set(TEST_SETTINGS) & set(environment))
    assert not clash, f"the compose file sets {clash}, which the test sets"
    base = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_TICKER_")}
    return {**base, **environment, **addresses, **TEST_SETTINGS}


# --- the processes ------------------------------------------------------------------------------


@dataclass
class Process:
    """One process of the topology: its name, its ports and its output file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0  # the port it serves (API, proxy) or its operations port (engine)

    def tail(self) -> str:
        return f"--- {self.name} ---\n{self.log.read_text(errors='replace')[-3000:]}"


@dataclass
class Topology:
    """The running processes and how to reach them."""

    directory: Path
    redis_url: str
    engine_command: list[str]
    engine_environment: Mapping[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: Mapping[str, str], port: int) -> Process:
        log = self.directory / f"{name}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(argv, env=dict(env), stdout=sink, stderr=subprocess.STDOUT)
        process = Process(name, popen, log, port)
        self.processes.append(process)
        return process

    def start_engine(self, name: str) -> Process:
        port = free_port()
        env = {**self.engine_environment, "INDEX_TICKER_OPS_PORT": str(port)}
        return self.start(name, self.engine_command, env, port)

    def of(self, prefix: str) -> list[Process]:
        return [p for p in self.processes if p.name.startswith(prefix) and p.popen.poll() is None]

    def logs(self) -> str:
        return "\n".join(process.tail() for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in self.processes:
            try:
                process.popen.wait(15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(15)


def console_script() -> list[str]:
    """The image's ENTRYPOINT, `index-ticker`, as installed here."""
    found = shutil.which("index-ticker")
    return [found] if found else [sys.executable, "-m", "streaming.cli"]


def render_nginx(
    conf: str, upstreams: Mapping[str, tuple[str, int]], listen: int, tmp: Path
) -> str:
    """deploy/nginx.conf for a local nginx: upstream host:port and the listen port substituted,
    logs, temporary files and the worker user made to work in `tmp`."""

    def server(match: re.Match[str]) -> str:
        host, port = match.group(1), int(match.group(2))
        assert host in upstreams, f"nginx.conf proxies to {host}, not a service of compose"
        name_port, local = upstreams[host]
        assert port == int(name_port), (
            f"nginx.conf says {host}:{port}; the service listens on {name_port}"
        )
        return f"server 127.0.0.1:{local}"

    text = re.sub(r"\bserver\s+([A-Za-z0-9_.-]+):(\d+)", server, conf)
    assert set(re.findall(r"server 127\.0\.0\.1:(\d+)", text)) == {
        str(local) for _, local in upstreams.values()
    }, "nginx.conf does not proxy to every API and engine service"
    text, listens = re.subn(r"\blisten\s+\d+;", f"listen 127.0.0.1:{listen};", text)
    assert listens == 1
    text = re.sub(r"(?m)^user\s+\S+;", "user root;", text)
    text = text.replace("/dev/stderr", str(tmp / "nginx-error.log"))
    text = text.replace("/dev/stdout", str(tmp / "nginx-access.log"))
    temporary = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {\n", "http {\n" + temporary, 1)


@contextlib.contextmanager
def topology(tmp: Path) -> Iterator[tuple[Topology, Process, dict[str, Process]]]:
    """Redis, the engines and APIs of the compose file, and nginx: (topology, proxy, APIs)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    engines = services_running(compose, "engine")
    apis = services_running(compose, "api")
    assert len(engines) == 2 and len(apis) == 2, (sorted(engines), sorted(apis))
    redis_service = compose["services"]["redis"]
    assert "--appendonly" in redis_service["command"]  # the day's state survives a restart
    redis_port = free_port()
    redis_url = redis_url_for(redis_port)
    started = Topology(tmp, redis_url, [], {})
    upstreams: dict[str, tuple[str, int]] = {}  # service -> (port in compose, port here)
    try:
        started.start(
            "redis",
            [*redis_service["command"], "--port", str(redis_port), "--bind", "127.0.0.1",
             "--dir", str(tmp)],
            os.environ,
            redis_port,
        )  # fmt: skip
        for name, service in engines.items():
            environment = environment_of(service)
            assert urlparse(environment["INDEX_TICKER_REDIS_URL"]).hostname == "redis"
            addresses = {
                "INDEX_TICKER_REDIS_URL": redis_url,
                "INDEX_TICKER_OPS_HOST": "127.0.0.1",
                "INDEX_TICKER_OPS_PORT": "0",  # each engine gets a port of its own below
            }
            started.engine_command = [*console_script(), *service["command"]]
            started.engine_environment = substituted(environment, addresses)
            engine = started.start_engine(name)
            upstreams[name] = (environment["INDEX_TICKER_OPS_PORT"], engine.port)
        api_processes: dict[str, Process] = {}
        for name, service in apis.items():
            environment = environment_of(service)
            assert urlparse(environment["INDEX_TICKER_REDIS_URL"]).hostname == "redis"
            port = free_port()
            addresses = {
                "INDEX_TICKER_REDIS_URL": redis_url,
                "INDEX_TICKER_HOST": "127.0.0.1",
                "INDEX_TICKER_PORT": str(port),
            }
            env = substituted(environment, addresses)
            api_processes[name] = started.start(
                name, [*console_script(), *service["command"]], env, port
            )
            upstreams[name] = (environment["INDEX_TICKER_PORT"], port)
        proxy_service = compose["services"]["proxy"]
        mounts = [volume.split(":") for volume in proxy_service["volumes"]]
        conf_source = next(src for src, dst, *_ in mounts if dst == "/etc/nginx/nginx.conf")
        listen = free_port()
        published = proxy_service["ports"][0].rsplit(":", 1)[-1]
        conf = (ROOT / conf_source).read_text()
        assert re.search(rf"\blisten\s+{published};", conf), (
            "the proxy listens where compose publishes"
        )
        rendered = tmp / "nginx.conf"
        rendered.write_text(render_nginx(conf, upstreams, listen, tmp))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proxy = started.start(
            "proxy",
            [nginx, "-p", str(tmp), "-c", str(rendered), "-g",
             f"daemon off; pid {tmp / 'nginx.pid'};"],
            os.environ,
            listen,
        )  # fmt: skip
        yield started, proxy, api_processes
    finally:
        started.stop()


# --- waiting and asking -------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, world: Topology, timeout: float = 15.0
) -> T:
    """Poll `check` until it returns something other than None; fail with every log after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = await check()
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as error:
            result, last = None, error
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})\n{world.logs()}")


async def get_json(client: httpx.AsyncClient, port: int, path: str) -> Any:
    response = await client.get(f"http://127.0.0.1:{port}{path}")
    return response.json()


async def readiness(client: httpx.AsyncClient, engine: Process) -> dict[str, Any] | None:
    """An engine's /readyz body (200 or 503), None while it does not answer."""
    try:
        response = await client.get(f"http://127.0.0.1:{engine.port}/readyz")
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body


async def leader_and_standbys(
    client: httpx.AsyncClient, world: Topology
) -> tuple[Process, list[Process]] | None:
    """The one leading engine and the standing-by ones, once every engine says which it is."""
    engines = world.of("engine")
    roles = [await readiness(client, engine) for engine in engines]
    if any(role is None or role["status"] != "ready" for role in roles):
        return None
    leaders = [e for e, r in zip(engines, roles, strict=True) if r and r["role"] == "leader"]
    standbys = [e for e, r in zip(engines, roles, strict=True) if r and r["role"] == "standby"]
    if len(leaders) != 1 or len(standbys) != len(engines) - 1:
        return None
    return leaders[0], standbys


async def constituent_price(client: httpx.AsyncClient, port: int, secid: str) -> float:
    lines = (await get_json(client, port, "/v1/indices/IMOEX/constituents"))["constituents"]
    price: float = {line["secid"]: line["price"] for line in lines}[secid]
    return price


@dataclass
class Watcher:
    """A feed subscriber through the proxy: every IMOEX update it was pushed, in order."""

    connection: ClientConnection
    updates: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)

    async def run(self) -> None:
        async for text in self.connection:
            message = json.loads(text)
            if message.get("type") == "update" and message.get("code") == "IMOEX":
                self.updates.append(message)
            elif message.get("type") not in ("heartbeat", "live", "pong"):
                self.others.append(message)

    def seqs(self) -> list[int]:
        return [update["seq"] for update in self.updates]

    async def seen_beyond(self, seq: int) -> list[dict[str, Any]] | None:
        return self.updates if self.updates and self.updates[-1]["seq"] > seq else None


@contextlib.asynccontextmanager
async def subscribed(port: int) -> AsyncIterator[Watcher]:
    """A WebSocket client through the proxy, subscribed to IMOEX, collecting in the background."""
    url = f"ws://127.0.0.1:{port}/v1/ws"
    async with connect(url, subprotocols=[Subprotocol("index-ticker.v1")], proxy=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "indices": ["IMOEX"]}))
        watcher = Watcher(ws)
        task = asyncio.create_task(watcher.run())
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def lease_holder(redis_url: str, namespace: str = "index-ticker") -> str | None:
    """Who holds the leader lease in Redis now (`host:pid:run:fence`), None when nobody does."""
    client = redis.Redis.from_url(redis_url)
    try:
        held = client.get(f"{namespace}:leader")
    finally:
        client.close()
    return None if held is None else held.decode()


def is_contiguous(seqs: list[int]) -> bool:
    return bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# --- the test -----------------------------------------------------------------------------------


async def test_the_compose_topology_serves_through_the_proxy_and_survives_its_engines(
    tmp_path: Path,
) -> None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is not installed: .ci/test installs it (Debian package nginx)")
    with topology(tmp_path) as (world, proxy, apis):
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            via_proxy = proxy.port

            async def answers(process: Process, path: str) -> bool | None:
                try:
                    response = await client.get(f"http://127.0.0.1:{process.port}{path}")
                except httpx.TransportError:
                    return None
                return True if response.status_code == 200 else None

            for process in (*apis.values(), proxy):
                await eventually(
                    lambda p=process: answers(p, "/readyz" if p is not proxy else "/healthz"),
                    f"{process.name} answers",
                    world,
                    START_TIMEOUT,
                )
            leader, standbys = await eventually(
                lambda: leader_and_standbys(client, world), "one engine leads", world, START_TIMEOUT
            )
            assert len(standbys) == 1
            # No public API on an engine's operations port.
            assert (
                await client.get(f"http://127.0.0.1:{leader.port}/v1/indices")
            ).status_code == 404

            # Values are published, and both API processes serve the same ones.
            async def same_values() -> Any:
                first, second = [
                    await get_json(client, a.port, "/v1/indices") for a in apis.values()
                ]
                mine = await get_json(client, via_proxy, "/v1/indices")
                return first if first == second == mine and first else None

            await eventually(same_values, "the same values from both APIs and the proxy", world)

            async with subscribed(via_proxy) as watcher, subscribed(via_proxy) as second:
                # least_conn: the two feed connections went to the two API processes.
                async def one_each() -> bool | None:
                    counts = [
                        (await get_json(client, api.port, "/readyz"))["broadcast"]["connections"]
                        for api in apis.values()
                    ]
                    return True if counts == [1, 1] else None

                await eventually(one_each, "one feed connection on each API", world)
                first = await eventually(
                    lambda: watcher.seen_beyond(0), "updates pushed through the proxy", world
                )
                await eventually(lambda: second.seen_beyond(0), "updates on the other API", world)

                # A tick posted through the proxy moves the index.
                before = first[-1]
                price = round(await constituent_price(client, via_proxy, "SBER") * 1.05, 2)
                posted = await client.post(
                    f"http://127.0.0.1:{via_proxy}/v1/ticks",
                    json=[{"secid": "SBER", "price": price}],
                    headers=AUTH,
                )
                assert posted.status_code == 200, posted.text
                assert posted.json()["accepted"] == 1

                async def moved() -> dict[str, Any] | None:
                    latest = watcher.updates[-1]
                    return latest if latest["value"] > before["value"] else None

                await eventually(moved, "the posted tick moves IMOEX", world)
                assert await constituent_price(client, via_proxy, "SBER") == price

                # An FX rate posted through the proxy reaches the leading engine (the standby
                # refuses it, the proxy passes it on) and moves RTSI at its next publication.
                rtsi = (await get_json(client, via_proxy, "/v1/indices/RTSI"))["precise_value"]
                fx = await client.post(
                    f"http://127.0.0.1:{via_proxy}/v1/fx", json={"rate": 120.0}, headers=AUTH
                )
                assert fx.status_code == 200, fx.text

                async def fx_in_force() -> bool | None:
                    # From whichever engine answers: the leader's own, or the state it saved.
                    view = await get_json(client, via_proxy, "/v1/fx")
                    return True if view["status"]["rate"] == 120.0 else None

                await eventually(fx_in_force, "the posted rate in force", world)
                # Through the standby directly: refused, nothing applied.
                refused = await client.post(
                    f"http://127.0.0.1:{standbys[0].port}/v1/fx", json={"rate": 1.0}, headers=AUTH
                )
                assert refused.status_code == 503 and "stands by" in refused.text

                async def rtsi_moved() -> bool | None:
                    latest = await get_json(client, via_proxy, "/v1/indices/RTSI")
                    return True if latest["fx_rate"] == 120.0 else None

                await eventually(rtsi_moved, "RTSI at the posted rate", world)
                now = (await get_json(client, via_proxy, "/v1/indices/RTSI"))["precise_value"]
                assert now != rtsi

                # The client's own address reaches the API; one it makes up does not.
                local = httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS)
                async with httpx.AsyncClient(transport=local, trust_env=False) as from_elsewhere:
                    for _ in range(4):  # both APIs, whichever the proxy picks
                        answer = await from_elsewhere.get(
                            f"http://127.0.0.1:{via_proxy}/v1/indices/IMOEX",
                            headers={"X-Forwarded-For": SPOOFED_ADDRESS},
                        )
                        assert answer.status_code == 200
                api_logs = "".join(api.log.read_text(errors="replace") for api in apis.values())
                assert CLIENT_ADDRESS in api_logs and SPOOFED_ADDRESS not in api_logs

                # kill -9 of the leader: a tick posted while nobody leads waits in the stream.
                leader.popen.send_signal(signal.SIGKILL)
                leader.popen.wait(10)
                gazp = round(await constituent_price(client, via_proxy, "GAZP") * 0.97, 2)
                posted = await client.post(
                    f"http://127.0.0.1:{via_proxy}/v1/ticks",
                    json=[{"secid": "GAZP", "price": gazp}],
                    headers=AUTH,
                )
                assert posted.status_code == 200 and posted.json()["queued"] is True
                standby = standbys[0]
                assert await readiness(client, leader) is None
                assert (await readiness(client, standby) or {}).get("role") == "standby"
                at_kill = watcher.updates[-1]["seq"]
                new_leader, _ = await eventually(
                    lambda: leader_and_standbys(client, world), "the standby takes over", world
                )
                assert new_leader is standby
                await eventually(
                    lambda: watcher.seen_beyond(at_kill + 2), "publications go on", world
                )

                async def gazp_applied() -> bool | None:
                    return (
                        True if await constituent_price(client, via_proxy, "GAZP") == gazp else None
                    )

                await eventually(gazp_applied, "the tick posted while nobody led is applied", world)
                seqs = watcher.seqs()
                assert is_contiguous(seqs), f"gap or repeat across the kill: {seqs}"

                # Rolling upgrade: a new engine stands by, SIGTERM to the leader hands over at once.
                upgraded = world.start_engine("engine-upgraded")

                async def new_one_stands_by() -> bool | None:
                    body = await readiness(client, upgraded)
                    return True if body and body["role"] == "standby" else None

                await eventually(
                    new_one_stands_by, "the new engine stands by", world, START_TIMEOUT
                )
                latest = watcher.updates[-1]["seq"]
                await eventually(lambda: watcher.seen_beyond(latest), "a publication", world)
                before_upgrade = len(watcher.updates)
                standby.popen.send_signal(signal.SIGTERM)
                # uvicorn shuts down cleanly, then raises the signal again: that is the status.
                assert await asyncio.to_thread(standby.popen.wait, 15) in (0, -signal.SIGTERM)
                holder = lease_holder(world.redis_url)
                # Given up on the way out, not left to expire: nobody, or already the new engine.
                assert holder is None or not holder.startswith(
                    f"{socket.gethostname()}:{standby.popen.pid}:"
                ), holder
                upgraded_leads, _ = await eventually(
                    lambda: leader_and_standbys(client, world), "the new engine leads", world
                )
                assert upgraded_leads is upgraded
                last_before = watcher.updates[before_upgrade - 1]
                after = await eventually(
                    lambda: watcher.seen_beyond(last_before["seq"] + 1), "it publishes", world
                )
                seqs = watcher.seqs()
                assert is_contiguous(seqs), f"gap or repeat across the upgrade: {seqs}"
                # The day's state carried over: same value (no tick since), same previous close.
                following = after[before_upgrade]
                assert following["seq"] == last_before["seq"] + 1
                assert following["value"] == last_before["value"]
                assert following["previous_close"] == last_before["previous_close"]
                # Nothing but the subscription's answers besides updates: no error, no resync.
                assert {m["type"] for m in watcher.others} <= {"snapshot", "subscribed"}
                print(
                    f"feed through the proxy: seq {seqs[0]}..{seqs[-1]} contiguous across a kill -9 "
                    f"(at seq {at_kill}) and a rolling upgrade (after seq {last_before['seq']})"
                )
