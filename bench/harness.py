"""What every benchmark needs: free loopback ports, a private redis-server, the service as a
subprocess, percentiles, and a table that prints as Markdown and goes into docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

START_TIMEOUT = 30.0  # seconds for the service to answer /healthz
TOKEN = "bench-ingest-token-" + "0" * 24


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free loopback port, no persistence; (process, url)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"redis-server on port {port} did not answer PING")


def start_service(
    directory: Path,
    *flags: str,
    settings: str = "",
    command: str = "serve",
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str = "service",
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`index-ticker <command>` as a subprocess on 127.0.0.1, waited for until /healthz answers;
    `settings` is the body of a TOML settings file passed with --config. (process, port, log)."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.toml"
    config.write_text('log_level = "warning"\n' + settings)
    argv = [sys.executable, "-m", "streaming.cli", command, "--host", "127.0.0.1",
            "--port", str(port), "--config", str(config), *flags]  # fmt: skip
    log_path = directory / f"{name}.log"
    environment = {**os.environ, "INDEX_TICKER_INGEST_TOKEN": TOKEN, **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environment)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port, log_path
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{name} did not answer /healthz:\n{log_path.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sleep_until(moment: float) -> None:
    """Sleep until a wall-clock moment (epoch seconds); at once if it has passed."""
    time.sleep(max(0.0, moment - time.time()))


def proc_rss_kib(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile_ms(seconds: Sequence[float] | np.ndarray[Any, Any], q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds (nan when empty)."""
    values = np.asarray(seconds, dtype=float)
    return float(np.percentile(values, q)) * 1000 if len(values) else float("nan")


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    return (
        f"{os.cpu_count()} cores {platform.machine()} {model}{memory}, Linux {platform.release()},"
        f" Python {platform.python_version()}, numpy {np.__version__}"
    )


@dataclass
class Table:
    """One benchmark's result: a Markdown table with what it measured and how to reproduce it."""

    title: str
    command: str  # how to reproduce just this table
    about: str  # what is measured, and what the baseline is
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # measured remarks printed under the table

    def add(self, *cells: object) -> None:
        self.rows.append([cell if isinstance(cell, str) else fmt(cell) for cell in cells])

    def markdown(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            f"`{self.command}` — {self.about}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def fmt(value: object) -> str:
    """Numbers for tables: thousands separators for big ones, 3 significant-ish decimals else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def ratio(value: float, baseline: float) -> str:
    """value / baseline as '12.3x'."""
    return f"{value / baseline:.2f}x" if baseline else "—"
