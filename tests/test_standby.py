"""Two engines on one Redis: the lease holder publishes, the other stands by. Kill the leader with
SIGKILL: the standby takes over within two cadence steps, publishes the next grid instant with the
next sequence number, and the value continues without a jump — including ticks the dead leader
accepted into the durable stream but never published."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import httpx
from conftest import free_port, start_service

TOKEN = "standby-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start(port: int, redis_url: str, namespace: str) -> subprocess.Popen[bytes]:
    return start_service(
        port, "--redis-url", redis_url, "--namespace", namespace, "--feed", "none",
        "--cadence", "1", "--standby", "--ingest-stream", "--log-level", "warning", token=TOKEN,
    )  # fmt: skip


def get(port: int, path: str) -> Any:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).json()


def wait(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"condition not met; last {last!r}")


def leader_of(ports: list[int]) -> int:
    def find() -> int | None:
        leaders = [p for p in ports if get(p, "/readyz")["engine"]["state"] == "running"]
        return leaders[0] if len(leaders) == 1 else None

    return int(wait(find))


def test_kill_9_of_the_leader_hands_over_to_the_standby(redis_url: str) -> None:
    ports = [free_port(), free_port()]
    processes = {port: start(port, redis_url, "standby-test") for port in ports}
    try:
        leader = leader_of(ports)
        standby = next(p for p in ports if p != leader)
        assert get(standby, "/readyz")["engine"]["state"] == "standby"
        # Ticks go into the durable stream through either process.
        posted = httpx.post(
            f"http://127.0.0.1:{standby}/v1/ticks",
            json=[{"secid": "SBER", "price": 260.0}],
            headers=AUTH,
        ).json()
        assert posted["accepted"] == 1 and posted["queued"] is True
        wait(
            lambda: (
                get(leader, "/v1/indices/IMOEX/constituents")["constituents"][0] is not None
                and {
                    c["secid"]: c["price"]
                    for c in get(leader, "/v1/indices/IMOEX/constituents")["constituents"]
                }["SBER"]
                == 260.0
            )
        )
        before = get(leader, "/v1/indices/IMOEX")
        # A tick accepted right before the crash, maybe never published by the dead leader.
        httpx.post(
            f"http://127.0.0.1:{leader}/v1/ticks",
            json=[{"secid": "GAZP", "price": 180.0}],
            headers=AUTH,
        )
        processes[leader].send_signal(signal.SIGKILL)
        processes[leader].wait(10)
        killed_at = time.monotonic()

        def taken_over() -> dict[str, Any] | None:
            body = get(standby, "/readyz")["engine"]
            return body if body["state"] == "running" else None

        wait(taken_over, timeout=10)
        after = wait(lambda: (b := get(standby, "/v1/indices/IMOEX"))["seq"] > before["seq"] and b)
        took = time.monotonic() - killed_at
        print(f"handover: next publication {took:.2f} s after the kill (cadence 1 s)")
        # How fast is measured by bench/ and reported in docs/reliability.md; here: it happens
        # (within the waits' bounds) with nothing lost or repeated.
        history = get(standby, "/v1/indices/IMOEX/history?limit=10000")["values"]
        seqs = [v["seq"] for v in history]
        assert seqs == list(range(seqs[0], seqs[-1] + 1))  # no gap, no repeat across the handover
        prices = {
            c["secid"]: c["price"]
            for c in get(standby, "/v1/indices/IMOEX/constituents")["constituents"]
        }
        assert prices["SBER"] == 260.0 and prices["GAZP"] == 180.0  # the stream was recovered
        # No jump: after the handover, the value follows from the same prices.
        assert after["previous_close"] == before["previous_close"]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(10)
